"""One row of the review index per case: each class's Dice, HD95, volumes and lesion counts.

The scores are ``radseg evaluate``'s (:func:`radseg.pipeline.evaluate.metrics.score_case`); lesions
are counted as it matches them, as 26-connected components.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from radseg.pipeline.core.masks import bounding_box
from radseg.pipeline.evaluate.inputs import class_tolerances
from radseg.pipeline.evaluate.metrics import score_case

#: the metrics of each class shown in the index
INDEX_METRICS = ("dice", "hd95_mm", "volume_pred_ml", "volume_true_ml", "lesions_pred", "lesions_true")


def case_scores(pred: np.ndarray, truth: np.ndarray | None, spacing: tuple[float, ...],
                labels: dict[int, str]) -> dict[str, dict[str, float | None]]:
    """The index metrics of every foreground class of one case.

    Args:
        pred: predicted class indices ``(X, Y, Z)``.
        truth: true class indices on the same grid, or None (prediction only: volumes and counts).
        spacing: mm per voxel along X, Y, Z.
        labels: ``{class index: name}``, background (0) included.

    Returns:
        ``{class name: {metric: value}}``; None where a metric is undefined or there is no truth.
    """
    classes = {index: name for index, name in labels.items() if index}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if truth is not None:
        scores = score_case(pred, truth, spacing, classes, class_tolerances(None, labels))
    rows = {}
    for index, name in classes.items():
        row = dict.fromkeys(INDEX_METRICS)
        row["volume_pred_ml"] = float(np.count_nonzero(pred == index)) * voxel_ml
        row["lesions_pred"] = _components(pred == index)
        if truth is not None:
            row.update({key: scores[index][key] for key in ("dice", "hd95_mm", "volume_true_ml")})
            row["lesions_true"] = _components(truth == index)
        rows[name] = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in row.items()}
    return rows


def worst_dice(scores: dict[str, dict[str, float | None]]) -> tuple[float | None, str | None]:
    """The lowest Dice over the case's classes (the index sorts by it, worst first) and its class.

    Returns:
        ``(Dice, class name)``; ``(None, None)`` without truth or where no class is present.
    """
    values = [(row["dice"], name) for name, row in scores.items() if row["dice"] is not None]
    return min(values) if values else (None, None)


def _components(mask: np.ndarray) -> int:
    box = bounding_box(mask)  # labelling the box alone: a 512x512x800 volume is mostly background
    if box is None:
        return 0
    return int(ndimage.label(mask[box], np.ones((3, 3, 3), dtype=bool))[1])
