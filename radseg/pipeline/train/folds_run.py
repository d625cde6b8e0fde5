""":func:`train_folds`: the folds of a cross-validation run, one after another, then out-of-fold scoring.

The folder layout, ``cv.json`` and the checks are in :mod:`radseg.pipeline.train.cross_validation`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

from radseg.atomic import write_text_atomic
from radseg.configs.loader import config_to_dict, load_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError, DataError
from radseg.pipeline.core.checkpoint import LAST
from radseg.pipeline.train import cross_validation as cv
from radseg.pipeline.train.fit import fit
from radseg.pipeline.train.run_checks import (
    DATA_FILE, check_same_dataset, dataset_record, device_overrides, set_keys,
)

logger = logging.getLogger(__name__)


def train_folds(data: str | Path, output: str | Path, folds: cv.FoldSpec, *, cfg: RadsegConfig | None = None,
                budget: str | float | None = None, device: str = "auto", resume: bool = False,
                overwrite: bool = False, overrides: Sequence[str] = (), progress: bool = True, pace: bool = True,
                score: bool = True) -> cv.CrossValidationResult:
    """Train every fold of ``folds`` into ``output/fold_K``, then score the out-of-fold predictions.

    Args:
        data: the dataset.
        output: the cross-validation run folder.
        folds: ``"all-cv"`` or fold numbers (see :func:`radseg.pipeline.train.cross_validation.parse_folds`).
        cfg: the config every fold trains with; None with ``budget`` plans one, None with ``resume``
            takes the run's own.
        budget: wall clock for planning and all folds' training (``"15m"``); None trains ``cfg``'s epochs.
        device: "auto", "cpu" or "cuda" (with ``budget``: also the device the plan is sized for).
        resume: continue the run in ``output`` (done folds are kept, the fold in progress resumes).
        overwrite: replace a cross-validation run in ``output``.
        overrides: ``section.key=value`` changes (applied to the plan with ``budget``).
        progress: show progress bars.
        pace: with ``budget``, correct each fold's epochs to the pace measured in it.
        score: predict and score each fold's validation cases once every fold is done.

    Returns:
        The :class:`~radseg.pipeline.train.cross_validation.CrossValidationResult`.

    Raises:
        ConfigError, DataError: bad input (folds outside the split, too few cases, the run folder),
            before any training.
    """
    from radseg.pipeline.data.datalist import discover_dataset

    start = time.perf_counter()
    run_dir = Path(output)
    _refuse_torchrun()
    overrides = device_overrides(device, overrides)
    cv.check_cv_output(run_dir, resume, overwrite)
    spec = discover_dataset(data)
    if resume:
        check_same_dataset(run_dir, dataset_record(data))
        state, fingerprint = cv.read_cv_state(run_dir), None
        cv.resolve_folds(state["folds"], state["num_folds"], len(spec.training))
    else:
        chosen = cv.resolve_folds(folds, cv.num_folds_for(cfg, overrides), len(spec.training))
        state, fingerprint = _start(run_dir, data, chosen, cfg, budget, device, overrides, overwrite, progress,
                                    start)
    if score and len(spec.channel_names) > 1:
        logger.warning("out-of-fold scoring is skipped: radseg predict reads one channel and %s has %d (%s); the "
                       "folds train as asked", data, len(spec.channel_names), ", ".join(spec.channel_names))
        score = False
    result = cv.CrossValidationResult(run_dir)
    fold_cfg = cv.state_config(state)
    for fold in state["folds"]:
        outcome = _train_fold(run_dir, data, fold, fold_cfg, state, resume, progress, pace, fingerprint)
        fingerprint = fingerprint or _fold_fingerprint(run_dir, fold)
        result.folds.append(outcome)
    if score:
        from radseg.pipeline.evaluate.out_of_fold import score_out_of_fold

        result.scores = score_out_of_fold(run_dir, data, device=device, progress=progress)
    result.seconds = time.perf_counter() - start
    return result


def _start(run_dir: Path, data, folds: list[int], cfg: RadsegConfig | None, budget, device: str,
           overrides: Sequence[str], overwrite: bool, progress: bool, start: float) -> tuple[dict, object]:
    """A new run: plan (with a budget), write cv.json, splits.json and data.json.

    Returns:
        ``cv.json``'s contents, and the plan's dataset fingerprint (None without a budget).
    """
    from radseg.pipeline.plan.budget import format_seconds, parse_budget

    if run_dir.exists():  # --overwrite, or a start stopped before cv.json (check_cv_output allowed both)
        cv.clear_cv_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    budget_s = fold_budget_s = plan = None
    if budget is not None:
        budget_s = parse_budget(budget)
        device = set_keys(overrides).get("train.device", device).strip("'\"")  # --device or --set train.device
        plan = _plan(run_dir, data, budget_s / len(folds), device, progress)
        cfg = load_config(config_to_dict(plan.config), list(overrides))
        fold_budget_s = (budget_s - (time.perf_counter() - start)) / len(folds)
        logger.info("cross-validation budget %s: planning took %s, each of the %d folds gets %s",
                    format_seconds(budget_s), format_seconds(time.perf_counter() - start), len(folds),
                    format_seconds(fold_budget_s))
    elif cfg is None:
        cfg = load_config("demo", list(overrides))
    write_text_atomic(run_dir / DATA_FILE, json.dumps(dataset_record(data), indent=2) + "\n")
    _write_splits(run_dir, data, cfg)
    state = cv.new_cv_state(folds, cfg, budget_s, fold_budget_s)
    if plan is not None:
        state["val_pass_s"] = plan.schedule.val_seconds / max(plan.schedule.validations, 1)
    cv.write_cv_state(run_dir, state)
    return state, None if plan is None else plan.fingerprint


def _plan(run_dir: Path, data, fold_seconds: float, device: str, progress: bool):
    """Plan once for the whole dataset, sized for one fold's share of the budget; kept as plan.yaml."""
    from radseg.pipeline.plan.make_plan import plan_dataset, write_plan

    plan = plan_dataset(data, fold_seconds / 60, device, progress=progress, log_device=False)
    write_plan(plan, run_dir / cv.CV_PLAN, overwrite=True, source=str(data))
    return plan


