"""What a slice run needs before its first step: patient-level folds, fingerprint, cached slice stacks."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from radseg.atomic import write_text_atomic
from radseg.configs.schema import RadsegConfig
from radseg.errors import DataError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.slices.samples import SliceCase, build_slice_transforms, class_balance, load_slice_cases, \
    resolve_label_values, user_errors
from radseg.pipeline.train.run_setup import run_fingerprint

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"


@dataclass
class SliceRunData:
    """The training and validation slice stacks and what was learnt about the data."""

    train_cases: list[SliceCase]
    val_cases: list[SliceCase]
    in_channels: int
    label_values: dict[str, list[int]]
    fingerprint: dict
    preprocess: dict
    patient_of: Callable[[str], str]
    balance: str = ""
    patients: dict[str, str] = field(default_factory=dict)


def prepare_slice_data(cfg: RadsegConfig, data: Path, run_dir: Path, info: ddp.DistInfo, *, fresh: bool,
                       progress: bool = True) -> SliceRunData:
    """Folds by patient (leaks refused), fingerprint of the training cases, cached slice stacks.

    Args:
        cfg: the run config.
        data: the dataset root.
        run_dir: the run folder (splits.json, fingerprint.json).
        info: this process's place in the job (rank 0 writes; every rank loads all cases).
        fresh: a new run (the fingerprint is recomputed).
        progress: show progress bars.

    Raises:
        ConfigError: no liver (or lesion) label to learn.
        DataError: a split puts a patient on both sides, a scan is thinner than the 2.5D context.
    """
    from radseg.pipeline.data.cache import build_dataset, preprocess_settings
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.pipeline.data.splits import patient_lookup
    from radseg.transforms.fingerprint import resolve_preprocess

    spec = discover_dataset(data)
    modality = spec.modality if cfg.data.modality == "auto" else cfg.data.modality
    liver, lesion = resolve_label_values(spec.labels, cfg.slices)
    patient_of = patient_lookup(spec.training, cfg.slices.patient_pattern)
    train_cases, val_cases = _fold_cases(cfg, spec.training, run_dir, patient_of, info)
    fingerprint = run_fingerprint(to_datalist(train_cases), modality, run_dir, info, fresh, progress)
    resolved = resolve_preprocess(cfg.preprocess, fingerprint, modality)
    transform = build_slice_transforms(resolved, cfg, (liver, lesion), image_dtype=cfg.cache.image_dtype)
    settings = preprocess_settings(resolved, cfg.cache.image_dtype)
    stacks = []
    for name, cases in (("train", train_cases), ("val", val_cases)):
        with user_errors():
            dataset = build_dataset(to_datalist(cases), transform, cfg.cache, settings=settings, progress=progress)
        stacks.append(load_slice_cases(dataset, progress=progress, desc=f"{name} slices"))
    balance = "\n".join(class_balance(s, name) for name, s in zip(("training", "validation"), stacks))
    logger.info("slice class balance (target %s):\n%s", cfg.slices.target, balance)
    patients = {c.case_id: patient_of(c.case_id) for c in train_cases + val_cases}
    return SliceRunData(stacks[0], stacks[1], len(spec.channel_names), {"liver": liver, "lesion": lesion},
                        fingerprint.to_dict(), resolved.to_dict(), patient_of, balance, patients)


def _fold_cases(cfg: RadsegConfig, cases: list, run_dir: Path, patient_of, info: ddp.DistInfo) -> tuple[list, list]:
    """The fold's cases: from ``slices.splits_file`` (checked) or patient-level folds in the run folder."""
    from radseg.pipeline.data.splits import check_patient_split, load_or_create_splits

    ids = [case.case_id for case in cases]
    source = Path(cfg.slices.splits_file) if cfg.slices.splits_file else run_dir / SPLITS_FILE
    if cfg.slices.splits_file and not source.is_file():
        raise DataError(f"slices.splits_file {source} does not exist; fix the path or unset it to split by patient")

    def _load():
        folds = load_or_create_splits(source, ids, cfg.data.num_folds, cfg.data.split_seed, patient_of)
        if source != run_dir / SPLITS_FILE:
            write_text_atomic(run_dir / SPLITS_FILE, json.dumps(folds, indent=2) + "\n")
        return folds

    fold = ddp.run_on_main(_load, info)[cfg.data.fold]
    check_patient_split(fold["train"], fold["val"], patient_of, f"fold {cfg.data.fold} of {source}",
                        "fix the splits file, or unset slices.splits_file to split by patient")
    by_id = {case.case_id: case for case in cases}
    logger.info("fold %d: %d training and %d validation cases (%d and %d patients)", cfg.data.fold,
                len(fold["train"]), len(fold["val"]), len({patient_of(c) for c in fold["train"]}),
                len({patient_of(c) for c in fold["val"]}))
    return [by_id[i] for i in fold["train"]], [by_id[i] for i in fold["val"]]
