"""Small mask helpers shared by the predict and evaluate stages."""

from __future__ import annotations

import numpy as np

from radseg.transforms.containment import grown_box


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel, grown by ``margin`` and clipped to the array.

    One implementation with :func:`radseg.transforms.containment.grown_box` (which the transforms,
    below the pipeline, use with a margin per axis).

    Args:
        mask: a boolean array, any number of dimensions.
        margin: voxels added on each side.

    Returns:
        One slice per axis, or None when the mask is empty.
    """
    return grown_box(mask, margin)
