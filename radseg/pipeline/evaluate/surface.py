"""Surface distances between two binary masks in mm, found on the masks' bounding box (fast on CPU).

MONAI's ``compute_hausdorff_distance`` and ``compute_surface_dice`` took 13 s and 5 s for two
classes of a 512x512x300 CT on 2 cores (each call finds the edges of the whole volume again). Here
the surfaces are found once per class, on the bounding box of the two masks, with six shifted
comparisons instead of a morphological erosion, and the nearest-surface distances come from a k-d
tree over the surface voxels' mm coordinates (exact, like a distance transform, but 10x faster than
``scipy.ndimage.distance_transform_edt`` on a liver's 9 M-voxel box: 0.3 s against 3.6 s). Both
directions' distances serve HD95 and ASSD together; surface Dice uses area-weighted surface elements
(below). The definitions are MONAI's (checked against it in ``tests/pipeline/evaluate/test_metrics.py``):

- a mask's surface is its voxels with a face-neighbour outside it (``mask ^ binary_erosion(mask)``,
  the volume's border counting as outside);
- the distance of a surface voxel is the Euclidean distance in mm (voxel spacing applied per axis)
  from its centre to the nearest surface voxel centre of the other mask;
- HD95 is the larger of the two directed 95th percentiles (linear interpolation), as MONAI's
  ``compute_hausdorff_distance(percentile=95)``, ASSD the mean of both directions' distances pooled.

Normalised surface Dice (NSD) is the DeepMind definition (Nikolov et al. 2021, the
``surface-distance`` package; MONAI's ``compute_surface_dice(use_subvoxels=True)``), not a count of
voxels: each mask's surface is a set of surface elements, one per corner of the voxel grid whose
2x2x2 neighbourhood is partly inside the mask, each weighted by its area in mm² (marching-cubes
normals scaled by the spacing; MONAI's table). NSD is the area of both surfaces within the tolerance
of the other surface divided by their total area. Counting voxels instead gives every surface voxel
the same weight, whatever its area (at 0.8 x 0.8 x 3.0 mm a face in the slice plane is 0.64 mm², a
face across the slices 2.4 mm²): on two offset spheres at that spacing (1 mm tolerance) the count
gives 0.521, the area 0.570. NSD needs only which elements lie within the tolerance, so
the k-d tree search stops there: ``score_case`` on a 512x512x300 CT with 3 classes
(``benchmarks/evaluate_speed.py``'s case) took 1.2-1.3 s of CPU against 0.8 s with the voxel count,
while MONAI's ``compute_surface_dice(use_subvoxels=True)`` alone took 13-16 s (2 shared cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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
    pred_points, truth_points = (_points_mm(surface(mask[box]), spacing) for mask in (pred, truth))
    return SurfaceDistances(_nearest(truth_points, pred_points), _nearest(pred_points, truth_points))


def _points_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """The mm coordinates ``(N, ndim)`` of a mask's True voxels (or grid corners)."""
    return np.argwhere(mask) * np.asarray(spacing, dtype=np.float64)


def _nearest(target: np.ndarray, sources: np.ndarray, within_mm: float = np.inf) -> np.ndarray:
    """Euclidean distance (mm) from each point of ``sources`` to the nearest point of ``target``.

    Distances beyond ``within_mm`` come back as ``inf``: the k-d tree stops searching there (several
    times faster when only the distances within a tolerance matter).
    """
    if len(sources) == 0:
        return np.empty(0)
    if len(target) == 0:
        return np.full(len(sources), np.inf)
    # scipy's bound is exclusive (and squared inside): raised a little so a distance equal to within_mm
    # is kept; the caller still compares with within_mm itself
    bound = within_mm * (1 + 1e-9) + 1e-9 if np.isfinite(within_mm) else np.inf
    return cKDTree(target, leafsize=32).query(sources, k=1, workers=-1, distance_upper_bound=bound)[0]


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


@dataclass(frozen=True)
class SurfaceElements:
    """The DeepMind surface elements of two masks: each one's distance (mm) to the other surface and area (mm²).

    Attributes:
        pred_to_truth, truth_to_pred: one distance per surface element of that mask (empty if the
            mask is empty, ``inf`` if only the other one is, or if beyond the ``within_mm`` asked for).
        pred_areas, truth_areas: the area of each of those elements.
    """

    pred_to_truth: np.ndarray
    truth_to_pred: np.ndarray
    pred_areas: np.ndarray
    truth_areas: np.ndarray


def surface_elements(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...],
                     within_mm: float = np.inf) -> SurfaceElements:
    """Surface elements of two binary masks, their areas and their distances to the other surface.

    Args:
        pred: predicted mask, boolean ``(X, Y, Z)`` (or ``(X, Y)``: contour lengths instead of areas).
        truth: true mask, same shape.
        spacing: mm per voxel along each axis.
        within_mm: distances beyond it are reported as ``inf`` (faster; NSD needs no more).

    Returns:
        Distances and areas, as MONAI's ``get_edge_surface_distance(use_subvoxels=True)``.
    """
    box = bounding_box(pred | truth)
    if box is None:
        return SurfaceElements(*(np.empty(0),) * 4)
    # one voxel of background all round, so the masks' outer faces have their elements
    codes = [_neighbour_codes(np.pad(mask[box], 1)) for mask in (pred, truth)]
    table = _area_table(tuple(float(s) for s in spacing))
    edges = [(code != 0) & (code != table.size - 1) for code in codes]
    pred_areas, truth_areas = (table[code[edge]] for code, edge in zip(codes, edges))  # in argwhere's order
    pred_points, truth_points = (_points_mm(edge, spacing) for edge in edges)
    return SurfaceElements(_nearest(truth_points, pred_points, within_mm),
                           _nearest(pred_points, truth_points, within_mm), pred_areas, truth_areas)


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """The 2x2x2 (or 2x2) neighbourhood code at each grid corner, bits weighted as MONAI's ``ENCODING_KERNEL``.

    The corner at offset ``(i, j, k)`` weighs ``2 ** (7 - 4i - 2j - k)``, which factors per axis, so the
    code is built one axis at a time (last axis first): three passes instead of eight.
    """
    code = mask.view(np.uint8)
    for axis in reversed(range(mask.ndim)):
        weight = np.uint8(1 << (mask.ndim - 1 - axis))  # the shift of this axis's "0" corner
        low = [slice(None)] * mask.ndim
        high = [slice(None)] * mask.ndim
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        code = (code[tuple(low)] << weight) | code[tuple(high)]
    return code


@lru_cache(maxsize=16)
def _area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Area (mm², or length in 2D) of the surface element of each neighbourhood code at this spacing."""
    from monai.metrics.utils import get_code_to_measure_table

    table, _ = get_code_to_measure_table(spacing)
    return np.asarray(table, dtype=np.float64)


def normalised_surface_dice(elements: SurfaceElements, tolerance_mm: float) -> float:
    """Area of both surfaces within ``tolerance_mm`` of the other surface, over their total area.

    Returns:
        1 for identical masks, 0 when exactly one mask is empty, NaN when both are empty.
    """
    total = elements.pred_areas.sum() + elements.truth_areas.sum()
    if elements.pred_areas.size + elements.truth_areas.size == 0 or total == 0:
        return float("nan")
    within = elements.pred_areas[elements.pred_to_truth <= tolerance_mm].sum()
    within += elements.truth_areas[elements.truth_to_pred <= tolerance_mm].sum()
    return float(within / total)
