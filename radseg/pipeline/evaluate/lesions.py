"""Lesions as objects: connected components of a class, matched between prediction and truth.

Rule (stated in summary.json, the report and the README):

- a lesion is a connected component of the class's voxels, 26-connected (faces, edges, corners);
- a predicted lesion P and a true lesion T match when their overlap covers at least
  ``min_overlap`` (default 10%) of the smaller of the two. Matching is many-to-many, so a true
  lesion split into several predicted pieces, or several true lesions merged into one predicted
  blob, all count as found;
- a true lesion with a match is a true positive (TP), without one a false negative (FN); a
  predicted lesion without a match is a false positive (FP);
- sensitivity = TP / true lesions; precision = matched predicted lesions / predicted lesions;
  F1 = their harmonic mean, 0 when there are true lesions but no predicted ones or the reverse
  (NaN only with neither);
- a true lesion's Dice is against the union of its matching predicted lesions (0 when missed); a
  predicted lesion's Dice is against the union of its matching true lesions (0 when spurious).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from radseg.pipeline.core.masks import bounding_box

MATCHING_RULE = (
    "lesions are 26-connected components; a predicted and a true lesion match when their overlap "
    "covers at least {min_overlap:.0%} of the smaller one (many-to-many: split and merged lesions count as "
    "found); TP = true lesions with a match, FN = without; FP = predicted lesions without a match; "
    "sensitivity = TP / true lesions, precision = matched predicted lesions / predicted lesions"
)


@dataclass
class Lesion:
    """One connected component, true or predicted.

    Attributes:
        kind: "true" or "pred".
        index: 1-based number within its case, class and kind.
        voxels: voxel count.
        volume_ml: its volume.
        matches: indices of the lesions of the other kind it matches.
        dice: Dice against the union of its matches (0 without any).
        box_mm: world bounding box ``((min x, min y, min z), (max x, max y, max z))``, RAS mm.
        score: the highest probability of the class inside it (predicted lesions, when
            probability maps are given; NaN otherwise).
    """

    kind: str
    index: int
    voxels: int
    volume_ml: float = 0.0
    matches: list[int] = field(default_factory=list)
    dice: float = 0.0
    box_mm: tuple[tuple[float, ...], tuple[float, ...]] = ((0.0,) * 3, (0.0,) * 3)
    score: float = float("nan")

    @property
    def status(self) -> str:
        """TP when matched; FN (true) or FP (predicted) otherwise."""
        if self.matches:
            return "TP"
        return "FN" if self.kind == "true" else "FP"


def match_lesions(pred: np.ndarray, truth: np.ndarray, affine: np.ndarray, *, min_overlap: float = 0.1,
                  probability: np.ndarray | None = None) -> list[Lesion]:
    """Find the lesions of one class in one case and match predicted to true ones.

    Args:
        pred: predicted mask of the lesion class, boolean ``(X, Y, Z)``.
        truth: true mask, same grid.
        affine: 4x4 voxel-index -> world (RAS, mm) affine of the grid.
        min_overlap: the fraction of the smaller lesion the overlap must cover.
        probability: the class's probability map ``(X, Y, Z)``, to score predicted lesions (FROC).

    Returns:
        The true lesions, then the predicted ones.
    """
    box = bounding_box(pred | truth)
    if box is None:
        return []
    structure = np.ones((3,) * pred.ndim, dtype=bool)
    ids = {"true": ndimage.label(truth[box], structure)[0], "pred": ndimage.label(pred[box], structure)[0]}
    sizes = {kind: np.bincount(labels.ravel()) for kind, labels in ids.items()}
    overlaps = _matching_overlaps(ids["true"], ids["pred"], sizes, min_overlap)
    offset = np.array([s.start for s in box])
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    lesions = []
    for kind, other in (("true", "pred"), ("pred", "true")):
        partners, shared = defaultdict(list), defaultdict(int)
        for pair, voxels in overlaps.items():
            own, partner = pair if kind == "true" else pair[::-1]
            partners[own].append(partner)
            shared[own] += voxels
        for index, where in enumerate(ndimage.find_objects(ids[kind]), start=1):
            size, matches = int(sizes[kind][index]), sorted(partners[index])
            lesion = Lesion(kind, index, size, size * voxel_ml, matches, box_mm=_world_box(where, offset, affine))
            lesion.dice = 2.0 * shared[index] / (size + int(sizes[other][matches].sum())) if matches else 0.0
            if kind == "pred" and probability is not None:
                lesion.score = float(probability[box][where][ids[kind][where] == index].max())
            lesions.append(lesion)
    return lesions


def _matching_overlaps(truth_ids: np.ndarray, pred_ids: np.ndarray, sizes: dict[str, np.ndarray],
                       min_overlap: float) -> dict[tuple[int, int], int]:
    """``{(true lesion, predicted lesion): shared voxels}`` of the pairs that match.

    Only overlapping voxels are counted (sparse), so a noisy prediction with thousands of specks
    costs no (true x predicted) table.
    """
    both = (truth_ids > 0) & (pred_ids > 0)
    width = len(sizes["pred"])
    pairs, counts = np.unique(truth_ids[both].astype(np.int64) * width + pred_ids[both], return_counts=True)
    true_index, pred_index = np.divmod(pairs, width)
    smaller = np.minimum(sizes["true"][true_index], sizes["pred"][pred_index])
    keep = counts >= min_overlap * smaller
    return {(int(t), int(p)): int(n) for t, p, n in zip(true_index[keep], pred_index[keep], counts[keep])}


def _world_box(where: tuple[slice, ...], offset: np.ndarray, affine: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """World (mm) box around the voxels' outer faces: the 8 corners at +-0.5 voxel, transformed."""
    low = offset + np.array([s.start for s in where]) - 0.5
    high = offset + np.array([s.stop for s in where]) - 0.5
    corners = np.array(list(itertools.product(*zip(low, high))), dtype=np.float64)
    world = corners @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    return tuple(world.min(axis=0).round(3).tolist()), tuple(world.max(axis=0).round(3).tolist())


