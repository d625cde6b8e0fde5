"""The region the sliding windows must cover: the body, its holes filled, grown by half a window.

A window is skipped only where it cannot hold anything to segment. Thresholding alone is not
enough: lung, airway and bowel gas are below the CT body threshold, and a z-scored MRI is negative
inside the body, so windows lying in them would be skipped and their organ voxels labelled
background. Hence: CT counts voxels above the body threshold; MRI counts every voxel that differs
from the scan's empty background (its minimum, which a zero-filled or z-scored scan holds exactly);
holes are filled in each axial slice; and the mask is dilated by half a window so the network also
sees the context at the body's edge. Only truly empty space far from the body is skipped.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

#: MRI voxels within this fraction of the intensity range of the minimum count as empty background
#: (resampling a constant background can move it by a rounding error, never by more)
MRI_EMPTY_TOLERANCE = 1e-5
#: in-plane connectivity only (RAS grid: the last axis is z), so holes are filled per axial slice
_AXIAL = ndimage.generate_binary_structure(2, 1)[:, :, None]


def body_mask(raw: torch.Tensor, modality: str, body_threshold_hu: float) -> torch.Tensor:
    """The body on the resampled, not yet normalised image, with its holes filled per axial slice.

    Args:
        raw: ``(C, X, Y, Z)`` intensities on the RAS grid (HU for CT).
        modality: "CT" or "MRI".
        body_threshold_hu: HU above which a CT voxel is body.

    Returns:
        ``(X, Y, Z)`` bool.
    """
    values = raw.detach().float().cpu()
    if modality == "CT":
        body = (values > body_threshold_hu).any(dim=0)
    else:
        low = values.amin(dim=tuple(range(1, values.ndim)), keepdim=True)
        high = values.amax(dim=tuple(range(1, values.ndim)), keepdim=True)
        body = ((values - low) > (high - low) * MRI_EMPTY_TOLERANCE).any(dim=0)
    return torch.from_numpy(fill_holes_per_slice(body.numpy()))


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` on each axial slice (last axis) of ``(X, Y, Z)`` at once."""
    return ndimage.binary_fill_holes(mask, structure=_AXIAL)


def window_cover(body: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``body`` ``(X, Y, Z)`` dilated by half a window along each axis (a box, per axis).

    Args:
        body: bool mask.
        window: the sliding-window size, one per axis.

    Returns:
        bool mask of the same shape.
    """
    size = [2 * (int(w) // 2) + 1 for w in window]
    grown = ndimage.maximum_filter(body.numpy().astype(np.uint8), size=size, mode="constant", cval=0)
    return torch.from_numpy(grown.astype(bool))
