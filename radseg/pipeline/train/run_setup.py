"""Everything :func:`radseg.pipeline.train.fit.fit` does before the first optimiser step.

:func:`prepare_run_folder` refuses bad input before anything is written: a config that cannot
resume the run, a patch the network rejects, a dataset that fails check-data, an existing run
without ``--resume``/``--overwrite``. :func:`prepare_data` then splits the cases by fold,
fingerprints the training cases, and builds the (sharded, cached) datasets.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radseg.configs.loader import config_to_dict, load_config, save_config, validate_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError, DataError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.core.checkpoint import BEST, LAST, load_checkpoint

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.json"
FINGERPRINT_FILE = "fingerprint.json"
#: a folder holding one of these is a run; one without is an unfinished start and is reused
CHECKPOINTS = (LAST, BEST)
TENSORBOARD_DIR = "tensorboard"
#: what a run writes before its first checkpoint (cleared when such a folder is reused)
_RUN_FILES = ("config.yaml", "splits.json", "fingerprint.json", "metrics.csv", "curves.png", "train.log", "plan.yaml")
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

    @property
    def foreground_names(self) -> list[str]:
        """Class names without background, as used in metric columns (``dice_liver``)."""
        return [_column_name(self.label_names.get(i, str(i))) for i in range(1, self.num_classes)]


def prepare_run_folder(
    cfg: RadsegConfig | None, run_dir: Path, fold: int | None, resume: bool, overwrite: bool,
    info: ddp.DistInfo, data: str | Path,
) -> tuple[RadsegConfig, dict | None]:
    """Validate config, patch, data and run folder, then create the folder (rank 0).

    Returns:
        The config to train with, and the last.pt contents when resuming (else None).

    Raises:
        ConfigError, DataError: see :func:`radseg.pipeline.train.fit.fit`.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    saved = _existing_run(run_dir, resume, overwrite)
    _refuse_foreign_files(run_dir)
    cfg = _resolve_config(cfg, saved, run_dir, fold)
    _check_roi(cfg)
    _check_data(cfg, data, info)
    ddp.barrier(info)  # every rank has looked at the folder before rank 0 changes it
    ddp.run_on_main(lambda: _prepare_folder(cfg, run_dir, saved, resume, overwrite), info)
    return cfg, saved


def _prepare_folder(cfg: RadsegConfig, run_dir: Path, saved: dict | None, resume: bool, overwrite: bool) -> None:
    if overwrite and run_dir.exists():
        logger.warning("--overwrite: removing the earlier run in %s", run_dir)
        _remove_run_files(run_dir)
    elif saved is None and not resume and run_dir.exists():
        _remove_run_files(run_dir)  # an unfinished start (no checkpoint): begin again cleanly
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)


def _run_entry(name: str) -> bool:
    """Whether a name in a run folder is one radseg writes there (files, checkpoints, temp files)."""
    return name in _RUN_FILES or name in CHECKPOINTS or name == TENSORBOARD_DIR or ".tmp" in name


def _refuse_foreign_files(run_dir: Path) -> None:
    """A run folder may hold only what radseg writes there: never replace or clear anything else."""
    if not run_dir.is_dir():
        if run_dir.exists():
            raise ConfigError(f"--output {run_dir} is a file; pass a folder for the run")
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if not _run_entry(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"--output {run_dir} holds files radseg did not write ({shown}); "
                          "choose an empty or new folder for the run")


def _remove_run_files(run_dir: Path) -> None:
    """Delete what an earlier run wrote in ``run_dir`` (and nothing else: see _refuse_foreign_files)."""
    for path in run_dir.iterdir():
        if not _run_entry(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _existing_run(run_dir: Path, resume: bool, overwrite: bool) -> dict | None:
    """last.pt when resuming; refuse a run (a folder with a checkpoint) without --resume/--overwrite."""
    exists = run_dir.exists() and any((run_dir / name).is_file() for name in CHECKPOINTS)
    if resume:
        if not run_dir.is_dir():
            raise ConfigError(f"--resume: {run_dir} holds no run to resume; drop --resume to start a new run there")
        if not (run_dir / LAST).is_file():
            logger.warning("--resume: %s has no %s yet (killed before the first epoch ended); starting at epoch 0",
                           run_dir, LAST)
            return None
        return load_checkpoint(run_dir / LAST)
    if exists and not overwrite:
        raise ConfigError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another --output"
        )
    return None


def _resolve_config(cfg: RadsegConfig | None, saved: dict | None, run_dir: Path, fold: int | None) -> RadsegConfig:
    if cfg is None:
        if saved is None:
            raise ConfigError(f"no config given and no checkpoint in {run_dir} to take it from; pass --config")
        cfg = load_config(saved["config"])
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


def _check_roi(cfg: RadsegConfig) -> None:
    """A config built in Python (not through load_config) gets the same checks, the patch included.

    ``fit`` trains volumetric segmentation: 2D and classification networks are refused here.
    """
    from radseg.networks import check_network_config, get_entry, list_networks

    validate_config(cfg)
    check_network_config(cfg)
    entry = get_entry(cfg.network.name)
    if entry.task != "segmentation" or entry.spatial_dims != 3:
        choices = ", ".join(list_networks(task="segmentation", spatial_dims=3))
        raise ConfigError(f"network {entry.name!r} is a {entry.spatial_dims}D {entry.task} network, but radseg train "
                          f"trains 3D segmentation networks; set network.name to one of {choices}")


