"""Budget pacing: the epoch count follows the pace measured in the run, and the run stays resumable."""

from __future__ import annotations

import os
import re
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from radseg.configs.loader import load_config
from radseg.pipeline.core.checkpoint import load_checkpoint
from radseg.pipeline.train.fit import fit
from radseg.pipeline.plan.budget import validation_passes
from radseg.pipeline.train.pacing import BudgetPacer
from conftest import TINY_TRAIN


def _pacer(deadline: float, epochs: int, val_pass_s: float = 10.0) -> BudgetPacer:
    pacer = BudgetPacer(deadline=deadline, val_pass_s=val_pass_s, planned_epochs=epochs)
    pacer.started = 0.0
    return pacer


def _run(pacer: BudgetPacer, epochs: int, epoch_s: float, val_s: float, interval: int = 1,
         first_extra: float = 5.0, jitter=lambda: 1.0) -> tuple[int, float, list[int]]:
    """Simulate a run whose epochs take ``epoch_s`` (+ ``val_s`` when they validate), each times
    ``jitter()``: the epochs it ends with, its end time, and the count after every epoch."""
    now, done, counts = 0.0, 0, []
    while done < epochs:
        done += 1
        validated = done % interval == 0 or done == epochs
        now += (epoch_s + (val_s if validated else 0.0)) * jitter() + (first_extra if done == 1 else 0.0)
        row = {"epoch": done, **({"val_time": val_s, "mean_dice": 0.5} if validated else {})}
        epochs = pacer.epoch_done(row, done, epochs, interval, now=now)
        counts.append(epochs)
    return epochs, now, counts


def test_validation_passes_left_count_every_interval_and_the_last():
    assert validation_passes(0, 10, 1) == 10
    assert validation_passes(0, 10, 3) == 4  # 3, 6, 9 and the last
    assert validation_passes(4, 9, 2) == 3  # 6, 8 and the last
    assert validation_passes(6, 6, 2) == 0


def test_a_slower_machine_than_planned_ends_at_the_budget():
    # planned: 30 epochs of 25 s + a 10 s validation every 3rd epoch = 850 s of a 900 s budget;
    # the run turns out 25% slower per step
    pacer = _pacer(deadline=900.0, epochs=30)
    epochs, end, counts = _run(pacer, 30, epoch_s=31.25, val_s=12.5, interval=3)
    assert epochs < 30
    assert abs(end - 900.0) <= 0.05 * 900  # inside the budget's +-5%
    assert abs(end - 900.0) <= 31.25  # within one epoch
    assert counts[:6] == [30] * 6  # nothing changes before a quarter of the time (225 s) has passed


def test_noisy_epochs_move_the_count_rarely_and_end_inside_the_budget():
    # epochs of one CPU run vary by 8-15%; the machine is 15% slower than planned
    rng = random.Random(0)
    for _ in range(20):
        pacer = _pacer(deadline=900.0, epochs=30)
        _, end, counts = _run(pacer, 30, epoch_s=28.75, val_s=11.5, interval=3,
                              jitter=lambda: rng.uniform(0.88, 1.12))
        changes = sum(1 for a, b in zip(counts, counts[1:]) if a != b)
        assert changes <= 3, counts
        assert abs(end - 900.0) <= 0.05 * 900


def test_a_faster_machine_than_planned_stretches_the_run():
    pacer = _pacer(deadline=900.0, epochs=30)
    epochs, end, _ = _run(pacer, 30, epoch_s=20.0, val_s=8.0, interval=3)
    assert epochs > 30
    assert abs(end - 900.0) <= 20.0


def test_a_run_on_its_plan_is_left_alone():
    pacer = _pacer(deadline=900.0, epochs=30)
    epochs, end, counts = _run(pacer, 30, epoch_s=26.0, val_s=10.0, interval=3)
    assert set(counts) == {30}  # 30 x 26 + 10 x 10 + 5 = 885 s: within a fraction of an epoch
    assert abs(end - 900.0) < 26.0


def test_the_stretch_is_bounded_and_the_run_never_ends_before_a_validation():
    pacer = _pacer(deadline=600.0, epochs=10)  # room for 23 epochs
    epochs, _, _ = _run(pacer, 10, epoch_s=20.0, val_s=5.0, interval=1)
    assert epochs == 20  # MAX_STRETCH x the planned 10 epochs
    late = _pacer(deadline=0.0, epochs=10)  # the deadline has already passed
    late.epoch_done({"epoch": 1}, 1, 10, 2, now=30.0)
    late.epoch_done({"epoch": 2, "val_time": 5.0, "mean_dice": 0.5}, 2, 10, 2, now=60.0)
    assert late.epoch_done({"epoch": 3}, 3, 10, 2, now=90.0) == 4  # epoch 3 did not validate: one more
    late = _pacer(deadline=0.0, epochs=10)
    late.epoch_done({"epoch": 1}, 1, 10, 2, now=30.0)
    late.epoch_done({"epoch": 2, "val_time": 5.0, "mean_dice": 0.5}, 2, 10, 2, now=60.0)
    late.epoch_done({"epoch": 3}, 3, 10, 2, now=90.0)
    assert late.epoch_done({"epoch": 4, "val_time": 5.0, "mean_dice": 0.5}, 4, 10, 2, now=120.0) == 4


@pytest.mark.slow
def test_fit_with_a_pacer_rewrites_the_config_and_resumes_as_an_ordinary_run(phantom_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = load_config("demo", [*TINY_TRAIN, "train.max_epochs=6"])
    # a deadline already passed: the pacer ends the run at the first validated epoch it may act on
    pacer = BudgetPacer(deadline=time.perf_counter(), val_pass_s=1.0, planned_epochs=6)
    result = fit(cfg, phantom_dataset, run, progress=False, pacer=pacer)
    assert result.epochs == 3  # the first epoch is not measured; two more are, then it acts
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_epochs"] == 3
    saved = load_checkpoint(run / "last.pt")
    assert saved["epoch"] == 3  # written before the change (max_epochs is a setting a resume may change)
    again = fit(None, phantom_dataset, run, resume=True, progress=False)  # the run's own config.yaml
    assert again.epochs == 3  # finished as written: nothing more to train


@pytest.mark.slow
def test_torchrun_budget_run_trains_rank_0s_plan_and_follows_its_pacing(phantom_dataset, tmp_path):
    run = tmp_path / "run"
    tiny = [s.replace("network.params.widths", "network.params.channels") for s in TINY_TRAIN
            if not s.startswith("train.iterations_per_epoch")]  # the plan's own schedule, so pacing stays on
    worker = Path(__file__).with_name("budget_ddp_worker.py")
    binary = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    command = ([binary] if binary else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc-per-node", "2", str(worker), str(phantom_dataset), str(run), *tiny]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    # rank 1's ten times slower calibration never planned anything: both ranks trained rank 0's plan
    assert done.stderr.count("radseg.pipeline.plan.make_plan: plan for") == 1, done.stderr[-4000:]
    assert "rank 1 of 2 trains rank 0's plan" in done.stderr
    # the two ranks print at once, so their lines may run together: find each rank's words, not lines
    assert sorted(re.findall(r"rank \d trained \d+ epochs", done.stdout)) == [
        "rank 0 trained 3 epochs", "rank 1 trained 3 epochs"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_epochs"] == 3
    assert (run / "plan.yaml").is_file()
