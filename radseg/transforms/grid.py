"""Voxel grids: do two scans put their voxels at the same places in the world?

A mask written by a NIfTI converter or a viewer often stores the voxels of its scan in another
array order: an axis flipped (dcm2niix writes LAS where the DICOM array is LPS) or axes swapped.
Both are reoriented to RAS before training, so what matters is the physical grid (the set of voxel
centres), not the array order. :func:`grid_differences` compares that grid.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


def index_to_world(header: Any) -> tuple[np.ndarray, np.ndarray]:
    """The 3x3 linear part and the origin of a header's voxel-index -> world (LPS, mm) map."""
    direction = np.asarray(header.direction, dtype=np.float64).reshape(3, 3)
    return direction @ np.diag(np.asarray(header.spacing[:3], dtype=np.float64)), np.asarray(
        header.origin[:3], dtype=np.float64)


def axis_correspondence(header: Any, reference: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The signed permutation taking ``header``'s voxel indices to ``reference``'s, if there is one.

    Returns:
        ``(matrix, offset)`` with ``reference_index = matrix @ index + offset`` (``matrix`` a
        3x3 signed permutation, ``offset`` 0 or ``size - 1`` per axis), or None when the axes are
        not a permutation and flips of each other or the sizes do not match after permuting.
    """
    linear, _ = index_to_world(header)
    ref_linear, _ = index_to_world(reference)
    mapping = np.linalg.solve(ref_linear, linear)
    matrix = np.rint(mapping)
    is_permutation = (np.all(np.abs(matrix).sum(axis=0) == 1) and np.all(np.abs(matrix).sum(axis=1) == 1)
                      and np.all(np.abs(mapping - matrix) < 0.5))
    if not is_permutation:
        return None
    shape, ref_shape = np.asarray(header.shape[:3]), np.asarray(reference.shape[:3])
    if not np.array_equal(np.abs(matrix) @ shape, ref_shape):
        return None
    offset = np.where(matrix.sum(axis=1) < 0, ref_shape - 1, 0)
    return matrix, offset


def grid_differences(header: Any, reference: Any, tolerance: float) -> list[str]:
    """How ``header``'s voxel grid differs from ``reference``'s, ignoring array order; [] when same.

    Two grids are the same when their voxel centres coincide: the index axes may be permuted and
    flipped, but every corner voxel must land on the matching corner of the reference within
    ``tolerance`` mm (since both maps are affine, every other voxel then lands too).

    Args:
        header, reference: objects with ``shape``, ``spacing``, ``origin`` and ``direction``
            (3 spatial axes, like :class:`radseg.transforms.io.ImageHeader`).
        tolerance: largest distance (mm) allowed between matching voxel centres.

    Returns:
        Human-readable differences (shape, spacing, origin, direction), empty when the grids match.
    """
    found = axis_correspondence(header, reference)
    if found is not None:
        matrix, offset = found
        linear, origin = index_to_world(header)
        ref_linear, ref_origin = index_to_world(reference)
        corners = np.asarray(list(itertools.product(*[(0, s - 1) for s in header.shape[:3]])), dtype=np.float64)
        mine = corners @ linear.T + origin
        theirs = (corners @ matrix.T + offset) @ ref_linear.T + ref_origin
        distance = float(np.linalg.norm(mine - theirs, axis=1).max())
        if distance <= tolerance:
            return []
        return [f"voxel centres up to {distance:.3g} mm away from the image's ({_describe(header, reference)})"]
    return [_describe(header, reference)]


def _describe(header: Any, reference: Any) -> str:
    """Shape, spacing, origin and direction side by side (what a person compares by eye)."""
    parts = []
    if tuple(header.shape[:3]) != tuple(reference.shape[:3]):
        parts.append(f"shape {tuple(header.shape[:3])} vs image {tuple(reference.shape[:3])}")
    for name in ("spacing", "origin", "direction"):
        mine = np.asarray(getattr(header, name), dtype=float).ravel()
        theirs = np.asarray(getattr(reference, name), dtype=float).ravel()
        if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=0.0, atol=1e-6):
            parts.append(f"{name} {_fmt(mine)} vs image {_fmt(theirs)}")
    return "; ".join(parts) or "grids differ"


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in np.asarray(values).ravel()) + ")"


def label_on_image_grid(label: Any, image: Any) -> Any:
    """A label (SimpleITK image) in the image's array order, when it lies on the image's voxels.

    A label stored with flipped or permuted axes is resampled onto the image with nearest
    neighbour; since the voxel centres coincide (check-data checks that), every voxel is copied,
    none interpolated. A label already in the image's array order is returned as it is.

    Args:
        label: the label, a 3D SimpleITK image.
        image: the image (3D, or 4D with channels on the 4th axis: its first 3 axes count).
    """
    import SimpleITK as sitk

    reference = image
    if image.GetDimension() > 3:  # a 4D image's spatial grid is its first volume
        size = list(image.GetSize())
        reference = sitk.Extract(image, size[:3] + [0] * (len(size) - 3), [0] * len(size))
    same = (label.GetSize() == reference.GetSize()
            and np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-6)
            and np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-9)
            and np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-9))
    if same:
        return label
    return sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