def _refuse_torchrun() -> None:
    """Folds run one after another in one process; under torchrun each would need its own rank-0 bookkeeping."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise ConfigError(f"--folds runs in one process, not under torchrun ({world} processes); run it as plain "
                          "`radseg train --folds ...`, or train single folds with torchrun (--fold K)")


def _fold_fingerprint(run_dir: Path, fold: int):
    """The fingerprint a trained fold measured (every labelled case: the same for every fold)."""
    from radseg.pipeline.train.run_setup import FINGERPRINT_FILE
    from radseg.transforms.fingerprint import load_fingerprint

    path = cv.fold_dir(run_dir, fold) / FINGERPRINT_FILE
    return load_fingerprint(path) if path.is_file() else None


def _write_splits(run_dir: Path, data, cfg: RadsegConfig) -> None:
    from radseg.pipeline.data.datalist import discover_dataset
    from radseg.pipeline.data.splits import load_or_create_splits

    ids = [case.case_id for case in discover_dataset(data, check_files=False).training]
    load_or_create_splits(run_dir / cv.CV_SPLITS, ids, cfg.data.num_folds, cfg.data.split_seed)


def _train_fold(run_dir: Path, data, fold: int, cfg: RadsegConfig, state: dict, resume: bool, progress: bool,
                pace: bool, fingerprint) -> cv.FoldOutcome:
    from radseg.pipeline.train.pacing import BudgetPacer

    done = state["done"].get(str(fold))
    if done is not None:
        logger.info("fold %d: done before (best validation Dice %.4f); kept as it is", fold, done["best_dice"])
        return cv.FoldOutcome(fold, "done before", done["best_dice"], done["epochs"], done["seconds"],
                              state.get("fold_budget_s"))
    folder = cv.fold_dir(run_dir, fold)
    # a fold stopped before its first checkpoint starts again (fit clears its unfinished folder)
    started = resume and (folder / LAST).is_file()
    fold_start = time.perf_counter()
    budget_s = state.get("fold_budget_s")
    logger.info("fold %d of folds %s: %s%s", fold, state["folds"], "resuming" if started else "training",
                f" (its share of the budget: {budget_s:.0f} s)" if budget_s else "")
    pacer = None
    if budget_s and pace and not started:
        pacer = BudgetPacer(deadline=fold_start + budget_s, val_pass_s=state.get("val_pass_s") or 0.0,
                            planned_epochs=cfg.train.max_epochs)
    fold_cfg = None if started else _with_fold(cfg, fold)
    fitted = fit(fold_cfg, data=data, output=folder, fold=fold, resume=started, progress=progress, pacer=pacer,
                 fingerprint=fingerprint, log_device=fold == state["folds"][0])
    _check_same_split(run_dir, folder)
    outcome = cv.FoldOutcome(fold, "resumed" if started else "trained", float(fitted.best_dice), fitted.epochs,
                             time.perf_counter() - fold_start, budget_s)
    _mark_done(run_dir, state, outcome)
    return outcome


def _check_same_split(run_dir: Path, folder: Path) -> None:
    """Every fold must have split the cases as the run did (same ids, folds and seed give the same split)."""
    if json.loads((folder / cv.CV_SPLITS).read_text()) != json.loads((run_dir / cv.CV_SPLITS).read_text()):
        raise DataError(f"{folder / cv.CV_SPLITS} differs from the run's {run_dir / cv.CV_SPLITS}; the folds would "
                        "not be disjoint; fix: start the cross-validation run again with --overwrite")


def _with_fold(cfg: RadsegConfig, fold: int) -> RadsegConfig:
    cfg = load_config(config_to_dict(cfg))
    cfg.data.fold = fold
    return cfg


def _mark_done(run_dir: Path, state: dict, outcome: cv.FoldOutcome) -> None:
    state["done"][str(outcome.fold)] = {"best_dice": outcome.best_dice, "epochs": outcome.epochs,
                                        "seconds": round(outcome.seconds, 1), "status": outcome.status}
    cv.write_cv_state(run_dir, state)
