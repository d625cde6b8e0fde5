"""Keeping a ``train --budget`` run on its wall clock.

The plan turns the budget into a number of epochs from a calibration of a few seconds. A machine's
speed drifts over minutes (whole CPU runs measured at 1.00-1.26x the calibrated step), so a
schedule fixed from the calibration alone ends up to a quarter early or late. Once a quarter of the
training time has passed, the pacer projects the end of the run at every epoch end, from the epochs
and validation passes it has just measured; when another epoch count would end clearly closer to
the deadline, ``train.max_epochs`` becomes that count and the run's ``config.yaml`` is rewritten
before the next epoch starts. Nothing else changes: the epochs keep their steps and the validation
interval stays. The learning rate is a pure function of the iteration and ``max_epochs``, so its
decay stretches or shrinks from that point and still reaches its end with the last epoch. A killed
run resumes from its own ``config.yaml`` as an ordinary run (without pacing), exactly.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from radseg.pipeline.plan.budget import validation_passes

logger = logging.getLogger(__name__)

#: the pacer acts once this fraction of the training time (its start to the deadline) has passed
START_FRACTION = 0.25
#: epochs averaged for the projection (the most recent, the process's first excluded); epochs of one
#: CPU run vary by 8-15%, so fewer make the projection swing by more than an epoch
WINDOW = 8
#: a change is made only when the current count's projected end misses the deadline by more than
#: this share of the training time (and by more than an epoch; the nearest count is always within
#: half an epoch), so that timing noise does not move the count back and forth
HYSTERESIS = 0.03
#: never more than this multiple of the planned epochs, however fast the machine turns out
MAX_STRETCH = 2.0


@dataclass
class BudgetPacer:
    """Chooses ``max_epochs`` at each epoch end so the run ends near ``deadline``.

    Args:
        deadline: ``time.perf_counter()`` value by which the run should end.
        val_pass_s: the plan's estimate of one validation pass, used until one is measured.
        planned_epochs: the plan's epoch count (bounds how far the run may stretch).
    """

    deadline: float
    val_pass_s: float
    planned_epochs: int
    started: float = field(default_factory=time.perf_counter)
    _last_end: float | None = None
    _epoch_s: list[float] = field(default_factory=list)
    _val_s: list[float] = field(default_factory=list)

    def start(self) -> None:
        """Mark the start of training (the first epoch of this process begins now)."""
        self.started = time.perf_counter()
        self._last_end = None

    def epoch_done(self, row: dict, done: int, max_epochs: int, val_interval: int,
                   now: float | None = None) -> int:
        """Record the epoch that just ended and return the epoch count the run should have.

        Args:
            row: the epoch's metrics row (``val_time`` when it validated).
            done: epochs completed, this one included.
            max_epochs: the run's current ``train.max_epochs``.
            val_interval: the run's ``train.val_interval``.
            now: the time of the epoch end (``time.perf_counter()`` when None).

        Returns:
            ``max_epochs`` unchanged, or the count whose projected end is nearest the deadline.
        """
        now = time.perf_counter() if now is None else now
        val_s = float(row.get("val_time", 0.0) or 0.0)
        first = self._last_end is None
        wall = now - (self.started if first else self._last_end)
        self._last_end = now
        if val_s > 0:
            self._val_s.append(val_s)
        if not first:  # the process's first epoch also starts the workers and warms the kernels
            self._epoch_s.append(max(wall - val_s, 0.0))
        if done >= max_epochs or len(self._epoch_s) < 2:
            return max_epochs
        if now - self.started < START_FRACTION * (self.deadline - self.started):
            return max_epochs
        epoch_s = sum(self._epoch_s[-WINDOW:]) / len(self._epoch_s[-WINDOW:])
        val_pass = sum(self._val_s[-WINDOW:]) / len(self._val_s[-WINDOW:]) if self._val_s else self.val_pass_s

        def miss(epochs: int) -> float:
            left = (epochs - done) * epoch_s + validation_passes(done, epochs, val_interval) * val_pass
            return now + left - self.deadline

        # ending now is possible only when this epoch validated (the last epoch always does)
        lowest = done if "mean_dice" in row else done + 1
        highest = max(max_epochs, math.ceil(MAX_STRETCH * self.planned_epochs))
        best = min(range(lowest, highest + 1), key=lambda epochs: (abs(miss(epochs)), epochs))
        tolerance = max(HYSTERESIS * (self.deadline - self.started), epoch_s)
        if best == max_epochs or abs(miss(max_epochs)) <= tolerance:
            return max_epochs
        logger.info("budget pacing after epoch %d: %.1f s per epoch measured and %.1f s per validation %s, so "
                    "%d epochs would end %+.0f s from the budget; train.max_epochs %d -> %d (ends %+.0f s)",
                    done, epoch_s, val_pass, "measured" if self._val_s else "planned", max_epochs,
                    miss(max_epochs), max_epochs, best, miss(best))
        return best
