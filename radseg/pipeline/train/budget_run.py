"""``radseg train --budget 15m`` without a config: plan on this machine, then train with the plan.

The budget becomes a fixed number of iterations at planning time (from the measured step), so the
run is an ordinary run: ``--resume`` continues it exactly from its own ``config.yaml``. The plan,
with one reason per setting, is kept beside the run as ``plan.yaml``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable, Union

from radseg.configs.loader import config_to_dict, load_config
from radseg.pipeline.plan.budget import format_seconds, parse_budget
from radseg.pipeline.plan.make_plan import plan_dataset, write_plan
from radseg.pipeline.train.fit import FitResult, fit

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.yaml"


def train_with_budget(data: str | Path, output: str | Path, budget: str | float, *, device: str = "auto",
                      fold: Union[int, str, None] = None, overwrite: bool = False, overrides: Iterable[str] = (),
                      progress: bool = True) -> FitResult:
    """Plan a run of ``data`` that ends within ``budget`` on this machine, then train it.

    Args:
        data: the dataset root.
        output: the run folder.
        budget: wall clock for planning and training together, e.g. ``"15m"``.
        device: "auto", "cpu" or "cuda".
        fold: a fold, "all" (train on every case), or None (fold 0).
        overwrite: replace an existing run in ``output``.
        overrides: ``section.key=value`` changes applied to the plan (the schedule stays the plan's).
        progress: show progress bars.

    Returns:
        The :class:`FitResult` of the run.

    Raises:
        ConfigError, DataError: bad input (budget, dataset, machine), before any training.
    """
    start = time.perf_counter()
    seconds = parse_budget(budget)
    plan = plan_dataset(data, seconds / 60, device, fold_all=fold == "all", count_planning=True, progress=progress)
    cfg = load_config(config_to_dict(plan.config), list(overrides))
    if fold is not None:
        cfg.data.fold = fold
    logger.info("%s", plan.summary())
    try:
        result = fit(cfg, data=data, output=output, fold=fold, overwrite=overwrite, progress=progress)
    finally:
        if Path(output, "config.yaml").is_file():
            write_plan(plan, Path(output) / PLAN_FILE, overwrite=True, source=str(data))
    wall = time.perf_counter() - start
    logger.info("budget %s, wall clock %s (%+.1f%%)", format_seconds(seconds), format_seconds(wall),
                100 * (wall - seconds) / seconds)
    return result
