"""Whole-array facts the data check needs, each computed in one pass over one case's voxels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np


def count_non_finite(file: str | Path, array: np.ndarray) -> int:
    """NaN and infinite voxels of an image.

    ITK's NIfTI reader silently turns non-finite voxels into 0, so a NIfTI file is counted from
    nibabel's read of the same file; other formats from ``array``.

    Args:
        file: the image file the array was read from.
        array: its voxels as SimpleITK read them.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    if str(file).lower().endswith((".nii", ".nii.gz")):
        try:
            array = np.asanyarray(nib.load(str(file)).dataobj)
        except (OSError, ValueError, EOFError):  # SimpleITK read it; keep its array
            pass
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def unique_values(array: np.ndarray) -> np.ndarray:
    """Distinct values, sorted; a bincount for small non-negative integers (much faster than a sort)."""
    if np.issubdtype(array.dtype, np.integer) and array.size:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high < 2**16:
            return np.flatnonzero(np.bincount(array.ravel()))
    return np.unique(array)


def content_digest(array: np.ndarray) -> str:
    """A hash of the voxels, dtype and shape: equal digests mean identical images."""
    digest = hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16)
    digest.update(f"{array.dtype}{array.shape}".encode())
    return digest.hexdigest()
