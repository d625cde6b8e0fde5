"""Segmentation losses: Dice + cross-entropy (default), Dice, focal, Dice + focal; deep supervision.

Every loss takes logits ``(B, C, X, Y, Z)`` and integer labels ``(B, 1, X, Y, Z)``; softmax and
one-hot encoding happen inside. With deep supervision the network returns several heads and the
loss is a weighted sum over them, weights halving per level (nnU-Net's scheme), with the labels
downsampled to each head's shape by nearest-neighbour interpolation.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss

from radseg.configs.schema import TrainConfig
from radseg.errors import ConfigError


def build_loss(train_cfg: TrainConfig, num_classes: int, deep_supervision: bool = False) -> torch.nn.Module:
    """The loss named by ``train.loss``.

    Args:
        train_cfg: the ``train`` config section (``loss``).
        num_classes: number of classes including background.
        deep_supervision: wrap the loss so it accepts a list of heads (or MONAI DynUNet's stacked
            ``(B, heads, C, X, Y, Z)`` tensor) and weights them 1, 1/2, 1/4, ... (normalised).

    Returns:
        A module ``loss(output, label) -> scalar``.

    Raises:
        ConfigError: an unknown loss name or fewer than 2 classes.
    """
    if num_classes < 2:
        raise ConfigError(f"segmentation needs at least 2 classes (background and one more), not {num_classes}")
    base = _base_loss(train_cfg.loss)
    return DeepSupervisionLoss(base) if deep_supervision else _SingleHeadLoss(base)


def _base_loss(name: str) -> torch.nn.Module:
    # batch=True pools Dice over the batch: patches without foreground do not produce 0/0 noise
    common = dict(to_onehot_y=True, include_background=True, batch=True)
    if name == "dice_ce":
        return DiceCELoss(softmax=True, **common)
    if name == "dice":
        return DiceLoss(softmax=True, **common)
    if name == "dice_focal":
        return DiceFocalLoss(softmax=True, **common)
    if name == "focal":
        return FocalLoss(to_onehot_y=True, use_softmax=True)
    raise ConfigError(f"train.loss must be one of dice_ce, dice, focal, dice_focal, not {name!r}")


def deep_supervision_weights(levels: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... for ``levels`` heads, normalised to sum to 1."""
    raw = [0.5**level for level in range(levels)]
    total = sum(raw)
    return [w / total for w in raw]


def split_heads(output: torch.Tensor | Sequence[torch.Tensor], label_ndim: int) -> list[torch.Tensor]:
    """A network output as a list of heads, full resolution first.

    Args:
        output: a tensor ``(B, C, *spatial)``, a list/tuple of such tensors, or a stacked tensor
            ``(B, heads, C, *spatial)`` (one dimension more than the label).
        label_ndim: number of dimensions of the label ``(B, 1, *spatial)``.
    """
    if isinstance(output, (list, tuple)):
        return list(output)
    if output.ndim == label_ndim + 1:
        return list(torch.unbind(output, dim=1))
    return [output]


def downsample_label(label: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Labels ``(B, 1, *spatial)`` resized to ``spatial_shape`` by nearest neighbour (no new values)."""
    if tuple(label.shape[2:]) == tuple(spatial_shape):
        return label
    return F.interpolate(label.float(), size=tuple(spatial_shape), mode="nearest").to(label.dtype)


class _SingleHeadLoss(torch.nn.Module):
    """A loss on the full-resolution head only (lower heads, if any, are ignored)."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, output, label: torch.Tensor) -> torch.Tensor:
        return self.base(split_heads(output, label.ndim)[0].float(), label)


class DeepSupervisionLoss(torch.nn.Module):
    """Weighted sum of ``base`` over every head, labels downsampled to each head's shape.

    Args:
        base: the loss applied to each head.
    """

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, output, label: torch.Tensor) -> torch.Tensor:
        heads = split_heads(output, label.ndim)
        weights = deep_supervision_weights(len(heads))
        total = 0.0
        for weight, head in zip(weights, heads):
            total = total + weight * self.base(head.float(), downsample_label(label, head.shape[2:]))
        return total
