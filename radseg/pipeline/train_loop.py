"""One training epoch and one validation pass: small functions with explicit inputs.

:func:`train_one_epoch` runs ``train.iterations_per_epoch`` optimiser steps on random patches;
:func:`validate` predicts whole validation volumes with the shared sliding-window predictor
and returns per-class Dice sums and counts, which sum correctly across DDP ranks.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable, Iterator

import torch
from tqdm import tqdm

from radseg import keys
from radseg.configs.schema import InferenceConfig, TrainConfig
from radseg.errors import RadsegError
from radseg.pipeline.inference import autocast, sliding_window_predict
from radseg.pipeline.schedule import lr_at, set_lr

logger = logging.getLogger(__name__)


def cycle_batches(loader: Iterable, count: int) -> Iterator[Any]:
    """``count`` batches from ``loader``, starting a new pass over it whenever one ends."""
    done = 0
    while done < count:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            done += 1
            if done == count:
                return
        if empty:
            raise RadsegError("the training loader yielded no batch; the training split has no cases")


def train_one_epoch(
    network: torch.nn.Module,
    batches: Iterable[dict],
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    *,
    start_iteration: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, float]:
    """Run the optimiser over ``batches`` (one epoch's worth).

    Args:
        network: the model (possibly DDP-wrapped), in train mode.
        batches: dicts with ``image`` ``(B, C, X, Y, Z)`` and ``label`` ``(B, 1, X, Y, Z)``.
        loss_fn: from :func:`radseg.pipeline.losses.build_loss`.
        optimizer: its learning rate is set from :func:`lr_at` before every step.
        cfg: the ``train`` section (``grad_clip``, schedule, ``batch_size``, ``roi_size``).
        start_iteration: iterations done before this epoch (drives the schedule).
        device: where the model is.
        amp: autocast dtype or None.
        scaler: a ``GradScaler`` for fp16, else None.
        channels_last: feed ``channels_last_3d`` tensors (CUDA).
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        ``loss`` (mean), ``lr`` (last), ``iterations``, ``epoch_time`` and ``data_time`` (seconds
        spent waiting for batches).

    Raises:
        RadsegError: CUDA ran out of memory (with the settings to lower).
    """
    network.train()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    data_time, steps, lr = 0.0, 0, 0.0
    start = time.perf_counter()
    bar = tqdm(batches, total=cfg.iterations_per_epoch, desc=desc, unit="it", leave=False, disable=not progress)
    waited = time.perf_counter()
    for batch in bar:
        data_time += time.perf_counter() - waited
        lr = lr_at(start_iteration + steps, cfg)
        set_lr(optimizer, lr)
        try:
            loss = _train_step(network, batch, loss_fn, optimizer, cfg, device, amp, scaler, channels_last)
        except torch.cuda.OutOfMemoryError as err:
            raise RadsegError(_oom_message(cfg, start_iteration + steps)) from err
        total_loss += loss.detach()
        steps += 1
        if progress and steps % 5 == 0:
            bar.set_postfix(loss=f"{total_loss.item() / steps:.4f}", lr=f"{lr:.2e}")
        waited = time.perf_counter()
    return {
        "loss": total_loss.item() / max(steps, 1),
        "lr": lr,
        "iterations": steps,
        "epoch_time": time.perf_counter() - start,
        "data_time": data_time,
    }


def _train_step(network, batch, loss_fn, optimizer, cfg, device, amp, scaler, channels_last) -> torch.Tensor:
    image = _plain(batch[keys.IMAGE]).to(device, non_blocking=True).float()
    label = _plain(batch[keys.LABEL]).to(device, non_blocking=True)
    if channels_last and image.ndim == 5:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        output = network(image)
    loss = loss_fn(output, label)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        _clip(network, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        _clip(network, cfg.grad_clip)
        optimizer.step()
    return loss


def _clip(network: torch.nn.Module, grad_clip: float | None) -> None:
    if grad_clip is not None and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)


def _plain(tensor: Any) -> torch.Tensor:
    """A MetaTensor as a plain tensor (metadata tracking slows autograd and DDP)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def _oom_message(cfg: TrainConfig, iteration: int) -> str:
    smaller = [max(16, (s // 2) // 16 * 16) for s in cfg.roi_size]
    return (
        f"CUDA ran out of memory at training iteration {iteration} with train.roi_size={list(cfg.roi_size)} and "
        f"train.batch_size={cfg.batch_size}; fix: use a smaller patch (e.g. --set train.roi_size={smaller}), "
        f"train.batch_size=1, augment.num_samples=1, or train.amp=bf16"
    )


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


def validate(
    network: torch.nn.Module,
    cases: Iterable[dict],
    inference_cfg: InferenceConfig,
    roi_size: list[int],
    num_classes: int,
    *,
    device: torch.device,
    amp: torch.dtype | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[float]]]:
    """Predict each whole validation volume and score it.

    Args:
        network: the bare model (not DDP-wrapped: ranks validate different numbers of cases).
        cases: batches of one case each: ``image`` ``(1, C, X, Y, Z)``, ``label`` ``(1, 1, X, Y, Z)``.
        inference_cfg: sliding-window settings (the same ones inference uses).
        roi_size: the window when ``inference_cfg.roi_size`` is None.
        num_classes: classes including background.
        device: where the windows run.
        amp: autocast dtype or None.
        progress: show a tqdm bar over cases.

    Returns:
        ``(dice_sum, dice_count, per_case)``: per-class sums and counts of scored cases
        (``(num_classes - 1,)`` float64, to be summed across ranks), and each case's scores.
    """
    was_training = network.training
    network.eval()
    dice_sum = torch.zeros(num_classes - 1, dtype=torch.float64)
    dice_count = torch.zeros(num_classes - 1, dtype=torch.float64)
    per_case: dict[str, list[float]] = {}
    for index, batch in enumerate(tqdm(cases, desc="validate", unit="case", leave=False, disable=not progress)):
        # the whole volume and its blended logits stay in host memory; only windows visit the device
        image = _plain(batch[keys.IMAGE]).float()
        logits = sliding_window_predict(network, image, inference_cfg, roi_size, device=device, amp=amp,
                                        output_device="cpu")
        pred = logits.argmax(dim=1).cpu()
        label = _plain(batch[keys.LABEL])[:, 0].cpu().long()
        scores = dice_per_class(pred, label, num_classes)
        scored = ~torch.isnan(scores)
        dice_sum[scored] += scores[scored]
        dice_count += scored.double()
        per_case[_case_id(batch, index)] = scores.tolist()
    network.train(was_training)
    return dice_sum, dice_count, per_case


def _case_id(batch: dict, index: int) -> str:
    value = batch.get(keys.CASE_ID, index)
    return str(value[0] if isinstance(value, (list, tuple)) else value)
