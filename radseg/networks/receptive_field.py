"""Receptive fields: analytic (layer by layer) for our networks, empirical (by gradient) for any.

The analytic side maps an output index interval back to the input interval it depends on, one
layer at a time, from kernel size, stride, dilation and padding; skip connections take the union
of their branches. The empirical side back-propagates from one central output voxel and measures
the extent of the input with a non-zero gradient. For our networks the two agree exactly.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from radseg.networks.registry import Interval, NetworkEntry, get_entry, resolve_params


def conv_back(iv: Interval, kernel: int, stride: int = 1, dilation: int = 1, padding: int = 0) -> Interval:
    """Input interval a convolution's (or pooling's) output interval ``iv`` reads."""
    return stride * iv[0] - padding, stride * iv[1] - padding + dilation * (kernel - 1)


def transposed_conv_back(iv: Interval, kernel: int, stride: int, padding: int = 0) -> Interval:
    """Input interval a transposed convolution's output interval ``iv`` reads."""
    return math.ceil((iv[0] + padding - kernel + 1) / stride), (iv[1] + padding) // stride


def linear_upsample_back(iv: Interval, scale: int = 2) -> Interval:
    """Input interval read by (tri/bi)linear upsampling with ``align_corners=False`` (interior voxels)."""
    return math.floor((iv[0] + 0.5) / scale - 0.5), math.floor((iv[1] + 0.5) / scale - 0.5) + 1


def union(a: Interval, b: Interval) -> Interval:
    """The smallest interval holding both (the branches of a skip connection overlap)."""
    return min(a[0], b[0]), max(a[1], b[1])


def analytic_receptive_field(
    name: str | NetworkEntry, params: Any = None, position: int | None = None
) -> tuple[int, ...]:
    """Receptive field in voxels per axis, from the layer-by-layer interval computation.

    Args:
        name: network name or entry; it must define ``rf_interval``.
        params: params instance or raw mapping (None: defaults).
        position: output index to measure at; None takes the largest field over all grid
            alignments (strided networks see a field that shifts by a voxel with alignment).

    Raises:
        ValueError: the entry has no analytic receptive field.
    """
    entry = get_entry(name)
    if entry.rf_interval is None:
        raise ValueError(f"network {entry.name!r} has no analytic receptive field; use empirical_receptive_field")
    params = resolve_params(entry, params)
    divisor = max(entry.divisor_for(params))
    base = 64 * divisor  # far from the borders, so padding never clips the interval
    positions = [position] if position is not None else range(base, base + divisor)
    sizes = []
    for p in positions:
        lo, hi = entry.rf_interval(params, (p, p))
        sizes.append(hi - lo + 1)
    return (max(sizes),) * entry.spatial_dims


class _FrozenStatsNorm(nn.Module):
    """Instance/group norm whose statistics are constants for the gradient.

    Instance and group statistics span the whole input, so every output would depend on every
    input voxel; a receptive field is about the convolutional paths, so the statistics are detached.
    """

    def __init__(self, norm: nn.Module, groups: int):
        super().__init__()
        self.norm, self.groups = norm, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        grouped = x.reshape(shape[0], self.groups, -1)
        mean = grouped.mean(-1, keepdim=True).detach()
        var = grouped.var(-1, unbiased=False, keepdim=True).detach()
        y = ((grouped - mean) / torch.sqrt(var + self.norm.eps)).reshape(shape)
        weight = getattr(self.norm, "weight", None)
        if weight is not None:
            view = (1, -1) + (1,) * (x.dim() - 2)
            y = y * weight.view(view) + self.norm.bias.view(view)
        return y


def _freeze_norm_statistics(model: nn.Module) -> None:
    for name, child in model.named_children():
        if isinstance(child, _FrozenStatsNorm):
            continue  # a module shared by two parents (DynUNet's skip layers) is wrapped once
        if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
            setattr(model, name, _FrozenStatsNorm(child, child.num_features))
        elif isinstance(child, nn.GroupNorm):
            setattr(model, name, _FrozenStatsNorm(child, child.num_groups))
        else:
            _freeze_norm_statistics(child)


def empirical_receptive_field(
    model: nn.Module, input_shape: Sequence[int], in_channels: int = 1
) -> tuple[int, ...]:
    """Receptive field measured by gradient: the input extent one central output voxel depends on.

    The model is copied, put in eval mode (batch norm uses running statistics, dropout is off),
    instance/group-norm statistics are treated as constants, and one output voxel at the centre
    (or the first logit, for a classifier) is back-propagated to a random input.

    Args:
        model: any network taking ``(1, in_channels, *input_shape)``.
        input_shape: spatial input size; a field as large as this is clipped to it.
        in_channels: channels of the input.

    Returns:
        Per-axis extent (max index - min index + 1) of input voxels with a non-zero gradient.
    """
    probe = copy.deepcopy(model).eval()
    _freeze_norm_statistics(probe)
    x = torch.randn(1, in_channels, *input_shape, requires_grad=True)
    out = probe(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    if out.dim() == 2:
        target = out[0, 0]
    else:
        target = out[(0, 0) + tuple(s // 2 for s in out.shape[2:])]
    (grad,) = torch.autograd.grad(target, x)
    mask = grad.abs().sum(dim=(0, 1)) > 0
    extents = []
    for axis in range(mask.dim()):
        others = tuple(a for a in range(mask.dim()) if a != axis)
        hit = torch.nonzero(mask.any(dim=others) if others else mask).flatten()
        extents.append(int(hit.max() - hit.min() + 1) if hit.numel() else 0)
    return tuple(extents)
