"""Axial slices from a preprocessed volume: a resized slice stack, per-slice labels, 2.5D context.

The functional layer (:func:`slice_stack`, :func:`slice_presence`, :func:`slice_z_mm`,
:func:`with_context`) works on tensors; :class:`SliceStack` is the array transform and
:class:`SliceStackd` the dictionary wrapper appended to the one preprocessing chain, so the
cache holds the small slice stacks of the 2D branch instead of whole volumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, Transform

from radseg import keys
from radseg.errors import DataError


def slice_stack(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Every axial slice of a RAS volume, resized in-plane (bilinear, antialiased).

    Args:
        image: ``(C, X, Y, Z)``, z the superior axis (after ``Orientationd("RAS")``).
        size: the in-plane size ``(H, W)`` (``train.roi_size``).

    Returns:
        ``(Z, C, H, W)`` in the image's dtype.
    """
    plain = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    planes = plain.permute(3, 0, 1, 2).float()
    resized = F.interpolate(planes, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized.to(image.dtype)


def slice_presence(label: torch.Tensor | np.ndarray, values: Sequence[int], pixel_area_mm2: float,
                   min_area_mm2: float) -> np.ndarray:
    """Which axial slices hold at least ``min_area_mm2`` (and more than nothing) of ``values``.

    Args:
        label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` class indices.
        values: the label values that count (e.g. liver and tumour for "liver present").
        pixel_area_mm2: in-plane area of one voxel, x spacing times y spacing.
        min_area_mm2: the smallest area that counts as present.

    Returns:
        ``(Z,)`` uint8, 1 where present.
    """
    array = np.asarray(label)
    array = array[0] if array.ndim == 4 else array
    area = np.isin(array, list(values)).sum(axis=(0, 1)) * float(pixel_area_mm2)
    return ((area > 0) & (area >= min_area_mm2)).astype(np.uint8)


def slice_z_mm(affine: torch.Tensor | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World z (RAS mm, superior positive) of the centre of each axial slice of a ``(X, Y, Z)`` grid."""
    affine = np.asarray(affine, dtype=np.float64)
    x, y, z = (int(s) for s in shape)
    index = np.stack([np.full(z, (x - 1) / 2), np.full(z, (y - 1) / 2), np.arange(z), np.ones(z)])
    return (affine @ index)[2]


def with_context(stack: torch.Tensor, indices: Sequence[int] | torch.Tensor, context: int) -> torch.Tensor:
    """Slices ``indices`` of a stack with their ``context // 2`` neighbours on each side as channels.

    Neighbours beyond the first or last slice repeat the edge slice.

    Args:
        stack: ``(Z, C, H, W)``.
        indices: slice indices.
        context: odd number of slices per sample (1 = the slice alone).

    Returns:
        ``(N, context * C, H, W)``; channel ``j * C + c`` is channel c of slice ``index - context // 2 + j``.
    """
    index = torch.as_tensor(indices, dtype=torch.long).reshape(-1, 1)
    offsets = torch.arange(context) - context // 2
    neighbours = (index + offsets).clamp(0, stack.shape[0] - 1)
    return stack[neighbours].flatten(1, 2)


def check_thickness(num_slices: int, context: int, where: str) -> None:
    """Refuse a volume thinner than the 2.5D context.

    Raises:
        DataError: fewer axial slices than ``context``, naming ``where`` and the fix.
    """
    if num_slices < context:
        raise DataError(f"{where} has {num_slices} axial slice(s) after preprocessing but slices.context_slices="
                        f"{context} needs at least {context}; fix: set slices.context_slices=1 (or a smaller odd "
                        "number), a finer preprocess.target_spacing along z, or leave this scan out")


class SliceStack(Transform):
    """Array transform: ``(C, X, Y, Z)`` -> ``(Z, C, H, W)`` (see :func:`slice_stack`)."""

    def __init__(self, size: Sequence[int]):
        self.size = [int(s) for s in size]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return slice_stack(image, self.size)


class SliceStackd(MapTransform):
    """Dictionary transform: the image as a resized slice stack, per-slice labels, slice positions.

    Input: ``IMAGE`` ``(C, X, Y, Z)`` and, with ``liver_values``, ``LABEL`` ``(1, X, Y, Z)``
    MetaTensors on the RAS grid. Output: ``IMAGE`` ``(Z, C, H, W)`` (plain tensor),
    ``SLICE_Z_MM`` ``(Z,)`` float64 and, when labelled, ``SLICE_LIVER`` and ``SLICE_LESION``
    ``(Z,)`` uint8; the 3D ``LABEL`` is dropped (the cache keeps only what the 2D branch uses).

    Args:
        size: in-plane size ``(H, W)``.
        liver_values, lesion_values: label values of liver and lesion; None without labels.
        min_liver_area_mm2, min_lesion_area_mm2: smallest areas that count as present.
        context: the 2.5D context, checked against the number of slices.
    """

    def __init__(self, size: Sequence[int], liver_values: Sequence[int] | None = None,
                 lesion_values: Sequence[int] | None = None, min_liver_area_mm2: float = 0.0,
                 min_lesion_area_mm2: float = 0.0, context: int = 1):
        super().__init__([keys.IMAGE])
        self.stack = SliceStack(size)
        self.liver_values = None if liver_values is None else [int(v) for v in liver_values]
        self.lesion_values = [int(v) for v in lesion_values or []]
        self.min_liver_area_mm2 = float(min_liver_area_mm2)
        self.min_lesion_area_mm2 = float(min_lesion_area_mm2)
        self.context = int(context)

    def __call__(self, data):
        d = dict(data)
        image = d[keys.IMAGE]
        where = f"case {d.get(keys.CASE_ID, '?')} ({_source(image)})"
        check_thickness(int(image.shape[-1]), self.context, where)
        d[keys.SLICE_Z_MM] = slice_z_mm(image.affine, image.shape[1:])
        if self.liver_values is not None:
            label = d.pop(keys.LABEL)
            spacing = np.asarray(label.pixdim, dtype=np.float64)
            area = float(spacing[0] * spacing[1])
            d[keys.SLICE_LIVER] = slice_presence(label, self.liver_values, area, self.min_liver_area_mm2)
            d[keys.SLICE_LESION] = slice_presence(label, self.lesion_values, area, self.min_lesion_area_mm2)
        d[keys.IMAGE] = self.stack(image)
        return d


def _source(image) -> str:
    meta = getattr(image, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "image"))
