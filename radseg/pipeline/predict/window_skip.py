"""Skipping sliding windows that hold no body, without letting the skipped windows bias the blend.

MONAI's :func:`~monai.inferers.sliding_window_inference` divides every voxel by the blending weight
of *all* windows over it. A skipped window has no logits, so besides the logits the runner returns a
one-channel "ran" map (1 where the window ran, 0 where it was skipped) that MONAI blends with the
same weights: per voxel it is ``sum(weights of windows that ran) / sum(all weights)``, and the
blended logits divided by it are the blend of the windows that ran alone (:func:`ran_only`). Voxels
no window ran on are background with probability 1 (:func:`set_background`).
"""

from __future__ import annotations

from typing import Callable

import torch

from radseg.pipeline.core.memory_format import plain_tensor

#: the foreground logits of voxels no window ran on: softmax gives background exactly 1
#: (exp(-1e4) is 0 in float32), and the value stays finite for the interpolation back to the scan's grid
NO_WINDOW_LOGIT = -1.0e4


class WindowRunner:
    """Runs the network on the windows that hold body and counts how many ran of the tiling.

    Called by MONAI's sliding window with each batch of windows and their coordinates. Without a
    mask it returns the logits; with one, ``(logits, ran)``: windows without a body voxel get zero
    logits and a zero "ran" map without a forward pass, windows that ran get a "ran" map of ones.

    Args:
        forward: ``forward(windows) -> logits``: the network on a batch of windows, float32 logits
            of the full-resolution head.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.forward = forward
        self.ran = 0
        self.total = 0
        self.channels: int | None = None

    def __call__(self, patch: torch.Tensor, coords: list, mask: torch.Tensor | None):
        keep = _windows_with_body(mask, coords, patch.shape[0])
        if self.channels is None and not bool(keep.any()):
            keep[0] = True  # one window runs to learn the output channels
        self.ran += int(keep.sum())
        self.total += patch.shape[0]
        logits = self._logits(patch, keep)
        if mask is None:
            return logits
        ran = keep.to(logits.device, torch.float32).view(-1, *[1] * (logits.ndim - 1))
        return logits, ran.expand(-1, 1, *logits.shape[2:]).clone()  # MONAI weights it in place

    def _logits(self, patch: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if not bool(keep.any()):
            return patch.new_zeros((patch.shape[0], self.channels, *patch.shape[2:]), dtype=torch.float32)
        ran = self.forward(patch if bool(keep.all()) else patch[keep])
        self.channels = ran.shape[1]
        if bool(keep.all()):
            return ran
        out = ran.new_zeros((patch.shape[0], *ran.shape[1:]))
        out[keep] = ran
        return out


def ran_only(total: torch.Tensor, ran: torch.Tensor) -> torch.Tensor:
    """Blended logits renormalised by the weight of the windows that ran; background where none ran.

    Args:
        total: ``(B, C, *spatial)`` logits blended over every window (skipped ones counted as zero),
            summed over the mirrored passes. Changed in place.
        ran: ``(B, 1, *spatial)`` the blended "ran" maps summed over the same passes.

    Returns:
        ``total``, now the blend of the windows that ran only.
    """
    absent = ran <= 0
    total /= ran.masked_fill(absent, 1.0)
    return set_background(total, absent)


def set_background(logits: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Make ``logits`` ``(B, C, *spatial)`` background with probability 1 where ``where`` is True.

    Args:
        logits: changed in place.
        where: boolean, broadcastable to ``(B, 1, *spatial)``.

    Returns:
        ``logits``.
    """
    logits[:, :1].masked_fill_(where, 0.0)
    logits[:, 1:].masked_fill_(where, NO_WINDOW_LOGIT)
    return logits


def batched_mask(body_mask: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor | None:
    """The body mask as a boolean CPU tensor ``(B, 1, *spatial)`` matching the image."""
    if body_mask is None:
        return None
    mask = plain_tensor(body_mask).bool().cpu()
    while mask.ndim < image.ndim:
        mask = mask[None]
    if tuple(mask.shape[2:]) != tuple(image.shape[2:]):
        raise ValueError(f"body_mask has spatial shape {tuple(mask.shape[2:])} but the image has "
                         f"{tuple(image.shape[2:])}; expected the same grid")
    return mask.expand(image.shape[0], 1, *image.shape[2:])


def pad_like_monai(mask: torch.Tensor, window: list[int]) -> torch.Tensor:
    """Pad the mask as sliding_window_inference pads a volume smaller than the window."""
    pad = []
    for size, roi in reversed(list(zip(mask.shape[2:], window))):
        diff = max(roi - size, 0)
        pad += [diff // 2, diff - diff // 2]
    return torch.nn.functional.pad(mask, pad) if any(pad) else mask


def _windows_with_body(mask: torch.Tensor | None, coords: list, count: int) -> torch.Tensor:
    """Boolean ``(count,)``: which windows of the batch hold a body voxel (all, without a mask)."""
    if mask is None:
        return torch.ones(count, dtype=torch.bool)
    return torch.tensor([bool(mask[tuple(window)].any()) for window in coords], dtype=torch.bool)
