"""DDP sampling: every training case is drawn equally often across ranks, even with unequal shards."""

from __future__ import annotations

import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from radseg.errors import ConfigError
from radseg.pipeline.data.shards import weighted_shard
from test_ddp import _torchrun


@pytest.mark.parametrize("num_cases,world_size", [(5, 2), (7, 3), (4, 4), (10, 3), (3, 1)])
def test_weights_sum_to_one_per_rank_and_equal_per_case(num_cases, world_size):
    per_case = [Fraction(0)] * num_cases
    for rank in range(world_size):
        cases, weights = weighted_shard(list(range(num_cases)), rank, world_size)
        assert sum(weights) == pytest.approx(1.0 if world_size > 1 else num_cases)
        for case, weight in zip(cases, weights):
            per_case[case] += Fraction(weight).limit_denominator(1000)
    assert len(set(per_case)) == 1, per_case
    with pytest.raises(ConfigError, match="fewer processes"):
        weighted_shard([1], 0, 2)


@pytest.mark.slow
def test_torchrun_two_ranks_draw_five_cases_equally(tmp_path):
    out = tmp_path / "counts.json"
    worker = Path(__file__).with_name("ddp_sampling_worker.py")
    command = _torchrun() + ["--standalone", "--nproc-per-node", "2", str(worker), "5", "200", "5", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    counts = result["counts"]
    assert result["world_size"] == 2 and sum(counts) == 2 * 200 * 5
    shares = [c / sum(counts) for c in counts]
    # 2000 draws: one standard deviation of a share is 0.009; unweighted shards give 1/6 and 1/4
    assert all(abs(share - 0.2) < 0.03 for share in shares), shares
