"""``radseg train --folds 0-4``: every cross-validation fold in turn, one run folder each, one budget.

A cross-validation run folder holds ``cv.json`` (the folds, the config, what each fold got and how it
ended), ``splits.json`` (one split for every fold), ``plan.yaml`` with ``--budget`` (planned once, on
the whole dataset), ``fold_K/`` (an ordinary run folder per fold) and, once every fold is done,
``cv/`` (out-of-fold predictions and their scores, :mod:`radseg.pipeline.evaluate.out_of_fold`).

Each fold resumes on its own: killed during fold 2, ``--resume`` skips the folds ``cv.json`` marks
done, continues fold 2 from its ``last.pt`` and starts the rest. With ``--budget`` the time left after
planning is split evenly across the folds (each fold's pacer keeps it on its share); a resumed fold
continues the epoch count its pacer had set. Under ``torchrun`` every fold trains with all processes
(DDP), one fold after another.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from radseg.configs.loader import config_to_dict
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError, DataError
from radseg.pipeline.core.cv_folder import (  # noqa: F401 - the folder's names, public here too
    CV_FILE, CV_OUTPUTS, CV_PLAN, CV_SPLITS, fold_dir, is_cv_run, read_cv_state, state_config, write_cv_state,
)
from radseg.pipeline.train.run_checks import set_keys
from radseg.pipeline.train.run_folder import CHECKPOINTS, refuse_foreign_files, remove_run_files

logger = logging.getLogger(__name__)

#: what a cross-validation folder holds besides its fold_K folders
_CV_ENTRIES = (CV_FILE, CV_SPLITS, CV_PLAN, "data.json", CV_OUTPUTS)
_FOLD_DIR = re.compile(r"^fold_(\d+)$")

FoldSpec = Union[str, list[int]]


def parse_folds(text: str) -> FoldSpec:
    """``--folds``: ``all-cv``, a range ``0-4``, or a list ``0,2,3`` (checked against the split later).

    Raises:
        ValueError: anything else (argparse turns it into a usage error).
    """
    text = text.strip()
    if text == "all-cv":
        return text
    try:
        if re.fullmatch(r"\d+-\d+", text):
            first, last = (int(v) for v in text.split("-"))
            folds = list(range(first, last + 1))
        else:
            folds = [int(v) for v in text.split(",")]
    except ValueError:
        folds = []
    if not folds or len(set(folds)) != len(folds) or min(folds) < 0:
        raise ValueError(f"--folds must be all-cv, a range like 0-4 or a list like 0,2,3, not {text!r}")
    return sorted(folds)


def resolve_folds(spec: FoldSpec, num_folds: int, num_cases: int) -> list[int]:
    """The fold numbers ``spec`` names, checked against a split of ``num_cases`` into ``num_folds``.

    Raises:
        DataError: fewer cases than folds (a fold would have no validation case).
        ConfigError: a fold outside ``0..num_folds-1``.
    """
    if num_folds < 2:
        raise ConfigError(f"cross-validation needs data.num_folds of at least 2, not {num_folds}")
    if num_cases < num_folds:
        raise DataError(f"the dataset has {num_cases} labelled training case(s), too few for {num_folds} folds "
                        f"(each fold validates on at least one case); fix: --set data.num_folds={max(num_cases, 2)} "
                        "or add cases")
    folds = list(range(num_folds)) if spec == "all-cv" else list(spec)
    outside = [f for f in folds if f >= num_folds]
    if outside:
        raise ConfigError(f"--folds {outside} are outside the split of {num_folds} folds (0-{num_folds - 1}); "
                          f"fix: --folds 0-{num_folds - 1}, or --set data.num_folds=N")
    return folds


def check_cv_output(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder a cross-validation run cannot use, before any work.

    Raises:
        ConfigError: ``--resume`` with ``--overwrite``; a run there without either; ``--resume`` where no
            cross-validation run is; a single-fold run there; files radseg did not write.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    if resume and not is_cv_run(run_dir):
        raise ConfigError(f"--resume: {run_dir} holds no cross-validation run (no {CV_FILE}); drop --resume "
                          "to start one there")
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--output {run_dir} is a file; pass a folder for the cross-validation run")
    trained = [] if is_cv_run(run_dir) or overwrite else _fold_runs(run_dir)
    if trained:
        raise ConfigError(f"--output {run_dir} holds trained fold runs ({', '.join(trained)}) but no "
                          f"{CV_FILE}; pass --overwrite to replace them, or choose another --output")
    if (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--output {run_dir} holds a single-fold run; choose an empty or new folder for the "
                          "cross-validation run")
    if is_cv_run(run_dir) and not (resume or overwrite):
        raise ConfigError(f"{run_dir} already holds a cross-validation run; pass --resume to continue it, "
                          "--overwrite to replace it, or choose another --output")
    _refuse_foreign(run_dir)


def _fold_runs(run_dir: Path) -> list[str]:
    """The fold_K folders in ``run_dir`` that hold a checkpoint (a run, not an unfinished start)."""
    return sorted(path.name for path in run_dir.iterdir() if _FOLD_DIR.match(path.name) and path.is_dir()
                  and any((path / name).is_file() for name in CHECKPOINTS))


def _refuse_foreign(run_dir: Path) -> None:
    foreign = []
    for path in run_dir.iterdir():
        if _FOLD_DIR.match(path.name) and path.is_dir() and not path.is_symlink():
            refuse_foreign_files(path)
        elif path.name not in _CV_ENTRIES and not path.name.startswith(f".{CV_FILE}."):
            foreign.append(path.name)
    if foreign:
        raise ConfigError(f"--output {run_dir} holds files radseg did not write ({', '.join(sorted(foreign)[:5])}); "
                          "choose an empty or new folder for the cross-validation run")


def clear_cv_run(run_dir: Path) -> None:
    """Remove what an earlier cross-validation run (``--overwrite``), or a start stopped before its
    ``cv.json`` was written, left (checked by :func:`check_cv_output`)."""
    if is_cv_run(run_dir):
        logger.warning("--overwrite: removing the earlier cross-validation run in %s", run_dir)
    for path in run_dir.iterdir():
        if _FOLD_DIR.match(path.name) and path.is_dir():
            remove_run_files(path)
            path.rmdir()
        elif path.name == CV_OUTPUTS and path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


@dataclass
class FoldOutcome:
    """How one fold ended."""

    fold: int
    status: str  # "trained", "resumed" or "done before"
    best_dice: float
    epochs: int
    seconds: float
    budget_s: float | None = None


@dataclass
class CrossValidationResult:
    """What :func:`train_folds` did; ``str()`` is the summary the CLI prints."""

    run_dir: Path
    folds: list[FoldOutcome] = field(default_factory=list)
    seconds: float = 0.0
    scores: object | None = None  # the out-of-fold OutOfFoldResult

    def __str__(self) -> str:
        lines = [f"cross-validation: {len(self.folds)} fold(s) in {self.seconds:.0f} s; run folder {self.run_dir}"]
        for f in self.folds:
            budget = f", budget {f.budget_s:.0f} s" if f.budget_s else ""
            lines.append(f"  fold {f.fold}: {f.status}, {f.epochs} epochs in {f.seconds:.0f} s{budget}, "
                         f"best validation Dice {f.best_dice:.4f}")
        if self.scores is not None:
            lines.append(str(self.scores))
        return "\n".join(lines)


def num_folds_for(cfg: RadsegConfig | None, overrides: Sequence[str]) -> int:
    """``data.num_folds`` of the config, or of the overrides (a ``--budget`` plan keeps the default)."""
    if cfg is not None:
        return int(cfg.data.num_folds)
    value = set_keys(overrides).get("data.num_folds")
    return int(value) if value is not None else int(RadsegConfig().data.num_folds)


def new_cv_state(folds: list[int], cfg: RadsegConfig, budget_s: float | None,
                 fold_budget_s: float | None) -> dict:
    """The ``cv.json`` of a new run."""
    return {"folds": folds, "num_folds": int(cfg.data.num_folds), "config": config_to_dict(cfg),
            "budget_s": budget_s, "fold_budget_s": fold_budget_s,
            "done": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

