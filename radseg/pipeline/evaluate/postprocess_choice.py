"""Clean-ups chosen on out-of-fold predictions: each is kept only where it raises the Dice (nnU-Net's rule).

The candidates are, class by class: keeping the largest component, dropping components under the
plan's minimum size (where the plan set one), and the plan's structure rules (``inside``). They are
tried one at a time, in that order, on every out-of-fold prediction, each on top of those already
kept; a candidate is kept when the mean foreground Dice over cases and classes rises by more than
:data:`MIN_GAIN`. The record keeps every figure that decided.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from radseg.pipeline.predict.postprocess import PostprocessConfig, postprocess

logger = logging.getLogger(__name__)

#: a clean-up must raise the mean out-of-fold Dice by more than this to be kept
MIN_GAIN = 1e-4


@dataclass
class OutOfFoldCase:
    """One case's raw out-of-fold prediction and truth on the scan's grid, ``(Z, Y, X)``."""

    name: str
    pred: np.ndarray
    truth: np.ndarray
    voxel_ml: float
    spacing: tuple[float, float, float]  # mm along the arrays' axes


@dataclass
class PostprocessChoice:
    """The clean-ups kept, and each candidate's figures (mean foreground Dice before and with it)."""

    chosen: PostprocessConfig
    trials: list[dict] = field(default_factory=list)
    raw_dice: float = float("nan")
    final_dice: float = float("nan")

    def inference_fields(self) -> dict:
        """The choice as the ``inference`` config fields :meth:`PostprocessConfig.planned` reads."""
        chosen = self.chosen
        largest = chosen.largest_component
        sizes = chosen.min_component_ml
        return {
            "largest_component": sorted(largest) if isinstance(largest, tuple) else [],
            "min_component_ml": list(sizes) if isinstance(sizes, tuple) else [],
            "inside": [{"value": v, "within": w, "margin_mm": m} for v, w, m in chosen.inside],
        }

    def to_dict(self) -> dict:
        """What ``cv/postprocess.json`` holds."""
        return {"rule": f"kept where the mean out-of-fold foreground Dice rises by more than {MIN_GAIN}",
                "raw_dice": self.raw_dice, "final_dice": self.final_dice, "trials": self.trials,
                "inference": self.inference_fields()}


def mean_dice(cases: Sequence[OutOfFoldCase], num_classes: int, cfg: PostprocessConfig | None = None) -> float:
    """Mean Dice over cases and foreground classes, after ``cfg``'s clean-ups (pairs with both masks empty
    are left out, as undefined)."""
    scores = []
    for case in cases:
        with _quiet(logging.getLogger(postprocess.__module__)):  # a trial, not a prediction: no per-case lines
            pred = case.pred if cfg is None else postprocess(case.pred.copy(), num_classes, case.voxel_ml, cfg,
                                                             spacing=case.spacing, case=case.name)
        for value in range(1, num_classes):
            p, t = pred == value, case.truth == value
            total = int(p.sum()) + int(t.sum())
            if total:
                scores.append(2.0 * int((p & t).sum()) / total)
    return float(np.mean(scores)) if scores else float("nan")


@contextlib.contextmanager
def _quiet(log: logging.Logger):
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def choose_postprocess(cases: Sequence[OutOfFoldCase], num_classes: int, planned: PostprocessConfig,
                       names: Sequence[str]) -> PostprocessChoice:
    """Try each candidate clean-up on the out-of-fold predictions; keep those that raise the Dice.

    Args:
        cases: every fold's validation cases, predicted without clean-ups by their fold's model.
        num_classes: classes including background.
        planned: the run's planned clean-ups (source of the minimum sizes and structure rules).
        names: class names, background first.
    """
    current = PostprocessConfig(largest_component=(), min_component_ml=0.0, inside=())
    best = raw = mean_dice(cases, num_classes)
    trials = []
    for label, candidate in _candidates(planned, num_classes, names):
        trial = candidate(current)
        score = mean_dice(cases, num_classes, trial)
        kept = score > best + MIN_GAIN
        trials.append({"clean_up": label, "dice_before": round(best, 5), "dice_with": round(score, 5), "kept": kept})
        logger.info("out-of-fold clean-up %s: mean Dice %.4f -> %.4f (%s)", label, best, score,
                    "kept" if kept else "not kept")
        if kept:
            current, best = trial, score
    return PostprocessChoice(current, trials, raw, best)


def _candidates(planned: PostprocessConfig, num_classes: int, names: Sequence[str]):
    for value in range(1, num_classes):
        yield (f"largest component of {names[value]}",
               lambda cfg, v=value: dataclasses.replace(cfg, largest_component=tuple(cfg.largest_component) + (v,)))
    for value in range(1, num_classes):
        size = planned.min_ml(value)
        if size > 0:
            yield (f"{names[value]} components under {size:g} mL dropped",
                   lambda cfg, v=value, s=size: dataclasses.replace(cfg, min_component_ml=_sizes(cfg, v, s, num_classes)))
    for rule in planned.inside:
        value, within, margin = rule
        yield (f"{names[value]} farther than {margin:g} mm from {names[within]} removed",
               lambda cfg, r=rule: dataclasses.replace(cfg, inside=tuple(cfg.inside) + (r,)))


def _sizes(cfg: PostprocessConfig, value: int, size: float, num_classes: int) -> tuple[float, ...]:
    sizes = [cfg.min_ml(v) for v in range(num_classes)]
    sizes[value] = size
    return tuple(sizes)
