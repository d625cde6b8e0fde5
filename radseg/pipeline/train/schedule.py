"""Optimisers and the learning-rate schedule.

The schedule is a pure function of the iteration, :func:`lr_at`, so it carries no state of its own:
resuming at iteration ``n`` gives the same rate as an uninterrupted run, and extending a run
(more ``max_epochs``) simply stretches the decay.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from radseg.configs.schema import TrainConfig
from radseg.errors import ConfigError

#: exponent of the polynomial decay (nnU-Net's choice)
POLY_EXPONENT = 0.9


def lr_at(iteration: float, cfg: TrainConfig) -> float:
    """The learning rate for a (0-based) training iteration.

    Linear warm-up over ``warmup_epochs`` (reaching ``learning_rate`` at the end of warm-up), then
    ``poly`` ``lr * (1 - t) ** 0.9``, ``cosine`` ``lr * (1 + cos(pi t)) / 2`` or ``constant``, where
    ``t`` runs from 0 after warm-up to 1 at ``max_epochs * iterations_per_epoch``.

    Args:
        iteration: iterations done so far (may be fractional, e.g. ``epoch * iterations_per_epoch``).
        cfg: the ``train`` config section.

    Returns:
        The learning rate (never negative).
    """
    total = cfg.max_epochs * cfg.iterations_per_epoch
    warmup = min(cfg.warmup_epochs * cfg.iterations_per_epoch, total)
    if iteration < warmup:
        return cfg.learning_rate * (iteration + 1) / warmup
    if cfg.schedule == "constant" or total <= warmup:
        return cfg.learning_rate
    t = min(max((iteration - warmup) / (total - warmup), 0.0), 1.0)
    if cfg.schedule == "poly":
        return cfg.learning_rate * (1.0 - t) ** POLY_EXPONENT
    if cfg.schedule == "cosine":
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ConfigError(f"train.schedule must be poly, cosine or constant, not {cfg.schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW or SGD with Nesterov momentum, as ``train.optimizer`` says.

    Args:
        cfg: the ``train`` config section (``optimizer``, ``learning_rate``, ``weight_decay``,
            ``momentum``).
        params: the parameters to optimise.

    Raises:
        ConfigError: an unknown optimiser name.
    """
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
    raise ConfigError(f"train.optimizer must be adamw or sgd, not {cfg.optimizer!r}")
