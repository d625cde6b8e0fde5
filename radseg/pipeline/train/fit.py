"""``fit``: check the data, prepare the run folder, build everything, train, validate, checkpoint.

Exact resume: the training batches come from one seeded stream for the whole run
(:mod:`radseg.pipeline.data.stream`: batch ``j`` depends only on the seed, the rank and ``j``),
every epoch reseeds python, numpy and torch from ``(train.seed, epoch, rank)``, and checkpoints are
written at epoch ends. A run killed at any moment and resumed from ``last.pt`` therefore draws the
same patches and ends with the same weights as an uninterrupted run (bit for bit on CPU with
``train.deterministic``). A finished run is extended by resuming with a larger ``train.max_epochs``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radseg.configs.loader import config_to_dict
from radseg.configs.schema import RadsegConfig
from radseg.errors import DataError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.core.checkpoint import BEST, LAST, capture_rng_state, restore_rng_state, save_checkpoint
from radseg.pipeline.core.memory_format import contiguous_weights, use_channels_last
from radseg.pipeline.predict.inference import resolve_amp
from radseg.pipeline.predict.mirroring import trained_mirror_axes
from radseg.pipeline.train.losses import build_loss
from radseg.pipeline.train.run_log import RunLog
from radseg.pipeline.train.pacing import BudgetPacer
from radseg.pipeline.train.run_setup import RunData, prepare_data, prepare_run_folder, save_run_config
from radseg.pipeline.train.schedule import build_optimizer
from radseg.pipeline.evaluate.validate import validate
from radseg.pipeline.data.stream import training_stream
from radseg.pipeline.train.loop import run_epochs, train_one_epoch
from radseg.transforms.fingerprint import Fingerprint

logger = logging.getLogger(__name__)



@dataclass
class FitResult:
    """What :func:`fit` did; ``str()`` is the summary the CLI prints."""

    run_dir: Path
    epochs: int
    best_epoch: int
    best_dice: float
    best_dice_per_class: dict[str, float]
    seconds: float

    def __str__(self) -> str:
        per_class = ", ".join(f"{k} {v:.4f}" for k, v in self.best_dice_per_class.items())
        best = f"best mean foreground Dice {self.best_dice:.4f} at epoch {self.best_epoch} ({per_class})"
        if self.best_epoch == 0:
            best = "no validation yet"
        return f"trained {self.epochs} epochs in {self.seconds:.0f} s; {best}; run folder {self.run_dir}"


@dataclass
class _State:
    """Everything that changes during training and is saved in last.pt (besides weights)."""

    epoch: int = 0  # completed epochs
    iteration: int = 0
    best_dice: float = -math.inf
    best_epoch: int = 0
    best_per_class: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    cfg: RadsegConfig | None,
    data: str | Path,
    output: str | Path,
    fold: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    *,
    progress: bool = True,
    pacer: BudgetPacer | None = None,
    fingerprint: Fingerprint | None = None,
    log_device: bool = True,
) -> FitResult:
    """Train a network on a dataset into a run folder.

    Args:
        cfg: the run's config; None with ``resume`` takes the run folder's own config.
        data: the dataset root (checked with ``check-data`` first).
        output: the run folder (config.yaml, splits.json, fingerprint.json, last.pt, best.pt,
            metrics.csv, curves.png, train.log).
        fold: cross-validation fold; None uses ``data.fold``.
        resume: continue the run in ``output`` from its last.pt (or extend a finished one).
        overwrite: replace an existing run in ``output``.
        progress: show progress bars.
        pacer: keeps a ``train --budget`` run on its wall clock by changing ``train.max_epochs``
            (written to the run's config.yaml) at epoch ends; None trains the config's epochs.
        fingerprint: the dataset's fingerprint when the caller has measured it already (``train
            --budget``'s plan); a new run uses it if it covers the same cases, instead of measuring again.
        log_device: log the training device (False when the caller has logged it already).

    Returns:
        The :class:`FitResult`.

    Raises:
        ConfigError: an impossible setting, an existing run without ``resume``/``overwrite``, or
            a resume whose config differs from the run's in anything but the epoch count.
        DataError: the dataset fails check-data.
        RadsegError: CUDA runs out of memory (with the settings to lower).
    """
    start = time.perf_counter()
    info = ddp.init_distributed(cfg.train.device if cfg is not None else "auto")
    if log_device:
        ddp.log_device(info.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        cfg, saved = prepare_run_folder(cfg, Path(output), fold, resume, overwrite, info, data)
        run_data = prepare_data(cfg, Path(data), Path(output), info, fresh=saved is None, progress=progress,
                                known_fingerprint=fingerprint)
        return _train(cfg, run_data, Path(output), saved, info, start, progress, pacer)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)  # callers' own setting, not ours
        ddp.cleanup_distributed(info)


def _train(cfg, run_data: RunData, run_dir: Path, saved, info, start: float, progress: bool,
           pacer: BudgetPacer | None) -> FitResult:
    _set_determinism(cfg)
    torch.manual_seed(cfg.train.seed)
    network = _build_network(cfg, run_data, info.device)
    optimizer = build_optimizer(cfg.train, network.parameters())
    amp = resolve_amp(cfg.train.amp, info.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    state = _restore(saved, network, optimizer, scaler) if saved else _State()
    model = ddp.wrap_ddp(network, info)
    loss_fn = build_loss(cfg.train, run_data.num_classes, deep_supervision=getattr(network, "deep_supervision", False))
    if state.epoch >= cfg.train.max_epochs:
        logger.info("the run in %s finished %d epochs; resume with a larger train.max_epochs to extend it",
                    run_dir, state.epoch)
    if pacer is not None:
        pacer.start()
    # one loader (and worker) for the whole run; a resumed run continues the same stream of batches
    stream = training_stream(run_data.train_dataset, cfg.train.batch_size, cfg.cache.num_workers, cfg.train.seed,
                             rank=info.rank, start_step=state.iteration, weights=run_data.train_weights)
    try:
        run_epochs(state.epoch, cfg.train.max_epochs, run_dir, state.history, info, progress,
                   lambda epoch: _run_epoch(cfg, run_data, model, network, loss_fn, optimizer, scaler, amp, state,
                                            epoch, info, progress, stream),
                   lambda row, log: _save_epoch(cfg, run_data, run_dir, network, optimizer, scaler, state, row, log),
                   None if pacer is None else lambda row: _paced_epochs(pacer, cfg, state, row, run_dir, info))
    finally:
        stream.close()  # ends the loader's worker, also when training failed
    return FitResult(run_dir, state.epoch, state.best_epoch, max(state.best_dice, 0.0), state.best_per_class,
                     time.perf_counter() - start)


def _paced_epochs(pacer: BudgetPacer, cfg: RadsegConfig, state: _State, row: dict, run_dir: Path, info) -> int:
    """The pacer's epoch count (rank 0 decides for every rank); a change is written to config.yaml."""
    epochs = pacer.epoch_done(row, state.epoch, cfg.train.max_epochs, cfg.train.val_interval) if info.is_main else 0
    epochs = int(ddp.broadcast_object(epochs, info))
    if epochs != cfg.train.max_epochs:
        cfg.train.max_epochs = epochs
        if info.is_main:
            save_run_config(cfg, run_dir)
    return cfg.train.max_epochs


def _set_determinism(cfg: RadsegConfig) -> None:
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _build_network(cfg: RadsegConfig, run_data: RunData, device: torch.device) -> torch.nn.Module:
    from radseg.networks import build_network

    network = build_network(cfg.network, in_channels=run_data.in_channels, out_channels=run_data.num_classes)
    network = network.to(device)
    if _channels_last(cfg, device):
        network = network.to(memory_format=torch.channels_last_3d)
    return network


def _channels_last(cfg: RadsegConfig, device: torch.device) -> bool:
    """Whether training steps run channels-last (on CPU a single process only: the weights switch
    format around validation, which DDP's gradient buckets would not follow)."""
    single = not (torch.distributed.is_available() and torch.distributed.is_initialized()
                  and torch.distributed.get_world_size() > 1)
    use = use_channels_last(cfg.train.channels_last, device, len(cfg.train.roi_size), training=True)
    return use and (torch.device(device).type == "cuda" or single)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed python, numpy and torch per (run seed, epoch, rank): a resumed epoch's network randomness
    (dropout) is the uninterrupted run's; the patches come from the seeded stream."""
    value = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _run_epoch(cfg, run_data, model, network, loss_fn, optimizer, scaler, amp, state, epoch, info, progress,
               stream):
    _seed_epoch(cfg.train.seed, epoch, info.rank)  # the network's own randomness (dropout), per epoch
    show = progress and info.is_main
    metrics = train_one_epoch(
        model, itertools.islice(stream, cfg.train.iterations_per_epoch), loss_fn, optimizer, cfg.train,
        start_iteration=state.iteration, device=info.device, amp=amp, scaler=scaler,
        channels_last=_channels_last(cfg, info.device), progress=show,
        desc=f"epoch {epoch + 1}/{cfg.train.max_epochs}",
    )
    loss = ddp.all_reduce_sum(torch.tensor([metrics["loss"]], dtype=torch.float64), info) / info.world_size
    state.iteration += metrics["iterations"]
    state.epoch = epoch + 1
    row = {"epoch": epoch + 1, "loss": float(loss), "lr": metrics["lr"],
           "epoch_time": metrics["epoch_time"], "data_time": metrics["data_time"]}
    if state.epoch % cfg.train.val_interval == 0 or state.epoch == cfg.train.max_epochs:
        row.update(_validate(cfg, run_data, network, amp, info, show))
        _update_best(state, row, run_data)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "is_best"))
    logger.info("epoch %d: %s", epoch + 1, shown)
    return row


