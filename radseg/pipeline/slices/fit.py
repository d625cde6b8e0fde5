"""``fit_slices``: train a slice classifier on the 3D branch's engine (``radseg slices train``).

The run folder, config checks, check-data, optimiser, schedule, epoch loop, checkpoints and run
log are the 3D branch's own (:mod:`radseg.pipeline.train`). As there, every epoch reseeds from
``(train.seed, epoch, rank)`` and checkpoints are written at epoch ends, so a killed run resumed
from ``last.pt`` ends with the same weights as an uninterrupted one. The decision threshold is
chosen on the validation slices (Youden's J) and stored in ``best.pt``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radseg.configs.loader import config_to_dict, validate_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import DataError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.core.checkpoint import BEST, LAST, capture_rng_state, restore_rng_state, save_checkpoint
from radseg.pipeline.evaluate.classification import binary_metrics, youden_threshold
from radseg.pipeline.predict.inference import resolve_amp
from radseg.pipeline.slices.infer import slice_probabilities
from radseg.pipeline.slices.run_data import SliceRunData, prepare_slice_data
from radseg.pipeline.slices.sampling import SliceSamples, build_slice_loader
from radseg.pipeline.train.loop import cycle_batches, run_epochs, train_one_epoch
from radseg.pipeline.train.run_checks import require_network_kind
from radseg.pipeline.train.run_setup import prepare_run_folder
from radseg.pipeline.train.schedule import build_optimizer

logger = logging.getLogger(__name__)


@dataclass
class SliceFitResult:
    """What :func:`fit_slices` did; ``str()`` is the summary the CLI prints."""

    run_dir: Path
    epochs: int
    best_epoch: int
    best_auc: float
    threshold: float
    balance: str
    seconds: float

    def __str__(self) -> str:
        best = (f"best validation slice AUC {self.best_auc:.4f} at epoch {self.best_epoch}, threshold "
                f"{self.threshold:.3f}" if self.best_epoch else "no validation yet")
        return f"{self.balance}\ntrained {self.epochs} epochs in {self.seconds:.0f} s; {best}; run folder {self.run_dir}"


@dataclass
class _State:
    """Everything that changes during training and is saved in last.pt (besides weights)."""

    epoch: int = 0
    iteration: int = 0
    best_score: list[float] = field(default_factory=lambda: [-math.inf, -math.inf])
    best_epoch: int = 0
    threshold: float = 0.5
    history: list[dict[str, Any]] = field(default_factory=list)


class SliceLoss(torch.nn.Module):
    """Cross-entropy over slices: logits ``(B, K)`` or ``(B, L, K)``, labels ``(B,)`` or ``(B, L)``."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long())


def check_slice_network(cfg: RadsegConfig) -> None:
    """The config's network is a registered 2D classifier that takes ``train.roi_size`` slices.

    Raises:
        ConfigError: another kind of network, or an in-plane size it cannot take.
    """
    from radseg.networks import check_network_config

    validate_config(cfg)
    require_network_kind(cfg, "classification", 2, "radseg slices trains 2D slice classifiers",
                         " (or use --config slices)")
    check_network_config(cfg)


def fit_slices(cfg: RadsegConfig | None, data: str | Path, output: str | Path, fold: int | None = None,
               resume: bool = False, overwrite: bool = False, *, progress: bool = True) -> SliceFitResult:
    """Train a slice classifier on a dataset into a run folder.

    Args:
        cfg: the run's config (``slices`` preset); None with ``resume`` takes the run's own.
        data: the dataset root (checked with check-data first).
        output: the run folder (config.yaml, splits.json, fingerprint.json, last.pt, best.pt,
            metrics.csv, curves.png, train.log).
        fold: cross-validation fold (by patient); None uses ``data.fold``.
        resume: continue the run in ``output`` (or extend a finished one).
        overwrite: replace an existing run in ``output``.
        progress: show progress bars.

    Raises:
        ConfigError: a network that is not a 2D classifier, no liver label, an existing run.
        DataError: the dataset fails check-data, a split mixes a patient's slices, a scan is
            thinner than the 2.5D context.
    """
    start = time.perf_counter()
    info = ddp.init_distributed(cfg.train.device if cfg is not None else "auto")
    ddp.log_device(info.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg is not None:
            _check_labels(cfg, data)  # before check-data reads every voxel
        cfg, saved = prepare_run_folder(cfg, Path(output), fold, resume, overwrite, info, data,
                                        check_network=check_slice_network)
        run = prepare_slice_data(cfg, Path(data), Path(output), info, fresh=saved is None, progress=progress)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        return _train(cfg, run, Path(output), saved, info, start, progress)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)  # callers' own setting, not ours
        ddp.cleanup_distributed(info)


def _check_labels(cfg: RadsegConfig, data: str | Path) -> None:
    """Refuse a dataset without the labels the classifier learns, before any expensive work."""
    from radseg.pipeline.data.datalist import discover_dataset
    from radseg.pipeline.slices.samples import resolve_label_values

    resolve_label_values(discover_dataset(data).labels, cfg.slices)


