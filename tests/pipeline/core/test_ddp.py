"""Distributed training: two gloo processes on CPU under torchrun; helpers in a single process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from radseg.pipeline.core.checkpoint import load_checkpoint
from radseg.pipeline.core.distributed import DistInfo, all_reduce_sum, init_distributed, split_for_rank
from conftest import TINY_TRAIN

TINY = [*TINY_TRAIN, "train.max_epochs=2"]


def test_validation_cases_are_split_disjointly_without_padding():
    cases = list(range(7))
    shares = [split_for_rank(cases, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == cases
    assert [len(s) for s in shares] == [3, 2, 2]


def test_single_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert info.world_size == 1 and info.is_main and not info.distributed
    value = torch.tensor([1.5])
    assert all_reduce_sum(value, info).item() == 1.5


def _torchrun() -> list[str]:
    binary = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [binary] if binary else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_validate_once(phantom_dataset, tmp_path):
    run = tmp_path / "run"
    sets = [arg for item in TINY for arg in ("--set", item)]
    command = _torchrun() + ["--standalone", "--nproc-per-node", "2", "-m", "radseg", "train",
                             "--data", str(phantom_dataset), "--output", str(run), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "gloo process group" in done.stderr
    # 2 training and 2 validation cases: each rank caches one of each, never both
    assert "RAM cache: 1 of 1 cases" in done.stderr and "2 of 2 cases" not in done.stderr
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # rank 0 alone wrote
    val_cases = [row.split(",")[header.split(",").index("val_cases")] for row in rows]
    assert val_cases == ["2", "2"]  # every validation case exactly once across the ranks
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and not any(k.startswith("module.") for k in last["model"])
    assert load_checkpoint(run / "best.pt")["label_names"][1] == "liver"


def test_run_on_main_in_one_process_returns_or_raises():
    from radseg.errors import DataError
    from radseg.pipeline.core.distributed import run_on_main

    info = DistInfo(rank=0, world_size=1)
    assert run_on_main(lambda: 41 + 1, info) == 42
    with pytest.raises(DataError, match="bad case"):
        run_on_main(lambda: (_ for _ in ()).throw(DataError("bad case")), info)


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_rank_instead_of_hanging(phantom_dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(phantom_dataset, broken)
    label = sorted((broken / "labelsTr").iterdir())[0]
    label.write_bytes(label.read_bytes()[:100])  # truncated: check-data on rank 0 fails
    sets = [arg for item in TINY for arg in ("--set", item)]
    command = _torchrun() + ["--standalone", "--nproc-per-node", "2", "-m", "radseg", "train",
                             "--data", str(broken), "--output", str(tmp_path / "run"), *sets]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert "fails check-data" in done.stderr and "rank 0 failed, so rank 1 stops too" in done.stderr
    assert not (tmp_path / "run").exists()
