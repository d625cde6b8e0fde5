"""One training epoch: small functions with explicit inputs.

:func:`train_one_epoch` runs ``train.iterations_per_epoch`` optimiser steps on random patches.
Validation is the evaluate stage's :func:`radseg.pipeline.evaluate.validate.validate`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from radseg import keys
from radseg.configs.schema import TrainConfig
from radseg.errors import RadsegError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.core.memory_format import plain_tensor
from radseg.pipeline.predict.inference import autocast
from radseg.pipeline.train.run_log import RunLog
from radseg.pipeline.train.schedule import lr_at, set_lr
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)


def run_epochs(first: int, total: int, run_dir: Path, history: list, info: ddp.DistInfo, progress: bool,
               run_epoch: Callable[[int], dict], save_epoch: Callable[[dict, RunLog], None],
               next_total: Callable[[dict], int] | None = None) -> None:
    """The epoch loop the 3D and the slice branch share.

    Epochs ``first .. total - 1`` each run ``run_epoch(epoch)`` on every rank; rank 0 alone then
    calls ``save_epoch(row, log)`` (checkpoints, the metrics log) and every rank waits for it, so a
    resumed run continues from what rank 0 wrote. ``next_total(row)``, when given, is asked for the
    epoch count after every epoch (budget pacing; it must answer the same on every rank). The run
    log is closed however the loop ends.
    """
    log = RunLog(run_dir, history) if info.is_main else None
    try:
        with logging_redirect_tqdm(), progress_bar(desc="epochs", unit="epoch", disable=not (progress and info.is_main),
                                           initial=first, total=total) as bar:
            epoch = first
            while epoch < total:
                row = run_epoch(epoch)
                if info.is_main:
                    save_epoch(row, log)
                ddp.barrier(info)
                epoch += 1
                bar.update(1)
                if next_total is not None and epoch < total:
                    total = next_total(row)
                    if bar.total != total:
                        bar.total = total
                        bar.refresh()
    finally:
        if log is not None:
            log.close()


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
        loss_fn: from :func:`radseg.pipeline.train.losses.build_loss`.
        optimizer: its learning rate is set from :func:`lr_at` before every step.
        cfg: the ``train`` section (``grad_clip``, schedule, ``batch_size``, ``roi_size``).
        start_iteration: iterations done before this epoch (drives the schedule).
        device: where the model is.
        amp: autocast dtype or None.
        scaler: a ``GradScaler`` for fp16, else None.
        channels_last: feed ``channels_last_3d`` tensors (see :func:`radseg.pipeline.predict.inference.use_channels_last`).
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
    bar = progress_bar(batches, total=cfg.iterations_per_epoch, desc=desc, unit="it", leave=False, disable=not progress)
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
    image = plain_tensor(batch[keys.IMAGE]).to(device, non_blocking=True).float()
    label = plain_tensor(batch[keys.LABEL]).to(device, non_blocking=True)
    if channels_last and image.ndim == 5:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        output = network(image)
    loss = loss_fn(_float32(output), label)
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


def _float32(output: torch.Tensor | list | tuple) -> torch.Tensor | list | tuple:
    """The network's output (or every head) in float32: under autocast the loss stays full precision."""
    if isinstance(output, (list, tuple)):
        return type(output)(_float32(head) for head in output)
    return output.float()


def _clip(network: torch.nn.Module, grad_clip: float | None) -> None:
    if grad_clip is not None and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)


def _oom_message(cfg: TrainConfig, iteration: int) -> str:
    smaller = [max(16, (s // 2) // 16 * 16) for s in cfg.roi_size]
    return (
        f"CUDA ran out of memory at training iteration {iteration} with train.roi_size={list(cfg.roi_size)} and "
        f"train.batch_size={cfg.batch_size}; fix: use a smaller patch (e.g. --set train.roi_size={smaller}), "
        f"train.batch_size=1, augment.num_samples=1, or train.amp=bf16"
    )
