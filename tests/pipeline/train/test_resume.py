"""Kill training with SIGKILL at a random moment, resume, and end with the uninterrupted weights."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from radseg.pipeline.core.checkpoint import load_checkpoint
from conftest import TINY_TRAIN

# one loader worker, as real runs have: the run-long stream must give it the same batches after a resume
TINY = [*TINY_TRAIN, "train.deterministic=true", "cache.num_workers=1"]
EPOCHS = 6


def _command(data: Path, run: Path, *extra: str) -> list[str]:
    sets = [arg for item in TINY for arg in ("--set", item)]
    return [sys.executable, "-m", "radseg", "train", "--data", str(data), "--output", str(run), *sets, *extra]


def _env() -> dict:
    # one thread: float reductions in the same order in every process
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(data: Path, run: Path, *extra: str) -> None:
    done = subprocess.run(_command(data, run, *extra), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _saved_epoch(run: Path) -> int:
    try:
        return load_checkpoint(run / "last.pt")["epoch"]
    except Exception:  # not written yet (last.pt appears atomically, but may not exist)
        return 0


def _kill_during_run(data: Path, run: Path, after_epoch: int, delay: float) -> int:
    """Start a run, SIGKILL it ``delay`` s after ``after_epoch`` epochs are saved; the epochs it had saved.

    The kill lands at a random moment of a later epoch (mid-step, mid-validation or mid-save), with
    at least two epochs still to run, so it never races the end of training.
    """
    process = subprocess.Popen(
        _command(data, run, "--set", f"train.max_epochs={EPOCHS}"), env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while _saved_epoch(run) < after_epoch:
        assert process.poll() is None, "training exited before reaching the kill point"
        assert time.monotonic() < deadline, f"epoch {after_epoch} not saved after 300 s"
        time.sleep(0.02)
    time.sleep(delay)
    assert process.poll() is None, "training finished before it could be killed; lower the delay"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return _saved_epoch(run)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(phantom_dataset, tmp_path):
    reference = tmp_path / "reference"
    _train(phantom_dataset, reference, "--set", f"train.max_epochs={EPOCHS}")

    killed = tmp_path / "killed"
    chance = random.Random()
    after_epoch, delay = chance.randint(1, EPOCHS - 3), chance.uniform(0.0, 0.3)
    saved_epochs = _kill_during_run(phantom_dataset, killed, after_epoch, delay)
    assert after_epoch <= saved_epochs < EPOCHS, f"killed {delay:.2f} s after epoch {after_epoch}: {saved_epochs} saved"
    _train(phantom_dataset, killed, "--resume", "--set", f"train.max_epochs={EPOCHS}")

    expected, got = load_checkpoint(reference / "last.pt"), load_checkpoint(killed / "last.pt")
    assert got["epoch"] == expected["epoch"] == EPOCHS
    assert got["iteration"] == expected["iteration"] == EPOCHS * 2
    assert expected["model"].keys() == got["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), f"{name} differs after a kill {delay:.2f} s after epoch {after_epoch} and resume"
    for a, b in zip(expected["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (killed / "metrics.csv").read_text().splitlines()
    assert len(rows) == EPOCHS + 1  # header + one row per epoch, none duplicated by the resume
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, EPOCHS + 1)]

    # a finished run is extended by resuming with more epochs
    _train(phantom_dataset, killed, "--resume", "--set", f"train.max_epochs={EPOCHS + 1}")
    extended = load_checkpoint(killed / "last.pt")
    assert extended["epoch"] == EPOCHS + 1
    assert extended["scheduler"]["iteration"] == (EPOCHS + 1) * 2
