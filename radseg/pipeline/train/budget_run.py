"""``radseg train --budget 15m`` without a config: plan on this machine, then train with the plan.

The budget becomes a fixed number of iterations at planning time (from the measured step). Once a
quarter of the training time has passed, the epoch count is corrected to the pace measured in the
run itself (:mod:`radseg.pipeline.train.pacing`), and each correction is written to the run's
``config.yaml`` before the next epoch, so ``--resume`` still continues it exactly. The plan, with
one reason per setting, is kept beside the run as ``plan.yaml`` (the planned count; train.log says
what pacing changed). Under ``torchrun`` rank 0 plans (the others wait) and every rank trains its plan:
ranks that calibrated for themselves, side by side on shared cores, could plan different networks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence, Union

from radseg.configs.loader import config_to_dict, load_config
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.plan.budget import format_seconds, parse_budget
from radseg.pipeline.plan.make_plan import plan_dataset, write_plan
from radseg.pipeline.train.fit import FitResult, fit
from radseg.pipeline.train.pacing import BudgetPacer
from radseg.pipeline.train.run_checks import device_overrides, set_keys
from radseg.pipeline.train.run_setup import check_run_output

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.yaml"


def train_with_budget(data: str | Path, output: str | Path, budget: str | float, *, device: str = "auto",
                      fold: Union[int, str, None] = None, overwrite: bool = False, overrides: Sequence[str] = (),
                      progress: bool = True, pace: bool = True) -> FitResult:
    """Plan a run of ``data`` that ends within ``budget`` on this machine, then train it.

    Args:
        data: the dataset root.
        output: the run folder.
        budget: wall clock for planning and training together, e.g. ``"15m"``.
        device: ``--device``: "auto" (``train.device`` from ``overrides``, else CUDA when present), "cpu" or
            "cuda"; it is the plan's device and the run's ``train.device``.
        fold: a fold, "all" (train on every case), or None (fold 0).
        overwrite: replace an existing run in ``output``.
        overrides: ``section.key=value`` changes applied to the plan (the schedule stays the plan's).
        progress: show progress bars.
        pace: correct the planned epoch count to the pace measured during the run (see
            :mod:`radseg.pipeline.train.pacing`); False trains exactly the planned epochs.

    Returns:
        The :class:`FitResult` of the run.

    Raises:
        ConfigError, DataError: bad input (budget, device, run folder, dataset, machine), before any training.
    """
    start = time.perf_counter()
    seconds = parse_budget(budget)
    overrides = device_overrides(device, overrides)
    check_run_output(Path(output), resume=False, overwrite=overwrite)  # before minutes of planning
    # the plan and the process group's backend follow the device the run will train on
    device = set_keys(overrides).get("train.device", device).strip("'\"")
    info = ddp.init_distributed(device)
    ddp.log_device(info.device)
    try:
        return _plan_and_fit(data, output, seconds, start, info, device=device, fold=fold, overwrite=overwrite,
                             overrides=overrides, progress=progress, pace=pace)
    finally:
        ddp.cleanup_distributed(info)


def _plan_and_fit(data, output, seconds: float, start: float, info: ddp.DistInfo, *, device, fold, overwrite,
                  overrides, progress, pace) -> FitResult:
    plan = ddp.run_on_main(lambda: plan_dataset(data, seconds / 60, device, fold_all=fold == "all",
                                                count_planning=True, progress=progress, log_device=False), info)
    if info.distributed:
        logger.info("rank %d of %d trains rank 0's plan", info.rank, info.world_size)
    cfg = load_config(config_to_dict(plan.config), list(overrides))
    if fold is not None:
        cfg.data.fold = fold
    logger.info("%s", plan.summary())
    schedule = plan.schedule
    if pace and {"train.max_epochs", "train.iterations_per_epoch"} & set(set_keys(overrides)):
        logger.info("the schedule is set with --set: budget pacing is off")
        pace = False
    pacer = BudgetPacer(deadline=start + seconds, val_pass_s=schedule.val_seconds / max(schedule.validations, 1),
                        planned_epochs=cfg.train.max_epochs) if pace else None
    try:
        result = fit(cfg, data=data, output=output, fold=fold, overwrite=overwrite, progress=progress, pacer=pacer,
                     fingerprint=plan.fingerprint, log_device=False)
    finally:
        if info.is_main and Path(output, "config.yaml").is_file():
            write_plan(plan, Path(output) / PLAN_FILE, overwrite=True, source=str(data))
    wall = time.perf_counter() - start
    logger.info("budget %s, wall clock %s (%+.1f%%)", format_seconds(seconds), format_seconds(wall),
                100 * (wall - seconds) / seconds)
    return result

