"""Run under torchrun by test_pacing.py: ``train_with_budget`` on every rank, with a calibration that
differs per rank (rank 1's machine model is ten times slower, so ranks planning for themselves would
plan different runs) and a pacer whose deadline has already passed (rank 0 ends the run at the first
validated epoch it may act on, and every rank must follow)."""

from __future__ import annotations

import logging
import os
import sys
import time

from radseg.pipeline.plan import make_plan
from radseg.pipeline.plan.machine import flops_step_timer
from radseg.pipeline.train import budget_run
from radseg.pipeline.train.pacing import BudgetPacer


class PassedDeadline(BudgetPacer):
    """A pacer whose deadline is the moment it is made."""

    def __init__(self, deadline: float, val_pass_s: float, planned_epochs: int) -> None:
        super().__init__(time.perf_counter(), val_pass_s, planned_epochs)


def main(data: str, output: str, *overrides: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rank = int(os.environ["RANK"])
    rate = 50.0 if rank == 0 else 5.0
    make_plan.measured_step_timer = lambda device, data=None: flops_step_timer(rate)
    budget_run.BudgetPacer = PassedDeadline
    result = budget_run.train_with_budget(data, output, "30m", device="cpu", overrides=overrides, progress=False)
    print(f"rank {rank} trained {result.epochs} epochs", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
