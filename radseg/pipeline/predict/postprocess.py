"""Clean-ups of a label map on the scan's own grid: largest component, filled holes, small bits dropped.

Each works class by class inside the class's bounding box (plus a one-voxel margin), so a liver in
a 512x512x800 scan labels a few million voxels, not the whole grid. Connectivity is 26 voxels in
3D (scipy's full structuring element), nnU-Net's choice for "largest component".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radseg.pipeline.core.masks import bounding_box

_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class PostprocessConfig:
    """Which clean-ups to apply (all off by default).

    Attributes:
        largest_component: keep only the largest connected component of each class.
        fill_holes: fill background cavities enclosed by a class with that class.
        min_component_ml: drop components smaller than this many mL (0: keep all).
    """

    largest_component: bool = False
    fill_holes: bool = False
    min_component_ml: float = 0.0

    @property
    def active(self) -> bool:
        """True when any clean-up is on."""
        return self.largest_component or self.fill_holes or self.min_component_ml > 0


def postprocess(labels: np.ndarray, num_classes: int, voxel_ml: float, cfg: PostprocessConfig) -> np.ndarray:
    """Apply the configured clean-ups to each foreground class, in place.

    Args:
        labels: uint8 label map, any axis order.
        num_classes: classes including background.
        voxel_ml: volume of one voxel in mL (for ``min_component_ml``).
        cfg: which clean-ups.

    Returns:
        ``labels`` (modified in place).
    """
    if not cfg.active:
        return labels
    min_voxels = cfg.min_component_ml / voxel_ml if voxel_ml > 0 else 0.0
    for value in range(1, num_classes):
        box = bounding_box(labels == value, margin=1)
        if box is None:
            continue
        region = labels[box]
        mask = region == value
        keep = _components(mask, cfg.largest_component, min_voxels)
        region[mask & ~keep] = 0
        if cfg.fill_holes:
            holes = ndimage.binary_fill_holes(keep) & ~keep & (region == 0)
            region[holes] = value
    return labels


def _components(mask: np.ndarray, largest: bool, min_voxels: float) -> np.ndarray:
    """The components of ``mask`` to keep."""
    if not largest and min_voxels <= 0:
        return mask
    components, count = ndimage.label(mask, structure=_FULL)
    if count <= 1 and min_voxels <= 0:
        return mask
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    keep_ids = np.zeros(count + 1, dtype=bool)
    if largest:
        keep_ids[int(np.argmax(sizes))] = True
    else:
        keep_ids[:] = True
    keep_ids &= sizes >= min_voxels
    keep_ids[0] = False
    return keep_ids[components]