@dataclass(frozen=True)
class Detection:
    """Lesion-detection counts and rates over a set of cases."""

    true_positives: int
    false_negatives: int
    false_positives: int
    matched_predictions: int
    predictions: int

    @property
    def sensitivity(self) -> float:
        total = self.true_positives + self.false_negatives
        return self.true_positives / total if total else float("nan")

    @property
    def precision(self) -> float:
        return self.matched_predictions / self.predictions if self.predictions else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of sensitivity and precision; 0 when only one side has lesions (all missed,
        or all false), NaN only when there are neither true nor predicted lesions."""
        total = self.true_positives + self.false_negatives
        if total == 0 and self.predictions == 0:
            return float("nan")
        if total == 0 or self.predictions == 0:
            return 0.0
        s, p = self.sensitivity, self.precision
        return 2 * s * p / (s + p) if s + p > 0 else 0.0


def detection(lesions: list[Lesion]) -> Detection:
    """TP/FN/FP counts of a list of lesions (any number of cases)."""
    true = [lesion for lesion in lesions if lesion.kind == "true"]
    pred = [lesion for lesion in lesions if lesion.kind == "pred"]
    matched = sum(1 for lesion in pred if lesion.matches)
    tp = sum(1 for lesion in true if lesion.matches)
    return Detection(tp, len(true) - tp, len(pred) - matched, matched, len(pred))


#: false positives per scan at which the FROC table gives the sensitivity
FROC_RATES = (0.5, 1.0, 2.0, 4.0, 8.0)


def froc(lesions_by_case: dict[str, list[Lesion]], rates: tuple[float, ...] = FROC_RATES) -> dict[float, float]:
    """Sensitivity at given false-positive rates per scan, from predicted lesions scored by probability.

    The candidates are the predicted lesions (components of the predicted label map), each scored
    by its highest class probability. Lowering a threshold over the scores keeps more candidates;
    at each threshold a true lesion is found when a kept candidate matches it, and every kept
    candidate without a match is a false positive. The sensitivity at a rate is the best one
    reached with at most that many false positives per scan (the curve stays flat beyond the last
    candidate).

    Args:
        lesions_by_case: each case's lesions of one class, from :func:`match_lesions` with a
            probability map (every case scored, those without lesions too).
        rates: false positives per scan.

    Returns:
        ``{rate: sensitivity}``; NaN when there are no true lesions.
    """
    num_scans = len(lesions_by_case)
    num_true = sum(1 for ls in lesions_by_case.values() for lesion in ls if lesion.kind == "true")
    candidates = sorted(((lesion.score, case, lesion) for case, ls in lesions_by_case.items()
                         for lesion in ls if lesion.kind == "pred"), key=lambda item: -item[0])
    if num_true == 0 or num_scans == 0:
        return {rate: float("nan") for rate in rates}
    found: set[tuple[str, int]] = set()
    false_positives, curve = 0, [(0.0, 0.0)]
    for position, (score, case, lesion) in enumerate(candidates):
        found.update((case, index) for index in lesion.matches)
        false_positives += 0 if lesion.matches else 1
        last_at_score = position + 1 == len(candidates) or candidates[position + 1][0] != score
        if last_at_score:  # tied scores enter together
            curve.append((false_positives / num_scans, len(found) / num_true))
    return {rate: max(s for fp, s in curve if fp <= rate) for rate in rates}
