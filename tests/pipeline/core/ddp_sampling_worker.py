"""Run under torchrun by test_ddp_sampling.py: each rank draws training cases the way fit() does
(its weighted shard, one seeded loader per epoch, the same iterations on every rank) and the
counts per case are summed over the ranks and written as JSON by rank 0."""

from __future__ import annotations

import json
import sys

import torch
from monai.data import Dataset

from radseg.pipeline.core.distributed import all_reduce_sum, cleanup_distributed, init_distributed
from radseg.pipeline.data.cache import build_loader
from radseg.pipeline.data.shards import weighted_shard


def main(num_cases: int, epochs: int, iterations: int, out: str) -> None:
    info = init_distributed("cpu")
    cases = [{"case_id": index} for index in range(num_cases)]
    shard, weights = weighted_shard(cases, info.rank, info.world_size)
    counts = torch.zeros(num_cases, dtype=torch.float64)
    for epoch in range(epochs):
        loader = build_loader(Dataset(shard), 1, 0, True, seed=1000 * epoch + info.rank, weights=weights)
        drawn = 0
        while drawn < iterations:  # like cycle_batches: passes over the loader until the epoch is done
            for batch in loader:
                counts[int(batch["case_id"][0])] += 1
                drawn += 1
                if drawn == iterations:
                    break
    total = all_reduce_sum(counts, info)
    if info.is_main:
        with open(out, "w") as handle:
            json.dump({"counts": total.tolist(), "world_size": info.world_size}, handle)
    cleanup_distributed(info)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
