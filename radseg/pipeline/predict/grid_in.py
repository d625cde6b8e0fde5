"""The way in, fast: orientation, body crop and resampling as views and one separable pass.

The inference chain's geometric steps (MONAI's ``Orientationd`` to RAS, ``CropForegroundd`` on the
body and ``Spacingd``, bilinear with border padding) only permute and flip the axes, cut a box and
resample along each axis. So, on the scan as read (SimpleITK's buffer, its own dtype, no float
copy of the whole volume):

* orientation is a strided view (flips and a transpose), with MONAI's affine update;
* the body box comes from two reductions of ``scan > threshold``, as ``CropForegroundd`` computes
  it (margin, clipped at the edges), and is another view;
* the output grid (shape and affine) is computed by MONAI's own ``zoom_affine`` and
  ``compute_shape_offset``, as ``Spacingd`` does; each output voxel's source position is then a
  per-axis ``scale * index + offset``, so trilinear interpolation with border clamping is three 1D
  interpolations. They run one output slice at a time (two source slices blended, then rows, then
  columns), the slices spread over threads.

The result equals the MONAI chain's to float rounding (tested against it), without its float32 copy
of the scan, its full-volume flip and crop copies, or its 3D sampling grid.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from monai.data.utils import AFFINE_TOL, affine_to_spacing, compute_shape_offset, zoom_affine

from radseg.transforms.preprocess import crop_threshold

#: output slices handed to a thread at a time
_CHUNK = 8


@dataclass(frozen=True)
class Resampled:
    """The scan on the preprocessed grid, before intensity normalisation.

    Attributes:
        image: ``(X', Y', Z')`` float32 in the scan's units (HU for CT).
        affine: 4x4 RAS affine of that grid (what ``Spacingd`` writes into the MetaTensor).
    """

    image: torch.Tensor
    affine: np.ndarray


def orient_crop_resample(array: np.ndarray, affine: np.ndarray, resolved) -> Resampled | None:
    """The chain's ``Orientationd``, ``CropForegroundd`` (if ``resolved.crop_foreground``) and ``Spacingd``.

    Args:
        array: the scan ``(X, Y, Z)`` as read, any real dtype and strides.
        affine: its 4x4 RAS affine.
        resolved: the model's :class:`radseg.transforms.fingerprint.ResolvedPreprocess`.

    Returns:
        The :class:`Resampled` scan, or None where the affine is sheared.
    """
    view, affine = orient_to_ras(array, np.asarray(affine, dtype=np.float64))
    if resolved.crop_foreground:
        start, end = body_box(view, crop_threshold(resolved), int(resolved.crop_margin))
        view = view[start[0]:end[0], start[1]:end[1], start[2]:end[2]]
        shift = np.eye(4)
        shift[:3, 3] = start
        affine = affine @ shift
    return resample(view, affine, resolved.target_spacing)


def orient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` ``(X, Y, Z)`` as a RAS view, and its affine, as MONAI's ``Orientation("RAS")`` makes them."""
    source = nib.io_orientation(affine)
    target = nib.orientations.axcodes2ornt("RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    ornt = nib.orientations.ornt_transform(source, target)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    view = array
    for axis, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            view = np.flip(view, axis)
    return view.transpose(np.argsort(ornt[:, 0])), new_affine


def body_box(array: np.ndarray, threshold: float, margin: int) -> tuple[list[int], list[int]]:
    """``CropForegroundd``'s box: voxels above ``threshold``, grown by ``margin``, clipped to the array.

    With no voxel above the threshold the whole array is the box (radseg's ``AboveThreshold``).
    """
    if np.issubdtype(array.dtype, np.integer):  # x > t is x > floor(t) for integers: no float copy
        info = np.iinfo(array.dtype)
        threshold = min(max(math.floor(threshold), info.min - 1), info.max)
        if threshold < info.min:
            return [0, 0, 0], list(array.shape)
        threshold = array.dtype.type(threshold)
    slabs = _slabs(array.shape[2], _threads())
    with ThreadPoolExecutor(len(slabs)) as pool:
        parts = list(pool.map(lambda s: _projections(array[:, :, s], threshold), slabs))
    plane = np.logical_or.reduce([p[0] for p in parts])
    along_z = np.concatenate([p[1] for p in parts])
    if not along_z.any():
        return [0, 0, 0], list(array.shape)
    start, end = [], []
    for axis, hits in enumerate((plane.any(axis=1), plane.any(axis=0), along_z)):
        where = np.flatnonzero(hits)
        start.append(max(int(where[0]) - margin, 0))
        end.append(min(int(where[-1]) + 1 + margin, array.shape[axis]))
    return start, end


def _projections(part: np.ndarray, threshold) -> tuple[np.ndarray, np.ndarray]:
    above = part > threshold
    return above.any(axis=2), above.any(axis=(0, 1))


def resample(array: np.ndarray, affine: np.ndarray, spacing) -> Resampled | None:
    """``Spacingd(pixdim=spacing, mode="bilinear", padding_mode="border")`` on a RAS view.

    Args:
        array: ``(X, Y, Z)`` any real dtype, any strides (a view of the scan).
        affine: its 4x4 affine.
        spacing: target spacing (mm) per axis.

    Returns:
        The :class:`Resampled` image and affine; None for a sheared affine (not separable; the
        caller runs MONAI's chain instead).
    """
    affine = np.asarray(affine, dtype=np.float64)
    target = np.atleast_1d(np.asarray(spacing, dtype=np.float64))[:3]
    target = np.concatenate([target, np.repeat(target[-1:], 3 - target.size)])  # Spacing pads with the last value
    current = affine_to_spacing(affine, 3, target.dtype)
    keep = np.abs(current - target) <= AFFINE_TOL  # Spacingd keeps a spacing already at the target
    target[keep] = current[keep]
    new_affine = zoom_affine(affine, target, diagonal=False)
    shape, offset = compute_shape_offset(array.shape, affine, new_affine, False)
    new_affine[:3, 3] = offset[:3]
    shape = tuple(int(s) for s in shape)
    index_map = np.linalg.solve(affine, new_affine)  # output index -> source index
    if shape == tuple(array.shape) and (np.allclose(affine, new_affine, atol=AFFINE_TOL)
                                        or np.allclose(index_map, np.eye(4), atol=AFFINE_TOL)):
        # Spacingd leaves such a scan as it is, with its own affine (a spacing within about 0.1% of the target)
        # always a copy: ``array`` may be a view of a SimpleITK buffer freed once the caller drops the image
        return Resampled(image=torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True)), affine=affine)
    if np.abs(index_map[:3, :3] - np.diag(np.diag(index_map[:3, :3]))).max() > 1e-6:
        return None  # a sheared affine: not axis by axis
    axes = [_axis(index_map[i, i], index_map[i, 3], shape[i], array.shape[i]) for i in range(3)]
    out = np.empty(shape, dtype=np.float32)
    chunks = [range(k, min(k + _CHUNK, shape[2])) for k in range(0, shape[2], _CHUNK)]

    def run(ks: range) -> None:
        for k in ks:
            out[:, :, k] = _slice(array, axes, k)

    with ThreadPoolExecutor(min(_threads(), len(chunks))) as pool:
        list(pool.map(run, chunks))
    return Resampled(image=torch.from_numpy(out), affine=new_affine)


def _axis(scale: float, offset: float, size: int, source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low and high source index and the high weight of each output index, border-clamped."""
    position = np.clip(scale * np.arange(size, dtype=np.float64) + offset, 0, source - 1)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def _slice(array: np.ndarray, axes, k: int) -> np.ndarray:
    """Output slice ``k``: the two source slices blended along z, then rows (x), then columns (y)."""
    (x_low, x_high, x_weight), (y_low, y_high, y_weight), (z_low, z_high, z_weight) = axes
    low, weight = z_low[k], z_weight[k]
    plane = array[:, :, low].astype(np.float32)
    if weight > 0:
        plane += (array[:, :, z_high[k]].astype(np.float32) - plane) * weight
    rows = plane[x_low]
    rows += (plane[x_high] - rows) * x_weight[:, None]
    columns = rows[:, y_low]
    columns += (rows[:, y_high] - columns) * y_weight[None, :]
    return columns


def _threads() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def _slabs(size: int, parts: int) -> list[slice]:
    step = max(1, math.ceil(size / parts))
    return [slice(s, min(s + step, size)) for s in range(0, size, step)]
