"""Wall-clock budgets: parsing ``15m`` / ``2h``, and fitting training and validation inside one.

The budget covers the whole ``radseg train --budget`` command: planning, check-data, fingerprint,
caching, training steps, epoch ends (loader start, checkpoints) and validation passes. The planner
turns it into a fixed number of iterations from measured step times, so a resumed run repeats the
same schedule exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from radseg.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: a run needs at least this many optimiser steps to be worth starting
MIN_STEPS = 50
#: share of the budget validation passes may take (one pass at the end always happens)
VAL_SHARE = 0.08
#: the share with ``--fold all``: its validation cases are also training cases, so their Dice shows progress
#: but cannot choose a better checkpoint (a quarter of the share: a pass midway and the last for a 15-minute
#: CPU budget, only the last when a pass is costly, more in a long budget)
VAL_SHARE_FOLD_ALL = 0.02
#: seconds per epoch end beyond the steps: last.pt, the metrics log (workers persist); measured 0.15-0.3 s
#: on 2 CPU cores with a 4-level MONAI UNet
EPOCH_OVERHEAD_S = {"cpu": 0.5, "cuda": 1.5}
#: fixed start-up of a training run (imports, network build, first worker start)
START_OVERHEAD_S = 8.0


def parse_budget(text: str | float | int) -> float:
    """Seconds in a budget such as ``15m``, ``2h``, ``1h30m``, ``90s`` or a bare number of minutes.

    Raises:
        ConfigError: text that is not a positive duration.
    """
    if isinstance(text, (int, float)):
        seconds = float(text) * 60
    else:
        cleaned = str(text).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"((\d+(\.\d+)?)[hms])+", cleaned)
        if re.fullmatch(r"\d+(\.\d+)?", cleaned):
            seconds = float(cleaned) * 60
        elif parts:
            seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned))
        else:
            seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"--budget must be a positive duration like 15m, 2h, 1h30m or 90s, not {text!r}")
    return seconds


def format_seconds(seconds: float) -> str:
    """``12m 30s`` style."""
    seconds = max(int(round(seconds)), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def sliding_windows(shape: Sequence[float], roi_size: Sequence[int], overlap: float) -> int:
    """Windows MONAI's sliding window takes over a volume of ``shape`` voxels."""
    count = 1
    for size, roi in zip(shape, roi_size):
        step = max(int(roi * (1 - overlap)), 1)
        count *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return count


@dataclass(frozen=True)
class Schedule:
    """Steps, epochs and validation passes that fit a budget, with the time of each part."""

    iterations_per_epoch: int
    max_epochs: int
    val_interval: int
    validations: int
    step_seconds: float
    train_seconds: float
    val_seconds: float
    overhead_seconds: float

    @property
    def steps(self) -> int:
        """Optimiser steps of the whole run."""
        return self.iterations_per_epoch * self.max_epochs

    @property
    def total_seconds(self) -> float:
        """Predicted wall clock of the run, overheads included."""
        return self.train_seconds + self.val_seconds + self.overhead_seconds


def fit_schedule(budget_s: float, fixed_s: float, step_s: float, val_pass_s: float, device: str, *,
                 fold_all: bool = False) -> Schedule:
    """The longest schedule whose steps, epoch ends and validations end inside the budget.

    Args:
        budget_s: the whole budget (seconds).
        fixed_s: what is spent whatever the schedule: planning so far, check-data, the run's fingerprint
            (unless it takes the plan's), caching.
        step_s: seconds per optimiser step (measured, data loading included).
        val_pass_s: seconds per validation pass over the validation cases.
        device: "cpu" or "cuda" (epoch-end overhead).
        fold_all: the run trains on every case, so validation gets :data:`VAL_SHARE_FOLD_ALL` of the
            budget instead of :data:`VAL_SHARE` (always at least one pass, at the end).

    Raises:
        ConfigError: the budget cannot hold :data:`MIN_STEPS` steps and one validation pass; the
            message gives the minimum budget.
    """
    epoch_s = EPOCH_OVERHEAD_S.get(device, 2.0)
    fixed = fixed_s + START_OVERHEAD_S
    minimum = fixed + val_pass_s + MIN_STEPS * step_s + epoch_s
    if budget_s < minimum:
        raise ConfigError(
            f"a budget of {format_seconds(budget_s)} is too small for this dataset on this machine: preparing the "
            f"data takes about {format_seconds(fixed)}, one validation pass {format_seconds(val_pass_s)} and "
            f"{MIN_STEPS} training steps {format_seconds(MIN_STEPS * step_s)}; the minimum is about "
            f"{format_seconds(minimum)}; pass a larger --budget (e.g. --budget {math.ceil(minimum / 60) + 1}m)")
    share = VAL_SHARE_FOLD_ALL if fold_all else VAL_SHARE
    validations = max(1, int(share * budget_s // max(val_pass_s, 1e-6)))
    rough_steps = (budget_s - fixed - validations * val_pass_s) / step_s
    # at most 40 epochs of at least 25 steps; on held-out cases at least every 10th epoch validates, so
    # best.pt is chosen among several; a --fold all run keeps its epochs short all the same (pacing's unit)
    most = int(max(1, min(40, rough_steps // 25, 40 if fold_all else validations * 10)))
    # what is left after data, validations and epoch ends is cut into equal epochs of whole steps; of the
    # epoch counts near the largest, the one that wastes the fewest steps to rounding
    candidates = [_cut(epochs, validations, budget_s - fixed, step_s, val_pass_s, epoch_s)
                  for epochs in range(max(1, most - 8), most + 1)]
    per_epoch, epochs, interval, done = max(candidates, key=lambda c: (c[0] * c[1], c[1]))
    return Schedule(per_epoch, epochs, interval, done, step_s, per_epoch * epochs * step_s, done * val_pass_s,
                    fixed + epochs * epoch_s)


def _cut(epochs: int, validations: int, room_s: float, step_s: float, val_pass_s: float,
         epoch_s: float) -> tuple[int, int, int, int]:
    """Steps per epoch, epochs, validation interval and passes when ``epochs`` share ``room_s`` seconds."""
    interval = max(1, math.ceil(epochs / min(validations, epochs)))
    done = validation_passes(0, epochs, interval)
    spare = room_s - done * val_pass_s - epochs * epoch_s
    return max(int(spare // step_s) // epochs, 1), epochs, interval, done


def validation_passes(done: int, epochs: int, interval: int) -> int:
    """Validation passes in epochs ``done + 1 .. epochs``: every ``interval``-th and the last, as
    training validates."""
    if epochs <= done:
        return 0
    passes = epochs // interval - done // interval
    return passes + (0 if epochs % interval == 0 else 1)
