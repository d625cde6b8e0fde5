"""How far each connected component of one class lies from another class, in mm.

``radseg plan`` measures it on the training labels (does every tumour touch or lie in the liver?),
``radseg predict`` uses it to drop predicted components lying where no training label had one.

A component touching the other class (a 26-neighbour of it) is at 0 mm: labels are exclusive, so a
tumour inside the liver is not made of liver voxels, it touches them. Any other component's distance
is the smallest distance between its voxel centres and the other class's, in mm with each axis's
spacing. It comes from a k-d tree over the other class's surface voxels (the nearest voxel of a
mask to a point outside it always has a face-neighbour outside it), queried only with the voxels
of the components that do not touch: labels in which every component touches cost one dilation
of the components' box, and no distance is computed at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

_FULL = np.ones((3, 3, 3), dtype=bool)


def component_distances(components: np.ndarray, count: int, other: np.ndarray,
                        spacing: Sequence[float]) -> np.ndarray:
    """The distance (mm) from each component to the mask ``other``.

    Args:
        components: ``(Z, Y, X)`` integer map of components ``1..count`` (0 elsewhere), e.g. from
            ``ndimage.label`` with 26-connectivity; disjoint from ``other``.
        count: number of components.
        other: boolean mask of the same shape.
        spacing: mm per voxel along the array's axes (the same order as the array's).

    Returns:
        ``(count,)`` floats: 0 for a component touching ``other``, the smallest centre-to-centre
        distance for the others, ``inf`` for all when ``other`` is empty.
    """
    distances = np.full(count, np.inf)
    other_box = grown_box(other, 1)
    if count == 0 or other_box is None:
        return distances
    box = grown_box(components > 0, 1)
    near = components[box][ndimage.binary_dilation(other[box], _FULL)]
    touching = np.unique(near[near > 0])
    distances[touching - 1] = 0.0
    far = np.setdiff1d(np.arange(1, count + 1), touching)
    if far.size == 0:
        return distances
    tree = cKDTree(_surface_mm(other, other_box, spacing))
    region = components[box]
    where = np.nonzero(np.isin(region, far))
    points = (np.stack(where, axis=1) + [s.start for s in box]) * np.asarray(spacing, dtype=float)
    nearest, _ = tree.query(points)
    distances[far - 1] = ndimage.minimum(nearest, labels=region[where], index=far)
    return distances


def _surface_mm(mask: np.ndarray, box: tuple[slice, ...], spacing: Sequence[float]) -> np.ndarray:
    """Coordinates (mm) of the voxels of ``mask`` with a face-neighbour outside it."""
    region = mask[box]
    surface = region & ~ndimage.binary_erosion(region)
    return (np.argwhere(surface) + [s.start for s in box]) * np.asarray(spacing, dtype=float)


def grown_box(mask: np.ndarray, margin: Union[int, Sequence[int]] = 0) -> Union[tuple[slice, ...], None]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (one for all axes, or one per axis),
    clipped to the array, or None when the mask is empty (the pipeline's
    ``radseg.pipeline.core.masks.bounding_box`` is this one)."""
    margins = [margin] * mask.ndim if isinstance(margin, (int, np.integer)) else list(margin)
    box = []
    for axis, margin in enumerate(margins):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)