def _validate(cfg, run_data: RunData, network, amp, info, progress: bool) -> dict[str, float]:
    from radseg.pipeline.data.cache import build_loader

    start = time.perf_counter()
    loader = build_loader(run_data.val_dataset, 1, cfg.cache.num_workers, False, cfg.train.seed)
    windows_last = use_channels_last(cfg.train.channels_last, info.device, len(cfg.train.roi_size))
    with contextlib.nullcontext(network) if windows_last else contiguous_weights(network):
        dice_sum, dice_count, per_case = validate(
            network, loader, cfg.inference, cfg.train.roi_size, run_data.num_classes,
            device=info.device, amp=amp, progress=progress, mirror_axes=trained_mirror_axes(cfg.augment),
        )
    del loader
    # each rank scored its own disjoint cases: sums and counts add up to every case exactly once
    totals = ddp.all_reduce_sum(torch.cat([dice_sum, dice_count, torch.tensor([float(len(per_case))])]), info)
    dice_sum, dice_count, num_cases = totals.split([len(dice_sum), len(dice_count), 1])
    dice = torch.where(dice_count > 0, dice_sum / dice_count.clamp(min=1), torch.full_like(dice_sum, math.nan))
    row = {f"dice_{name}": float(value) for name, value in zip(run_data.foreground_names, dice)}
    scored = dice[~torch.isnan(dice)]
    row["mean_dice"] = float(scored.mean()) if len(scored) else math.nan
    row["val_cases"] = int(num_cases.item())
    row["val_time"] = time.perf_counter() - start
    return row


