"""The training step's memory layout on this CPU, chosen by timing both layouts.

oneDNN has channels-last 3D kernels, and whether they beat the contiguous ones depends on the CPU:
on 2 AVX2 cores the demo's training step ran 1.12x faster channels-last, on a 2-core Xeon with AMX
it ran 1.21x slower (issue 24). So a plan does not assume: once the network and patch are chosen it
times that training step both ways on this machine and keeps the faster, with both figures in the
plan's comment (``train.channels_last``). A GPU keeps channels-last (cuDNN), untimed.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from radseg.pipeline.plan.rules import Decision

logger = logging.getLogger(__name__)

#: a layout replaces the default only when its step is at least this much faster (a median of 3 steps
#: moves by a few per cent between timings)
CLEAR_MARGIN = 0.05
#: ``timer(channels_last)`` -> seconds per training step of the planned network and patch
LayoutTimer = Callable[[bool], float]


def layout_decision(device: str, timer: LayoutTimer) -> Decision | None:
    """``train.channels_last`` for a plan, from a timing of each layout; None where nothing is timed.

    Args:
        device: "cpu" or "cuda".
        timer: times the planned training step in one layout (see :func:`plan_layout_timer`).

    Returns:
        The decision with both timings, or None on CUDA, on a CPU without oneDNN, or where neither
        layout is :data:`CLEAR_MARGIN` faster (the setting's default stands).
    """
    if device != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    last, plain = timer(True), timer(False)
    use = last < plain
    faster, slower = (last, plain) if use else (plain, last)
    if faster <= 0 or slower < faster * (1 + CLEAR_MARGIN):
        logger.info("plan: channels-last and contiguous training steps timed within %.0f%% of each other "
                    "(%.3f and %.3f s): the default layout stays", 100 * CLEAR_MARGIN, last, plain)
        return None
    why = (f"{'channels-last' if use else 'contiguous'} training steps, timed on this CPU: {faster:.3f} s against "
           f"{slower:.3f} s per step {'contiguous' if use else 'channels-last'} ({slower / faster:.2f}x); which "
           "layout oneDNN runs faster depends on the CPU")
    logger.info("plan: %s", why)
    return Decision("train.channels_last", use, why)


def plan_layout_timer(plan, in_channels: int, num_classes: int, step_timer) -> LayoutTimer:
    """A :data:`LayoutTimer` for ``plan``'s network, patch and patches per step.

    Args:
        plan: the :class:`radseg.pipeline.plan.planner.Plan`.
        in_channels, num_classes: the network's input channels and classes.
        step_timer: a :data:`radseg.pipeline.plan.machine.StepTimer` (the calibration's, on random tensors).
    """
    train, params = plan.config.train, plan.config.network.params
    widths = params.get("widths", params.get("channels"))
    patches = train.batch_size * plan.config.augment.num_samples

    def timer(channels_last: bool) -> float:
        return step_timer(widths, train.roi_size, patches, in_channels, num_classes, network=plan.config.network.name,
                          channels_last=channels_last)

    return timer


def apply_layout(plan, decision: Decision | None) -> None:
    """Set ``train.channels_last`` in ``plan`` and record why (nothing for None)."""
    if decision is None:
        return
    plan.config.train.channels_last = decision.value
    plan.decisions = [d for d in plan.decisions if d.key != decision.key] + [decision]
