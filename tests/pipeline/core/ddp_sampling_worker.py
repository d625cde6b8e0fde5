"""Run under torchrun by test_ddp_sampling.py: each rank draws training cases the way fit() does
(its weighted shard, one seeded stream for the run, the same iterations on every rank) and the
counts per case are summed over the ranks and written as JSON by rank 0."""

from __future__ import annotations

import itertools
import json
import sys

import torch
from monai.data import Dataset

from radseg.pipeline.core.distributed import all_reduce_sum, cleanup_distributed, init_distributed
from radseg.pipeline.data.stream import training_stream
from radseg.pipeline.data.shards import weighted_shard


def main(num_cases: int, epochs: int, iterations: int, out: str) -> None:
    info = init_distributed("cpu")
    cases = [{"case_id": index} for index in range(num_cases)]
    shard, weights = weighted_shard(cases, info.rank, info.world_size)
    counts = torch.zeros(num_cases, dtype=torch.float64)
    stream = training_stream(Dataset(shard), 1, 0, seed=0, rank=info.rank, weights=weights)
    for batch in itertools.islice(stream, epochs * iterations):
        counts[int(batch["case_id"][0])] += 1
    total = all_reduce_sum(counts, info)
    if info.is_main:
        with open(out, "w") as handle:
            json.dump({"counts": total.tolist(), "world_size": info.world_size}, handle)
    cleanup_distributed(info)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