def _update_best(state: _State, row: dict, run_data: RunData) -> None:
    mean = row["mean_dice"]
    if not math.isnan(mean) and mean > state.best_dice:
        state.best_dice, state.best_epoch = mean, row["epoch"]
        state.best_per_class = {name: row[f"dice_{name}"] for name in run_data.foreground_names}
        row["is_best"] = 1


def _save_epoch(cfg, run_data, run_dir: Path, network, optimizer, scaler, state: _State, row, log: RunLog) -> None:
    is_best = row.pop("is_best", 0)
    state.history.append(row)
    common = {
        "config": config_to_dict(cfg),
        "fingerprint": run_data.fingerprint,
        "preprocess": run_data.preprocess,
        "label_names": dict(run_data.label_names),
        "network_name": cfg.network.name,
        "in_channels": run_data.in_channels,
        "out_channels": run_data.num_classes,
    }
    if is_best:
        save_checkpoint(run_dir / BEST, {**common, "model": network.state_dict(), "epoch": state.epoch,
                                         "dice": dict(state.best_per_class), "mean_dice": state.best_dice})
    save_checkpoint(run_dir / LAST, {
        **common,
        "model": network.state_dict(),
        "epoch": state.epoch,
        "iteration": state.iteration,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"iteration": state.iteration, "lr": row["lr"]},  # lr_at() is a pure function
        "scaler": scaler.state_dict(),
        "rng": capture_rng_state(),
        "sampler": {"epoch": state.epoch, "seed": cfg.train.seed},
        "state": {k: v for k, v in dataclasses.asdict(state).items()},
    })
    log.log_epoch(row)
    if "mean_dice" in row:
        log.draw_curves()


def _restore(saved: dict, network, optimizer, scaler) -> _State:
    network.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    restore_rng_state(saved["rng"])
    state = _State(**saved["state"])
    if state.epoch != saved["sampler"]["epoch"]:
        raise DataError(f"last.pt is inconsistent: {state.epoch} epochs done but sampler at epoch "
                        f"{saved['sampler']['epoch']}; resume from a copy of the run or start it again")
    logger.info("resumed after epoch %d (iteration %d)", state.epoch, state.iteration)
    return state
