"""Back from the preprocessed grid to the scan's own grid, slab by slab.

Preprocessing only reorients (a permutation and flips of the axes), crops (an offset) and
resamples along the axes (a scale), so each axis of the original grid maps to one axis of the
preprocessed grid by ``pre = scale * original + offset``. Linear interpolation is then separable:
one 1D interpolation per axis. The logits are taken back a slab of original slices at a time and
turned into labels (and optionally float16 probabilities) at once, so float32 logits are never
held for the whole original grid (the RAM hog of nnU-Net's and MONAI's ``Invertd`` way back).

Labels alone take a shortcut that gives exactly the same answer: where all 8 preprocessed voxels
around an original voxel share one argmax, every convex combination of their logits has that
argmax too, so the label is gathered (one byte per voxel); trilinear interpolation runs only for
the voxels in cells whose corners disagree, along class boundaries, or for a whole slab axis by
axis where such voxels are most of it (a noisy, untrained network). Slabs run on one thread per
core.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

#: tolerance on the off-axis terms of the original -> preprocessed index map
_AXIS_TOLERANCE = 1e-3
#: flag bit marking cells whose corners disagree (labels stay below it: at most 127 classes)
_MIXED = np.uint8(128)
#: above this share of a slab's voxels in mixed cells, interpolating the whole slab axis by axis
#: is cheaper than 8 gathers per mixed voxel (about 50 against 170 ns per voxel, measured on a
#: 2-core AMD EPYC with a random network's logits)
_SEPARABLE_SHARE = 0.3
#: memory the slabs taken back at once may use (the threads are capped to fit it)
_SLABS_IN_FLIGHT_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class AxisMap:
    """For each original index axis ``i``: preprocessed axis ``axes[i]`` at ``scale[i] * i + offset[i]``."""

    axes: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]


def axis_map(pre_affine: np.ndarray, original_affine: np.ndarray) -> AxisMap:
    """The per-axis index map from the original grid to the preprocessed one.

    Args:
        pre_affine: 4x4 voxel -> world affine of the preprocessed grid (MONAI meta ``affine``).
        original_affine: 4x4 voxel -> world affine of the scan as read (``original_affine``),
            in the same world convention (RAS).

    Returns:
        The :class:`AxisMap`.

    Raises:
        ValueError: the two grids are not axis-aligned with each other (a rotation beyond axis
            permutations and flips), which radseg's preprocessing never produces.
    """
    matrix = np.linalg.inv(np.asarray(pre_affine, dtype=np.float64)) @ np.asarray(original_affine, dtype=np.float64)
    linear = matrix[:3, :3]
    axes = tuple(int(a) for a in np.argmax(np.abs(linear), axis=0))
    scale = tuple(float(linear[axes[i], i]) for i in range(3))
    off_axis = linear.copy()
    for i in range(3):
        off_axis[axes[i], i] = 0.0
    if len(set(axes)) != 3 or np.abs(off_axis).max() > _AXIS_TOLERANCE * max(abs(s) for s in scale):
        raise ValueError(f"the preprocessed grid is not axis-aligned with the original one "
                         f"(index map {np.round(linear, 4).tolist()}); expected a permutation with flips "
                         "and scales")
    return AxisMap(axes=axes, scale=scale, offset=tuple(float(matrix[axes[i], 3]) for i in range(3)))


@dataclass(frozen=True)
class _Axis:
    """1D linear interpolation of one axis: ``out[j] = in[low[j]] * (1 - w[j]) + in[low[j] + 1] * w[j]``."""

    low: torch.Tensor
    high: torch.Tensor
    weight: torch.Tensor
    inside: torch.Tensor


def _axis(scale: float, offset: float, indices: torch.Tensor, size: int) -> _Axis:
    position = scale * indices.double() + offset
    inside = (position >= -0.5) & (position <= size - 0.5)
    position = position.clamp(0, size - 1)
    low = position.floor().long().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    return _Axis(low=low, high=high, weight=(position - low).float(), inside=inside)


def _interpolate(volume: torch.Tensor, dim: int, axis: _Axis) -> torch.Tensor:
    low = volume.index_select(dim, axis.low)
    high = volume.index_select(dim, axis.high)
    shape = [1] * volume.ndim
    shape[dim] = -1
    return torch.lerp(low, high, axis.weight.view(shape))


def logits_to_grid(logits: torch.Tensor, mapping: AxisMap, shape: tuple[int, int, int], *,
                   probabilities: bool = False, slab: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and optionally probabilities) on the original grid from preprocessed logits.

    Args:
        logits: ``(C, X', Y', Z')`` float logits on the preprocessed grid (CPU).
        mapping: from :func:`axis_map`.
        shape: the original grid's shape ``(X, Y, Z)``.
        probabilities: also return softmax probabilities.
        slab: original slices (last axis) taken back at a time.

    Returns:
        ``labels`` uint8 in numpy (Z, Y, X) order (SimpleITK's array order), and ``probabilities``
        float16 ``(C, Z, Y, X)`` or None. Voxels outside the preprocessed (cropped) region are
        background with probability 1.
    """
    if not probabilities:
        return _labels_to_grid(logits, mapping, shape, slab), None
    channels = logits.shape[0]
    # move each original axis's preprocessed axis into position i (a view, no copy)
    volume = logits.permute(0, *(a + 1 for a in mapping.axes))
    x_axis, y_axis = (_axis(mapping.scale[i], mapping.offset[i], torch.arange(shape[i]), volume.shape[i + 1])
                      for i in range(2))
    labels = np.zeros(shape[::-1], dtype=np.uint8)
    probs = np.zeros((channels, *shape[::-1]), dtype=np.float16) if probabilities else None
    for start in range(0, shape[2], slab):
        z_axis = _axis(mapping.scale[2], mapping.offset[2], torch.arange(start, min(start + slab, shape[2])),
                       volume.shape[3])
        out = _slab(volume, x_axis, y_axis, z_axis)
        inside = x_axis.inside[:, None, None] & y_axis.inside[None, :, None] & z_axis.inside[None, None, :]
        stop = start + out.shape[3]
        labels[start:stop] = (out.argmax(dim=0).to(torch.uint8) * inside).permute(2, 1, 0).numpy()
        if probs is not None:
            softmax = torch.softmax(out, dim=0) * inside
            softmax[0] += ~inside
            probs[:, start:stop] = softmax.half().permute(0, 3, 2, 1).numpy()
    return labels, probs