def _train(cfg: RadsegConfig, run: SliceRunData, run_dir: Path, saved, info, start: float, progress: bool):
    from radseg.networks import build_network, get_entry

    torch.manual_seed(cfg.train.seed)
    sequence = get_entry(cfg.network.name).sequence
    network = build_network(cfg.network, in_channels=run.in_channels * cfg.slices.context_slices, out_channels=2)
    network = network.to(info.device)
    optimizer = build_optimizer(cfg.train, network.parameters())
    amp = resolve_amp(cfg.train.amp, info.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    state = _restore(saved, network, optimizer, scaler) if saved else _State()
    model = ddp.wrap_ddp(network, info)
    samples = SliceSamples(run.train_cases, cfg.slices.target, cfg.slices.context_slices,
                           cfg.slices.sequence_length if sequence else None)
    run_epochs(state.epoch, cfg.train.max_epochs, run_dir, state.history, info, progress,
               lambda epoch: _run_epoch(cfg, run, samples, model, network, optimizer, scaler, amp, state, epoch,
                                        info, sequence, progress),
               lambda row, log: _save_epoch(cfg, run, run_dir, network, optimizer, scaler, state, row, log))
    best_auc = state.best_score[0] if state.best_epoch else math.nan
    return SliceFitResult(run_dir, state.epoch, state.best_epoch, best_auc, state.threshold, run.balance,
                          time.perf_counter() - start)


def _seed_epoch(seed: int, epoch: int, rank: int) -> int:
    """One 32-bit seed per (run seed, epoch, rank), as the 3D branch: resumed epochs redraw the same slices."""
    value = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return value


def _run_epoch(cfg, run, samples, model, network, optimizer, scaler, amp, state, epoch, info, sequence, progress):
    epoch_seed = _seed_epoch(cfg.train.seed, epoch, info.rank)
    per_epoch = cfg.train.iterations_per_epoch * cfg.train.batch_size
    loader = build_slice_loader(samples, cfg.train.batch_size, per_epoch, cfg.slices.balanced_sampling, epoch_seed)
    metrics = train_one_epoch(
        model, cycle_batches(loader, cfg.train.iterations_per_epoch), SliceLoss(), optimizer, cfg.train,
        start_iteration=state.iteration, device=info.device, amp=amp, scaler=scaler, channels_last=False,
        progress=progress and info.is_main, desc=f"epoch {epoch + 1}/{cfg.train.max_epochs}",
    )
    loss = ddp.all_reduce_sum(torch.tensor([metrics["loss"]], dtype=torch.float64), info) / info.world_size
    state.iteration += metrics["iterations"]
    state.epoch = epoch + 1
    row = {"epoch": epoch + 1, "loss": float(loss), "lr": metrics["lr"], "epoch_time": metrics["epoch_time"],
           "data_time": metrics["data_time"]}
    if state.epoch % cfg.train.val_interval == 0 or state.epoch == cfg.train.max_epochs:
        row.update(validate_slices(network, run.val_cases, cfg, sequence, info.device, amp))
        _update_best(state, row)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "is_best"))
    logger.info("epoch %d: %s", epoch + 1, shown)
    return row


def validate_slices(network, cases, cfg: RadsegConfig, sequence: bool, device, amp) -> dict[str, float]:
    """Validation loss, AUC, accuracy, sensitivity and specificity over the validation slices.

    The threshold is Youden's J on these slices (or ``slices.threshold`` when fixed) and is
    returned as ``threshold``.
    """
    network.eval()
    scores = [slice_probabilities(network, c.image, cfg.slices.context_slices, sequence, device=device, amp=amp)
              for c in cases]
    if not scores:
        raise DataError("the validation fold has no cases; use fewer folds (data.num_folds) or more cases")
    labels = np.concatenate([c.target(cfg.slices.target) for c in cases]).astype(np.int64)
    scores = np.concatenate(scores)
    threshold = youden_threshold(labels, scores) if cfg.slices.threshold == "auto" else float(cfg.slices.threshold)
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    metrics = binary_metrics(labels, scores, threshold)
    return {"val_loss": loss, **{f"val_{k}": v for k, v in metrics.items()}, "threshold": threshold}


def _update_best(state: _State, row: dict) -> None:
    auc = row["val_auc"]
    score = [-1.0 if math.isnan(auc) else auc, -row["val_loss"]]
    if score > state.best_score:
        state.best_score, state.best_epoch, state.threshold = score, row["epoch"], row["threshold"]
        row["is_best"] = 1


def _save_epoch(cfg, run: SliceRunData, run_dir: Path, network, optimizer, scaler, state: _State, row, log) -> None:
    is_best = row.pop("is_best", 0)
    state.history.append(row)
    common = {"config": config_to_dict(cfg), "fingerprint": run.fingerprint, "preprocess": run.preprocess,
              "label_values": dict(run.label_values), "target": cfg.slices.target, "network_name": cfg.network.name,
              "in_channels": run.in_channels, "out_channels": 2, "threshold": state.threshold}
    if is_best:
        metrics = {k: v for k, v in row.items() if k.startswith("val_")}
        save_checkpoint(run_dir / BEST, {**common, "model": network.state_dict(), "epoch": state.epoch,
                                         "validation": metrics})
    save_checkpoint(run_dir / LAST, {
        **common, "model": network.state_dict(), "epoch": state.epoch, "iteration": state.iteration,
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": capture_rng_state(),
        "sampler": {"epoch": state.epoch, "seed": cfg.train.seed}, "state": dataclasses.asdict(state),
    })
    log.log_epoch(row)
    if "val_auc" in row:
        log.draw_curves(metric_prefix="val_", metric_label="validation (slices)")


def _restore(saved: dict, network, optimizer, scaler) -> _State:
    network.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    restore_rng_state(saved["rng"])
    state = _State(**saved["state"])
    logger.info("resumed after epoch %d (iteration %d)", state.epoch, state.iteration)
    return state
