"""Small mask helpers shared by the predict and evaluate stages."""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel, grown by ``margin`` and clipped to the array.

    Args:
        mask: a boolean array, any number of dimensions.
        margin: voxels added on each side.

    Returns:
        One slice per axis, or None when the mask is empty.
    """
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)
