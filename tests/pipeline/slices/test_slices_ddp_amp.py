"""The slice branch on the 3D branch's engine: two gloo ranks under torchrun, and bf16 autocast on CPU."""

from __future__ import annotations

import csv
import math
import os
import subprocess

import pytest
import torch

from radseg.configs import load_config
from radseg.pipeline.core.checkpoint import BEST, LAST, load_checkpoint

from tests.pipeline.core.test_ddp import _torchrun
from tests.pipeline.slices.test_slices_run import TINY_SLICES

pytestmark = pytest.mark.slow


def test_torchrun_two_gloo_ranks_train_slices_with_one_log_and_plain_checkpoints(phantom_dataset, tmp_path):
    run = tmp_path / "run"
    tiny = [*TINY_SLICES, "data.num_folds=2", "train.max_epochs=2", "train.iterations_per_epoch=4",
            "train.batch_size=4"]
    sets = [arg for item in tiny for arg in ("--set", item)]
    command = _torchrun() + ["--standalone", "--nproc-per-node", "2", "-m", "radseg", "slices", "train",
                             "--data", str(phantom_dataset), "--output", str(run), *sets]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "gloo process group" in done.stderr
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # rank 0 alone wrote the log
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    last = load_checkpoint(run / LAST)
    assert last["epoch"] == 2 and not any(k.startswith("module.") for k in last["model"])
    assert 0.0 < load_checkpoint(run / BEST)["threshold"] < 1.0


def test_bf16_autocast_on_cpu_trains_slices_and_keeps_the_weights_float32(phantom_dataset, tmp_path):
    from radseg.pipeline.slices.fit import fit_slices

    cfg = load_config("slices", [*TINY_SLICES, "data.num_folds=2", "train.max_epochs=2",
                                 "train.iterations_per_epoch=4", "train.batch_size=4", "train.amp=bf16"])
    fit_slices(cfg, phantom_dataset, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    saved = load_checkpoint(tmp_path / "run" / LAST)
    assert all(t.dtype == torch.float32 for t in saved["model"].values() if t.is_floating_point())
