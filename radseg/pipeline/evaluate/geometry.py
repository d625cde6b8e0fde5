"""Prediction and truth on one physical grid: the check, and nearest-neighbour resampling onto the truth.

Two grids are the same when their shapes are equal and every corner voxel's centre lies at the
same world position within :data:`GRID_TOLERANCE_MM` (which covers spacing, origin and direction
at once, and forgives the float32 rounding of NIfTI headers).
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from radseg.transforms.io import ImageHeader

GRID_TOLERANCE_MM = 0.01


def grid_difference(pred: ImageHeader, truth: ImageHeader) -> str | None:
    """How the prediction's grid differs from the truth's, or None when they are the same.

    Args:
        pred: the prediction's header (:func:`radseg.transforms.io.read_header`).
        truth: the truth's header.

    Returns:
        A phrase naming each difference (shape, spacing, origin, direction), or None.
    """
    if pred.shape == truth.shape and _corner_shift(pred, truth) <= GRID_TOLERANCE_MM:
        return None
    parts = []
    if pred.shape != truth.shape:
        parts.append(f"shape {list(pred.shape)} vs {list(truth.shape)}")
    if not np.allclose(pred.spacing, truth.spacing, atol=1e-4):
        parts.append(f"spacing {_fmt(pred.spacing)} vs {_fmt(truth.spacing)} mm")
    if not np.allclose(pred.origin, truth.origin, atol=GRID_TOLERANCE_MM):
        parts.append(f"origin {_fmt(pred.origin)} vs {_fmt(truth.origin)} mm (LPS)")
    if not np.allclose(np.ravel(pred.direction), np.ravel(truth.direction), atol=1e-4):
        parts.append(f"direction {_fmt(np.ravel(pred.direction))} vs {_fmt(np.ravel(truth.direction))}")
    if not parts:
        parts.append(f"voxel positions differ by up to {_corner_shift(pred, truth):.3f} mm")
    return "; ".join(parts)


def resample_to(moving: sitk.Image, reference: sitk.Image, *, linear: bool = False) -> sitk.Image:
    """``moving`` sampled on ``reference``'s grid (nearest neighbour, or linear for probabilities)."""
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    return sitk.Resample(moving, reference, sitk.Transform(), interpolator, 0.0, moving.GetPixelID())


def _corner_shift(a: ImageHeader, b: ImageHeader) -> float:
    """Largest distance (mm) between the world positions of the same corner voxel of two grids."""
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in a.shape])), dtype=np.float64)
    return float(np.abs(_world(a, corners) - _world(b, corners)).max())


def _world(header: ImageHeader, index: np.ndarray) -> np.ndarray:
    direction = np.asarray(header.direction, dtype=np.float64).reshape(3, 3)
    return index * np.asarray(header.spacing) @ direction.T + np.asarray(header.origin)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
