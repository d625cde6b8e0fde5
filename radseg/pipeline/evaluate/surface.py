"""Surface distances between two binary masks in mm, found on the masks' bounding box (fast on CPU).

MONAI's ``compute_hausdorff_distance`` and ``compute_surface_dice`` took 13 s and 5 s for two
classes of a 512x512x300 CT on 2 cores (each call finds the edges of the whole volume again). Here
the surfaces are found once per class, on the bounding box of the two masks, with six shifted
comparisons instead of a morphological erosion, and the nearest-surface distances come from a k-d
tree over the surface voxels' mm coordinates (exact, like a distance transform, but 10x faster than
``scipy.ndimage.distance_transform_edt`` on a liver's 9 M-voxel box: 0.3 s against 3.6 s). Both
directions' distances serve HD95, ASSD and surface Dice together. The definitions are
MONAI's (checked against it in ``tests/pipeline/evaluate/test_surface.py``):

- a mask's surface is its voxels with a face-neighbour outside it (``mask ^ binary_erosion(mask)``,
  the volume's border counting as outside);
- the distance of a surface voxel is the Euclidean distance in mm (voxel spacing applied per axis)
  from its centre to the nearest surface voxel centre of the other mask;
- HD95 is the larger of the two directed 95th percentiles (linear interpolation), ASSD the mean of
  both directions' distances pooled, normalised surface Dice the fraction of both surfaces' voxels
  within the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from radseg.pipeline.core.masks import bounding_box


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances (mm) from each surface voxel of one mask to the other mask's surface.

    Attributes:
        pred_to_truth: one distance per surface voxel of the prediction (empty if it is empty).
        truth_to_pred: one distance per surface voxel of the truth (empty if it is empty).
    """

    pred_to_truth: np.ndarray
    truth_to_pred: np.ndarray

    @property
    def both_present(self) -> bool:
        """True when both masks have voxels (the distances are defined)."""
        return self.pred_to_truth.size > 0 and self.truth_to_pred.size > 0


def surface(mask: np.ndarray) -> np.ndarray:
    """The surface voxels of a binary mask: voxels with a face-neighbour outside the mask.

    The same as ``mask ^ scipy.ndimage.binary_erosion(mask)`` (voxels beyond the border count as
    outside), six times faster.
    """
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shifted in (slice(0, -2), slice(2, None)):
            index = [slice(1, -1)] * mask.ndim
            index[axis] = shifted
            interior &= padded[tuple(index)]
    return mask & ~interior


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> SurfaceDistances:
    """Distances between the surfaces of two binary masks, in mm.

    Args:
        pred: predicted mask, boolean, ``(X, Y, Z)`` (or any number of axes).
        truth: true mask, boolean, same shape.
        spacing: mm per voxel along each axis.

    Returns:
        Both directed distance sets; a direction is empty when its own mask is empty, and holds
        ``inf`` when only the other mask is empty (no surface to reach).
    """
    box = bounding_box(pred | truth, margin=1)
    if box is None:
        return SurfaceDistances(np.empty(0), np.empty(0))
    pred_surface, truth_surface = surface(pred[box]), surface(truth[box])
    return SurfaceDistances(
        _distances_to(truth_surface, pred_surface, spacing), _distances_to(pred_surface, truth_surface, spacing)
    )


def _distances_to(target: np.ndarray, sources: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Euclidean distance (mm) from each True voxel of ``sources`` to the nearest True voxel of ``target``."""
    if not sources.any():
        return np.empty(0)
    if not target.any():
        return np.full(int(np.count_nonzero(sources)), np.inf)
    scale = np.asarray(spacing, dtype=np.float64)
    tree = cKDTree(np.argwhere(target) * scale, leafsize=32)
    return tree.query(np.argwhere(sources) * scale, k=1, workers=-1)[0]


def hausdorff95(distances: SurfaceDistances) -> float:
    """95th-percentile Hausdorff distance (mm): the larger of the two directed 95th percentiles.

    Returns:
        NaN (missing) unless both masks have voxels.
    """
    if not distances.both_present:
        return float("nan")
    return float(max(np.percentile(distances.pred_to_truth, 95), np.percentile(distances.truth_to_pred, 95)))


def average_symmetric_surface_distance(distances: SurfaceDistances) -> float:
    """Mean of the surface distances of both directions pooled (mm); NaN unless both masks have voxels."""
    if not distances.both_present:
        return float("nan")
    return float(np.concatenate([distances.pred_to_truth, distances.truth_to_pred]).mean())


def normalised_surface_dice(distances: SurfaceDistances, tolerance_mm: float) -> float:
    """Fraction of both surfaces' voxels within ``tolerance_mm`` of the other surface.

    Returns:
        1 for identical masks, 0 when exactly one mask is empty, NaN when both are empty.
    """
    total = distances.pred_to_truth.size + distances.truth_to_pred.size
    if total == 0:
        return float("nan")
    within = np.count_nonzero(distances.pred_to_truth <= tolerance_mm)
    within += np.count_nonzero(distances.truth_to_pred <= tolerance_mm)
    return float(within / total)
