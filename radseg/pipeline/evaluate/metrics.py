"""Segmentation metrics, shared by validation during training, ``radseg evaluate`` and the demo.

Dice per class (validation's score), and per case and class for evaluation: Dice, IoU, HD95, ASSD
and normalised surface Dice in mm with the voxel spacing respected, volumes in mL and the volume
error. The surface metrics follow MONAI's definitions (see :mod:`radseg.pipeline.evaluate.surface`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from radseg.pipeline.evaluate.surface import (
    average_symmetric_surface_distance, hausdorff95, normalised_surface_dice, surface_distances,
)


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of each foreground class for one case.

    Args:
        pred: predicted class indices, any shape.
        label: true class indices, same shape.
        num_classes: classes including background (index 0, not scored).

    Returns:
        ``(num_classes - 1,)`` float64; NaN where a class is absent from both prediction and
        label (nothing to score), 0 where it is in only one of them.
    """
    scores = torch.full((num_classes - 1,), math.nan, dtype=torch.float64)
    for cls in range(1, num_classes):
        p, t = pred == cls, label == cls
        denominator = int(p.sum()) + int(t.sum())
        if denominator:
            scores[cls - 1] = 2.0 * int((p & t).sum()) / denominator
    return scores


#: what each metric is when a class is absent from the prediction, the truth, or both; written
#: into summary.json and the report, and stated in the README
EMPTY_CONVENTIONS = {
    "both empty": "dice, iou, surface_dice, hd95_mm, assd_mm and volume_error_rel are missing (NaN, "
                  "nothing to score); the volumes are 0 and volume_error_ml is 0",
    "prediction empty, truth not": "dice, iou and surface_dice are 0; hd95_mm and assd_mm are missing "
                                   "(no surface to measure from, reported as NaN, never 0 or inf)",
    "truth empty, prediction not": "dice, iou and surface_dice are 0; hd95_mm, assd_mm and "
                                   "volume_error_rel are missing (NaN)",
    "missing prediction file": "the case gets rows with status 'missing' and no values in metrics.csv, "
                               "is listed under missing_predictions, and is left out of means and intervals",
}

#: the per-case, per-class metrics, in the column order of metrics.csv
CASE_METRICS = (
    "dice", "iou", "hd95_mm", "assd_mm", "surface_dice",
    "volume_pred_ml", "volume_true_ml", "volume_error_ml", "volume_error_rel",
)


def overlap_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU (Jaccard) of two binary masks; NaN for both when both are empty."""
    pred_count, truth_count = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if pred_count + truth_count == 0:
        return math.nan, math.nan
    both = int(np.count_nonzero(pred & truth))
    return 2.0 * both / (pred_count + truth_count), both / (pred_count + truth_count - both)


def class_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...],
                  tolerance_mm: float) -> dict[str, float]:
    """Every metric of :data:`CASE_METRICS` for one class of one case.

    Args:
        pred: predicted mask of the class, boolean ``(X, Y, Z)``.
        truth: true mask of the class, same shape and grid.
        spacing: mm per voxel along each axis (anisotropy respected).
        tolerance_mm: the surface-Dice tolerance for this class.

    Returns:
        ``{metric: value}``; missing values are NaN (see :data:`EMPTY_CONVENTIONS`).
    """
    dice, iou = overlap_scores(pred, truth)
    distances = surface_distances(pred, truth, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume_pred = np.count_nonzero(pred) * voxel_ml
    volume_true = np.count_nonzero(truth) * voxel_ml
    return {
        "dice": dice, "iou": iou,
        "hd95_mm": hausdorff95(distances),
        "assd_mm": average_symmetric_surface_distance(distances),
        "surface_dice": normalised_surface_dice(distances, tolerance_mm),
        "volume_pred_ml": volume_pred, "volume_true_ml": volume_true,
        "volume_error_ml": volume_pred - volume_true,
        "volume_error_rel": (volume_pred - volume_true) / volume_true if volume_true else math.nan,
    }


def score_case(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], classes: dict[int, str],
               tolerance_mm: dict[int, float]) -> dict[int, dict[str, float]]:
    """All metrics of every foreground class of one case.

    Args:
        pred: predicted class indices ``(X, Y, Z)``.
        truth: true class indices, same shape and grid.
        spacing: mm per voxel along each axis.
        classes: ``{class index: name}`` of the classes to score (background excluded).
        tolerance_mm: surface-Dice tolerance per class index.

    Returns:
        ``{class index: {metric: value}}``.
    """
    return {cls: class_metrics(pred == cls, truth == cls, spacing, tolerance_mm[cls]) for cls in classes}