def _slab(volume: torch.Tensor, x_axis: _Axis, y_axis: _Axis, z_axis: _Axis) -> torch.Tensor:
    """Interpolate a slab: only the preprocessed slices the slab needs, then z, y, x."""
    first, last = int(z_axis.low.min()), int(z_axis.high.max())
    part = volume[..., first:last + 1].float()
    shifted = _Axis(z_axis.low - first, z_axis.high - first, z_axis.weight, z_axis.inside)
    part = _interpolate(part, 3, shifted)
    part = _interpolate(part, 2, y_axis)
    return _interpolate(part, 1, x_axis)


def _labels_to_grid(logits: torch.Tensor, mapping: AxisMap, shape: tuple[int, int, int], slab: int) -> np.ndarray:
    """Argmax labels on the original grid, (Z, Y, X): gathered in uniform cells, interpolated elsewhere."""
    # preprocessed volumes in the original axis order, reversed to (Z', Y', X') like the output
    order = [mapping.axes[2], mapping.axes[1], mapping.axes[0]]
    pre_labels = channel_argmax(logits).permute(*order).numpy()
    # one byte per voxel: the label, plus _MIXED where the cell's 8 corners disagree
    coded = np.where(_uniform_cells(pre_labels), pre_labels, pre_labels | _MIXED)
    base = logits.float().contiguous()
    flat = base.reshape(base.shape[0], -1)
    strides = [base.stride(1 + a) for a in order]  # flat-index steps along z, y, x
    axes = [_axis(mapping.scale[i], mapping.offset[i], torch.arange(shape[i]), pre_labels.shape[2 - i])
            for i in range(3)]
    x_axis, y_axis, z_axis = (_numpy_axis(a) for a in axes)
    # one gather per slab: each output (y, x) reads one (y', x') of the preprocessed plane
    plane = (y_axis["low"][:, None] * coded.shape[2] + x_axis["low"][None, :]).ravel()
    labels = np.empty(shape[::-1], dtype=np.uint8)
    volume = base.permute(0, *(a + 1 for a in mapping.axes))  # the original axis order, as _slab wants

    def one_slab(start: int) -> None:
        rows = slice(start, min(start + slab, shape[2]))
        z_part = {key: value[rows] for key, value in z_axis.items()}
        block = coded[z_part["low"]].reshape(len(z_part["low"]), -1)
        block = np.take(block, plane, axis=1).reshape(-1, shape[1], shape[0])
        z_idx, y_idx, x_idx = np.nonzero(block >= _MIXED)
        if z_idx.size > _SEPARABLE_SHARE * block.size:  # boundaries everywhere: the whole slab, axis by axis
            slab_axis = _Axis(*(getattr(axes[2], name)[rows] for name in ("low", "high", "weight", "inside")))
            whole = channel_argmax(_slab(volume, axes[0], axes[1], slab_axis)).permute(2, 1, 0).numpy()
            block[z_idx, y_idx, x_idx] = whole[z_idx, y_idx, x_idx]
        elif z_idx.size:
            block[z_idx, y_idx, x_idx] = _interpolate_points(flat, strides, (z_part, y_axis, x_axis),
                                                             (z_idx, y_idx, x_idx))
        block[~z_part["inside"]] = 0
        block[:, ~y_axis["inside"]] = 0
        block[:, :, ~x_axis["inside"]] = 0
        labels[rows] = block

    # slabs are independent and numpy/torch release the GIL in their loops: one thread per core, each
    # running torch single-threaded (no team of threads per worker), as many as the slabs' memory allows
    starts = range(0, shape[2], slab)
    threads = torch.get_num_threads()
    slab_bytes = 3 * 4 * base.shape[0] * shape[0] * shape[1] * slab  # the whole-slab route's float32 buffers
    workers = max(1, min(threads, len(starts), _SLABS_IN_FLIGHT_BYTES // max(slab_bytes, 1)))
    torch.set_num_threads(1 if workers > 1 else threads)
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one_slab, starts))
    finally:
        torch.set_num_threads(threads)
    return labels


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the channels of ``(C, ...)`` logits as uint8 (first maximum wins, like argmax).

    One pass per channel: ``torch.argmax`` over a short leading axis of a large volume is many
    times slower on CPU.
    """
    best = logits[0].clone()
    index = torch.zeros(logits.shape[1:], dtype=torch.uint8)
    for channel in range(1, logits.shape[0]):
        better = logits[channel] > best
        index.masked_fill_(better, channel)
        torch.maximum(best, logits[channel], out=best)
    return index


def _numpy_axis(axis: _Axis) -> dict[str, np.ndarray]:
    return {"low": axis.low.numpy(), "high": axis.high.numpy(), "weight": axis.weight.numpy(),
            "inside": axis.inside.numpy()}


def _uniform_cells(labels: np.ndarray) -> np.ndarray:
    """True where the 2x2x2 cell starting at a voxel (clamped at the far edges) has one label."""
    low, high = labels, labels
    for axis in range(3):
        low = np.minimum(low, _next(low, axis))
        high = np.maximum(high, _next(high, axis))
    return low == high


def _next(array: np.ndarray, axis: int) -> np.ndarray:
    """``array`` shifted by one voxel towards lower indices along ``axis``, the last voxel repeated."""
    index = np.minimum(np.arange(1, array.shape[axis] + 1), array.shape[axis] - 1)
    return array.take(index, axis)


def _interpolate_points(flat: torch.Tensor, strides: list[int], axes: tuple[dict, dict, dict],
                        points: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Trilinear logits at the given output voxels, then their argmax (uint8).

    Args:
        flat: ``(C, N)`` logits, the preprocessed volume flattened in its own order.
        strides: flat-index steps along the output's z, y and x.
        axes: the z (this slab's rows), y and x interpolation tables.
        points: z, y, x indices of the voxels within the slab.
    """
    (z_axis, y_axis, x_axis), (z_idx, y_idx, x_idx) = axes, points
    total = torch.zeros((flat.shape[0], z_idx.size), dtype=torch.float32)
    for z_key, z_weight in _sides(z_axis, z_idx):
        z_offset = torch.from_numpy(z_axis[z_key][z_idx] * strides[0])
        for y_key, y_weight in _sides(y_axis, y_idx):
            zy_offset = z_offset + torch.from_numpy(y_axis[y_key][y_idx] * strides[1])
            zy_weight = z_weight * y_weight
            for x_key, x_weight in _sides(x_axis, x_idx):
                values = flat.index_select(1, zy_offset + torch.from_numpy(x_axis[x_key][x_idx] * strides[2]))
                total.addcmul_(values, (zy_weight * x_weight)[None])
    return channel_argmax(total).numpy()


def _sides(axis: dict, index: np.ndarray) -> tuple[tuple[str, torch.Tensor], tuple[str, torch.Tensor]]:
    """The low and high neighbour of each point along one axis, with their linear weights."""
    weight = torch.from_numpy(axis["weight"][index])
    return ("low", 1 - weight), ("high", weight)
