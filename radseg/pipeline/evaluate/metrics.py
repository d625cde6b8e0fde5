"""Segmentation metrics, shared by validation during training, ``radseg evaluate`` and the demo.

Dice per class (validation's score), and per case and class for evaluation: Dice, IoU, HD95, ASSD
and normalised surface Dice in mm with the voxel spacing respected, volumes in mL and the volume
error. The surface metrics follow MONAI's definitions (see :mod:`radseg.pipeline.evaluate.surface`);
the surface Dice is the area-weighted one of DeepMind (MONAI's ``use_subvoxels=True``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from radseg.pipeline.core.masks import bounding_box
from radseg.pipeline.evaluate.surface import (
    average_symmetric_surface_distance, hausdorff95, normalised_surface_dice, surface_distances, surface_elements,
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
    "undefined values": "each summary gives n (cases with a value) and n_undefined (cases where the metric is "
                        "missing); a mean over the defined cases alone flatters a model that misses structures",
}

#: the conventions that change with ``--worst-case-distances``
WORST_CASE_CONVENTIONS = {
    "prediction empty, truth not": "dice, iou and surface_dice are 0; hd95_mm and assd_mm are the worst case, "
                                   "the diagonal of the volume's physical extent in mm (--worst-case-distances, "
                                   "as Metrics Reloaded recommends)",
    "truth empty, prediction not": "dice, iou and surface_dice are 0; hd95_mm and assd_mm are the worst case, the "
                                   "diagonal of the volume's physical extent in mm (--worst-case-distances); "
                                   "volume_error_rel is missing (NaN)",
}


def empty_conventions(worst_case_distances: bool = False) -> dict[str, str]:
    """What each metric is for empty masks (:data:`EMPTY_CONVENTIONS`, updated for the worst-case option)."""
    return {**EMPTY_CONVENTIONS, **(WORST_CASE_CONVENTIONS if worst_case_distances else {})}


def volume_diagonal_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """Diagonal (mm) of the volume's physical extent: ``sqrt(sum((shape * spacing)²))``, voxel faces to faces."""
    return float(np.linalg.norm(np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)))

#: how the surface metrics are defined; written into summary.json and the report, stated in the README
METRIC_DEFINITIONS = {
    "hd95_mm": "the larger of the two directed 95th percentiles (linear interpolation) of the distances from each "
               "surface voxel to the other mask's surface voxels, in mm, as MONAI's "
               "compute_hausdorff_distance(percentile=95)",
    "assd_mm": "the mean of both directions' surface-voxel distances pooled, in mm, as MONAI's "
               "compute_average_surface_distance(symmetric=True)",
    "surface_dice": "normalised surface Dice (Nikolov et al. 2021): the area of both surfaces within the class's "
                    "tolerance of the other surface over their total area, with DeepMind's area-weighted surface "
                    "elements, as MONAI's compute_surface_dice(use_subvoxels=True)",
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
                  tolerance_mm: float, *, worst_case_distances: bool = False) -> dict[str, float]:
    """Every metric of :data:`CASE_METRICS` for one class of one case.

    Args:
        pred: predicted mask of the class, boolean ``(X, Y, Z)``.
        truth: true mask of the class, same shape and grid.
        spacing: mm per voxel along each axis (anisotropy respected).
        tolerance_mm: the surface-Dice tolerance for this class.
        worst_case_distances: when exactly one mask is empty, give HD95 and ASSD the volume's
            diagonal in mm (:func:`volume_diagonal_mm`) instead of NaN.

    Returns:
        ``{metric: value}``; missing values are NaN (see :func:`empty_conventions`).
    """
    dice, iou = overlap_scores(pred, truth)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume_pred = np.count_nonzero(pred) * voxel_ml
    volume_true = np.count_nonzero(truth) * voxel_ml
    one_empty = (volume_pred > 0) != (volume_true > 0)
    worst = volume_diagonal_mm(pred.shape, spacing) if worst_case_distances and one_empty else None
    box = bounding_box(pred | truth, margin=1)  # found once: both surface computations run on the box
    if box is not None:
        pred, truth = pred[box], truth[box]
    distances = surface_distances(pred, truth, spacing)
    return {
        "dice": dice, "iou": iou,
        "hd95_mm": hausdorff95(distances) if worst is None else worst,
        "assd_mm": average_symmetric_surface_distance(distances) if worst is None else worst,
        "surface_dice": normalised_surface_dice(surface_elements(pred, truth, spacing, tolerance_mm), tolerance_mm),
        "volume_pred_ml": volume_pred, "volume_true_ml": volume_true,
        "volume_error_ml": volume_pred - volume_true,
        "volume_error_rel": (volume_pred - volume_true) / volume_true if volume_true else math.nan,
    }


def score_case(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], classes: dict[int, str],
               tolerance_mm: dict[int, float], *, worst_case_distances: bool = False) -> dict[int, dict[str, float]]:
    """All metrics of every foreground class of one case.

    Args:
        pred: predicted class indices ``(X, Y, Z)``.
        truth: true class indices, same shape and grid.
        spacing: mm per voxel along each axis.
        classes: ``{class index: name}`` of the classes to score (background excluded).
        tolerance_mm: surface-Dice tolerance per class index.
        worst_case_distances: see :func:`class_metrics`.

    Returns:
        ``{class index: {metric: value}}``.
    """
    return {cls: class_metrics(pred == cls, truth == cls, spacing, tolerance_mm[cls],
                               worst_case_distances=worst_case_distances) for cls in classes}