def _check_folds(cfg: RadsegConfig, data: str | Path) -> None:
    """Make the folds once without writing them, so an impossible split fails before the folder exists.

    The modality is settled here too: the normalisation depends on it.
    """
    from radseg.pipeline.data.datalist import discover_dataset
    from radseg.pipeline.data.splits import make_folds

    spec = discover_dataset(data)
    if cfg.data.modality == "auto" and spec.modality not in ("CT", "MRI"):
        raise ConfigError(f"dataset {data} does not declare its modality ({spec.layout} layout); "
                          "set data.modality=CT or data.modality=MRI (e.g. --set data.modality=CT)")
    ids = [case.case_id for case in spec.training]
    if len(ids) < 2:
        raise DataError(f"{data} has {len(ids)} labelled training case(s); training needs at least 2 "
                        "(one to train on, one to validate); add cases")
    make_folds(ids, cfg.data.num_folds, cfg.data.split_seed)


def _check_data(cfg: RadsegConfig, data: str | Path, info: ddp.DistInfo) -> None:
    """Folds and modality (cheap), then check-data (every voxel) on rank 0; every rank raises if it fails."""

    def _check() -> None:
        from radseg.pipeline.data.check_data import check_dataset

        _check_folds(cfg, data)
        report = check_dataset(data)
        if not report.ok:
            raise DataError(f"dataset {data} fails check-data ({report.summary()}):\n" + "\n".join(report.lines())
                            + "\nfix the dataset (see `radseg check-data`) and train again")

    ddp.run_on_main(_check, info)


def prepare_data(cfg: RadsegConfig, data: Path, run_dir: Path, info: ddp.DistInfo, *, fresh: bool,
                 progress: bool = True) -> RunData:
    """Folds, fingerprint, transforms and this rank's (cached) datasets.

    Args:
        cfg: the run config.
        data: the dataset root.
        run_dir: the run folder (splits.json and fingerprint.json are kept there).
        info: this process's place in the job.
        fresh: a new run (the fingerprint is recomputed rather than read from the run folder).
        progress: show progress bars.
    """
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.transforms.fingerprint import resolve_preprocess

    spec = discover_dataset(data)
    modality = spec.modality if cfg.data.modality == "auto" else cfg.data.modality
    train_cases, val_cases = _fold_cases(cfg, spec, run_dir, info)
    fingerprint = _fingerprint(to_datalist(train_cases), modality, run_dir, info, fresh, progress)
    resolved = resolve_preprocess(cfg.preprocess, fingerprint, modality)
    train_ds, val_ds = _datasets(cfg, resolved, spec.num_classes, to_datalist(train_cases),
                                 to_datalist(val_cases), info, progress)
    return RunData(train_ds, val_ds, spec.num_classes, len(spec.channel_names), dict(spec.labels),
                   fingerprint.to_dict(), resolved.to_dict())


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


def _fingerprint(datalist: list[dict], modality: str, run_dir: Path, info: ddp.DistInfo, fresh: bool,
                 progress: bool):
    from radseg.transforms.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint

    path = run_dir / FINGERPRINT_FILE

    def _compute() -> None:
        if fresh or not path.is_file():
            save_fingerprint(compute_fingerprint(datalist, modality, progress=progress), path)

    ddp.run_on_main(_compute, info)
    return load_fingerprint(path)


def _datasets(cfg: RadsegConfig, resolved, num_classes: int, train_list: list[dict], val_list: list[dict],
              info: ddp.DistInfo, progress: bool):
    from radseg.pipeline.data.cache import GIB, build_dataset, cached_bytes, shard_for_rank
    from radseg.transforms.preprocess import build_train_transforms, build_val_transforms

    settings = resolved.to_dict()
    # each rank caches only its own shard of the training cases; validation cases are disjoint too
    train_shard = shard_for_rank(train_list, info.rank, info.world_size)
    if not train_shard:
        raise ConfigError(f"{info.world_size} processes but only {len(train_list)} training cases: rank {info.rank} "
                          "has none; use fewer processes (--nproc-per-node) or more cases")
    # cache.ram_budget_gb is per machine: the processes on it share it, training cases first
    budget = cfg.cache.ram_budget_gb / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    train_cache = dataclasses.replace(cfg.cache, ram_budget_gb=budget)
    train_ds = build_dataset(train_shard, build_train_transforms(cfg, resolved, num_classes), train_cache,
                             settings={**settings, "image_dtype": cfg.cache.image_dtype}, progress=progress)
    val_shard = ddp.split_for_rank(val_list, info)
    left = max(budget - sum(cached_bytes(train_ds)) / GIB, 0.0)
    val_ds = build_dataset(val_shard, build_val_transforms(resolved), dataclasses.replace(cfg.cache, ram_budget_gb=left),
                           settings={**settings, "image_dtype": "float32"}, progress=progress)
    return train_ds, val_ds


def _column_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(name).strip().lower())
