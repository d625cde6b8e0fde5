"""Floating-point operations of one forward pass, counted by PyTorch's own FlopCounterMode.

Counting runs on the ``meta`` device (shapes only, no arithmetic), so a 96³ patch through a
transformer costs milliseconds; if a network cannot run on ``meta`` the count falls back to a real
CPU forward pass. One multiply-add counts as two FLOPs (PyTorch's convention).
"""

from __future__ import annotations

import copy
import logging
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)


def count_gflops(model: nn.Module, input_shape: Sequence[int], in_channels: int = 1) -> float:
    """GFLOPs of one forward pass on a ``(1, in_channels, *input_shape)`` input in eval mode.

    Args:
        model: any network; it is copied, never modified.
        input_shape: spatial size of the patch, e.g. ``(96, 96, 96)``.
        in_channels: channels the network takes.

    Returns:
        Forward GFLOPs (10**9 floating-point operations).
    """
    try:
        return _count(copy.deepcopy(model).to("meta"), input_shape, in_channels, "meta")
    except (NotImplementedError, RuntimeError) as err:
        logger.debug("FLOP count on the meta device failed (%s); counting on the CPU", err)
        return _count(copy.deepcopy(model), input_shape, in_channels, "cpu")


def _count(model: nn.Module, input_shape: Sequence[int], in_channels: int, device: str) -> float:
    model.eval()
    x = torch.zeros(1, in_channels, *input_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9
