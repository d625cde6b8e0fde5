"""Everything :func:`radseg.pipeline.train.fit.fit` does before the first optimiser step.

:func:`prepare_run_folder` refuses bad input before anything is written: a config that cannot
resume the run, a patch the network rejects, a dataset that fails check-data, an existing run
without ``--resume``/``--overwrite``, a ``--resume`` on another dataset (the run's ``data.json``).
:func:`prepare_data` then splits the cases by fold, fingerprints every labelled case (or reuses the
fingerprint `radseg cache` stored), and builds the (sharded, cached) datasets.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from radseg.atomic import write_text_atomic
from radseg.configs.loader import config_to_dict, load_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError, RadsegError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.core.checkpoint import LAST, load_checkpoint
from radseg.pipeline.train.run_checks import (
    DATA_FILE, check_data, check_same_dataset, check_segmentation_network, dataset_record,
)
# a folder holding one of CHECKPOINTS is a run; one without is an unfinished start and is reused
from radseg.pipeline.train.run_folder import (  # noqa: F401 - CONFIG_FILE public here too
    CHECKPOINTS, CONFIG_FILE, refuse_foreign_files, remove_run_files, save_run_config,
)

if TYPE_CHECKING:
    from radseg.transforms.fingerprint import Fingerprint

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
FINGERPRINT_FILE = "fingerprint.json"
#: settings that may change when a run is resumed (everything else must match the run's config)
RESUMABLE_CHANGES = ("train.max_epochs", "train.val_interval", "train.device", "cache.mode", "cache.ram_budget_gb",
                     "cache.cache_dir", "inference.sw_batch_size", "data.root")


@dataclass
class RunData:
    """The datasets and what was learnt about the data, ready for training."""

    train_dataset: Any
    val_dataset: Any
    num_classes: int
    in_channels: int
    label_names: dict[int, str]
    fingerprint: dict
    preprocess: dict
    #: sampling weight of each training case of this rank (equal per case across DDP ranks)
    train_weights: list[float] | None = None

    @property
    def foreground_names(self) -> list[str]:
        """Class names without background, as used in metric columns (``dice_liver``)."""
        return [_column_name(self.label_names.get(i, str(i))) for i in range(1, self.num_classes)]


def prepare_run_folder(
    cfg: RadsegConfig | None, run_dir: Path, fold: int | None, resume: bool, overwrite: bool,
    info: ddp.DistInfo, data: str | Path, check_network: Callable[[RadsegConfig], None] | None = None,
) -> tuple[RadsegConfig, dict | None]:
    """Validate config, patch, data and run folder, then create the folder (rank 0).

    Args:
        check_network: refuses a config whose network the caller cannot train; None = 3D
            segmentation networks only (``radseg train``); the slice branch passes its own.

    Returns:
        The config to train with, and the last.pt contents when resuming (else None).

    Raises:
        ConfigError, DataError: see :func:`radseg.pipeline.train.fit.fit`.
    """
    check_run_output(run_dir, resume, overwrite)
    saved = _existing_run(run_dir, resume)
    cfg = _resolve_config(cfg, saved, run_dir, fold)
    (check_network or check_segmentation_network)(cfg)
    record = dataset_record(data)
    if resume:
        check_same_dataset(run_dir, record)
    check_data(cfg, data, info)
    ddp.barrier(info)  # every rank has looked at the folder before rank 0 changes it
    ddp.run_on_main(lambda: _prepare_folder(cfg, run_dir, saved, resume, overwrite, record), info)
    return cfg, saved


def check_run_output(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run folder that cannot be used, before any work (``train --budget`` calls it before planning).

    Raises:
        ConfigError: ``--resume`` with ``--overwrite``; a run there without ``--resume``/``--overwrite``;
            ``--resume`` where no run is; a file, or a folder holding files radseg did not write.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    exists = run_dir.exists() and any((run_dir / name).is_file() for name in CHECKPOINTS)
    if resume and not run_dir.is_dir():
        raise ConfigError(f"--resume: {run_dir} holds no run to resume; drop --resume to start a new run there")
    if exists and not (resume or overwrite):
        raise ConfigError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another --output"
        )
    refuse_foreign_files(run_dir)


def _prepare_folder(cfg: RadsegConfig, run_dir: Path, saved: dict | None, resume: bool, overwrite: bool,
                    record: dict) -> None:
    if overwrite and run_dir.exists():
        logger.warning("--overwrite: removing the earlier run in %s", run_dir)
        remove_run_files(run_dir)
    elif saved is None and not resume and run_dir.exists():
        remove_run_files(run_dir)  # an unfinished start (no checkpoint): begin again cleanly
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, run_dir)
    write_text_atomic(run_dir / DATA_FILE, json.dumps(record, indent=2) + "\n")


def _existing_run(run_dir: Path, resume: bool) -> dict | None:
    """last.pt when resuming (None when the run was killed before its first checkpoint)."""
    if not resume:
        return None
    if not (run_dir / LAST).is_file():
        logger.warning("--resume: %s has no %s yet (killed before the first epoch ended); starting at epoch 0",
                       run_dir, LAST)
        return None
    return load_checkpoint(run_dir / LAST)


def _resolve_config(cfg: RadsegConfig | None, saved: dict | None, run_dir: Path, fold: int | None) -> RadsegConfig:
    if cfg is None:
        if saved is None:
            raise ConfigError(f"no config given and no checkpoint in {run_dir} to take it from; pass --config")
        # the run's config.yaml, as the CLI's resume reads it (budget pacing may have changed its epochs
        # after last.pt was written); the checkpoint's copy when the file is gone
        own = run_dir / CONFIG_FILE
        cfg = load_config(own) if own.is_file() else load_config(saved["config"])
    if fold is not None:
        if fold != "all" and not 0 <= fold < cfg.data.num_folds:
            raise ConfigError(f"--fold must be in 0..{cfg.data.num_folds - 1} (data.num_folds) or all, not {fold}")
        cfg.data.fold = fold
    if saved is not None:
        _check_resumable(config_to_dict(cfg), saved["config"], run_dir)
    return cfg


def _check_resumable(now: dict, before: dict, run_dir: Path) -> None:
    now_flat, before_flat = _flatten(now), _flatten(before)
    diffs = [
        f"{key}: {before_flat.get(key)!r} in the run, {now_flat.get(key)!r} now"
        for key in sorted(set(now_flat) | set(before_flat))
        if now_flat.get(key) != before_flat.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume {run_dir} with a different config ({'; '.join(diffs)}); resume with the run's own "
            f"config (--config {run_dir / CONFIG_FILE}) and change only {', '.join(RESUMABLE_CHANGES)}"
        )


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not (dotted == "network.params"):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def prepare_data(cfg: RadsegConfig, data: Path, run_dir: Path, info: ddp.DistInfo, *, fresh: bool,
                 progress: bool = True, known_fingerprint: Fingerprint | None = None) -> RunData:
    """Folds, fingerprint, transforms and this rank's (cached) datasets.

    Args:
        cfg: the run config.
        data: the dataset root.
        run_dir: the run folder (splits.json and fingerprint.json are kept there).
        info: this process's place in the job.
        fresh: a new run (the fingerprint is recomputed rather than read from the run folder).
        progress: show progress bars.
        known_fingerprint: a fingerprint of this dataset already computed (by ``radseg plan`` in a
            ``train --budget`` run); a new run takes it instead of reading every case again when it
            covers the same cases with the same modality. Without it, the one ``radseg cache``
            stored for these files is taken.
    """
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.transforms.fingerprint import resolve_preprocess

    spec = discover_dataset(data)
    modality = spec.modality if cfg.data.modality == "auto" else cfg.data.modality
    train_cases, val_cases = _fold_cases(cfg, spec, run_dir, info)
    # the fingerprint covers every labelled case, as nnU-Net's does: the preprocessing (and so the
    # cache entries) is the same for every fold and for `radseg cache`
    labelled = to_datalist(spec.training)
    known = known_fingerprint
    if known is None and fresh:
        known = _cached_fingerprint(spec.name, labelled, modality, cfg)
    fingerprint = run_fingerprint(labelled, modality, run_dir, info, fresh, progress, known=known)
    resolved = resolve_preprocess(cfg.preprocess, fingerprint, modality)
    train_ds, val_ds, weights = _datasets(cfg, resolved, spec.num_classes, to_datalist(train_cases),
                                          to_datalist(val_cases), info, progress)
    return RunData(train_ds, val_ds, spec.num_classes, len(spec.channel_names), dict(spec.labels),
                   fingerprint.to_dict(), resolved.to_dict(), weights)


def _cached_fingerprint(name: str, datalist: list[dict], modality: str, cfg: RadsegConfig) -> Fingerprint | None:
    """The fingerprint ``radseg cache`` stored for exactly these files and modality, or None."""
    from radseg.pipeline.data.fill_cache import stored_fingerprint_path
    from radseg.transforms.fingerprint import load_fingerprint

    path = stored_fingerprint_path(name, datalist, modality, cfg.cache)
    if not path.is_file():
        return None
    try:
        fingerprint = load_fingerprint(path)
    except (RadsegError, OSError, ValueError) as err:
        logger.warning("fingerprint %s cannot be read (%s); measuring the dataset again", path, err)
        return None
    logger.info("fingerprint: reusing %s (written by radseg cache for the same files)", path)
    return fingerprint


def _covers(fingerprint: Fingerprint | None, datalist: list[dict], modality: str) -> bool:
    """Whether ``fingerprint`` was measured on the cases of ``datalist`` (in order) with ``modality``."""
    return fingerprint is not None and fingerprint.measured_on(datalist, modality)


def _fold_cases(cfg: RadsegConfig, spec, run_dir: Path, info: ddp.DistInfo) -> tuple[list, list]:
    from radseg.pipeline.data.splits import load_or_create_splits

    ids = [case.case_id for case in spec.training]
    folds = ddp.run_on_main(
        lambda: load_or_create_splits(run_dir / SPLITS_FILE, ids, cfg.data.num_folds, cfg.data.split_seed), info)
    fold = folds[0 if cfg.data.fold == "all" else cfg.data.fold]
    if cfg.data.fold == "all":  # nnU-Net's fold "all": every case trains; fold 0's cases only monitor
        fold = {"train": list(ids), "val": fold["val"]}
        logger.warning("fold all: training on all %d cases; validation scores fold 0's %d cases, which are also "
                       "in training, so its Dice is optimistic (score a separate test set)", len(ids), len(fold["val"]))
    by_id = {case.case_id: case for case in spec.training}
    logger.info("fold %s: %d training and %d validation cases", cfg.data.fold, len(fold["train"]), len(fold["val"]))
    return [by_id[i] for i in fold["train"]], [by_id[i] for i in fold["val"]]


def run_fingerprint(datalist: list[dict], modality: str, run_dir: Path, info: ddp.DistInfo, fresh: bool,
                    progress: bool, known: Fingerprint | None = None) -> Fingerprint:
    """The run folder's fingerprint: computed once by the main rank (again when ``fresh``), read by all.

    ``known`` (a :class:`~radseg.transforms.fingerprint.Fingerprint`) is written instead of a new one
    when it was measured on exactly these cases with this modality.
    """
    from radseg.transforms.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint

    path = run_dir / FINGERPRINT_FILE

    def _compute() -> None:
        if not fresh and path.is_file():
            return
        if _covers(known, datalist, modality):
            logger.info("fingerprint: measured already on the same %d cases (by radseg plan or radseg cache)",
                        len(datalist))
            save_fingerprint(known, path)
        else:
            save_fingerprint(compute_fingerprint(datalist, modality, progress=progress), path)

    ddp.run_on_main(_compute, info)
    return load_fingerprint(path)


def _datasets(cfg: RadsegConfig, resolved, num_classes: int, train_list: list[dict], val_list: list[dict],
              info: ddp.DistInfo, progress: bool):
    from radseg.pipeline.data.cache import GIB, build_dataset, cached_bytes
    from radseg.pipeline.data.shards import weighted_shard
    from radseg.transforms.preprocess import build_train_transforms, build_val_transforms

    settings = {**resolved.to_dict(), "image_dtype": cfg.cache.image_dtype}
    # each rank caches only its own shard of the training cases, weighted so that every case is drawn
    # equally often across the ranks; validation cases are disjoint
    train_shard, weights = weighted_shard(train_list, info.rank, info.world_size)
    # cache.ram_budget_gb is per machine: the processes on it share it, training cases first
    budget = cfg.cache.ram_budget_gb / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    train_cache = dataclasses.replace(cfg.cache, ram_budget_gb=budget)
    train_ds = build_dataset(train_shard, build_train_transforms(cfg, resolved, num_classes), train_cache,
                             settings=settings, progress=progress)
    val_shard = ddp.split_for_rank(val_list, info)
    left = max(budget - sum(cached_bytes(train_ds)) / GIB, 0.0)
    # validation caches the same preprocessed volumes as training (and `radseg cache`): same entries
    val_ds = build_dataset(val_shard, build_val_transforms(resolved, cfg.cache.image_dtype),
                           dataclasses.replace(cfg.cache, ram_budget_gb=left), settings=settings, progress=progress)
    return train_ds, val_ds, weights


def _column_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(name).strip().lower())
