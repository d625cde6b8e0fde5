"""Segmentation metrics, shared by validation during training, evaluation and the demo."""

from __future__ import annotations

import math

import torch


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of each foreground class for one case.

    Args:
        pred: predicted class indices, any shape.
        label: true class indices, same shape.
        num_classes: classes including background (index 0, not scored).

    Returns:
        ``(num_classes - 1,)`` float64; NaN where a class is absent from both prediction and
        label (nothing to score), 0 where it is in only one of them.
    """
    scores = torch.full((num_classes - 1,), math.nan, dtype=torch.float64)
    for cls in range(1, num_classes):
        p, t = pred == cls, label == cls
        denominator = int(p.sum()) + int(t.sum())
        if denominator:
            scores[cls - 1] = 2.0 * int((p & t).sum()) / denominator
    return scores
