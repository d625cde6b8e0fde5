"""``radseg plan``: fingerprint a dataset, probe and calibrate this machine, write the plan as YAML.

The plan is an ordinary config (``load_config`` reads it; ``radseg train --config plan.yaml`` trains
with it), with one comment line above each planned setting saying why it was chosen.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from radseg.atomic import write_text_atomic
from radseg.configs.loader import config_to_dict
from radseg.configs.schema import AugmentConfig, CacheConfig, PreprocessConfig
from radseg.errors import ConfigError, DataError
from radseg.pipeline.core import distributed as ddp
from radseg.pipeline.plan.budget import format_seconds, parse_budget
from radseg.pipeline.plan.layout import apply_layout, layout_decision, plan_layout_timer
from radseg.pipeline.plan.machine import detect_machine, measured_step_timer
from radseg.pipeline.plan.planner import DatasetFacts, Plan, plan_from_fingerprint
from radseg.pipeline.plan.rules import planned_workers, sampler_decisions, spacing_candidates

logger = logging.getLogger(__name__)


def plan_dataset(data: str | Path, budget: str | float = "15m", device: str = "auto", *, fold_all: bool = False,
                 count_planning: bool = False, progress: bool = True, log_device: bool = True) -> Plan:
    """Plan a training run of ``data`` on this machine within ``budget``.

    Args:
        data: the dataset (any layout :func:`radseg.pipeline.data.datalist.discover_dataset` reads).
        budget: wall clock such as ``"15m"`` or ``"2h"`` (a number is minutes).
        device: "auto", "cpu" or "cuda".
        fold_all: plan for training on every case.
        count_planning: count the time spent planning against the budget (``train --budget``).
        progress: show progress bars.
        log_device: log the device the calibration runs on (False when the caller has logged it).

    Returns:
        The :class:`Plan`.

    Raises:
        ConfigError, DataError: bad input (budget, device, dataset), before any training.
    """
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.transforms.fingerprint import compute_fingerprint

    start = time.perf_counter()
    seconds = parse_budget(budget)
    machine = detect_machine(device)
    if log_device:
        ddp.log_device(machine.device)
    spec = discover_dataset(data)
    if spec.modality not in ("CT", "MRI"):
        raise ConfigError(f"dataset {data} does not declare its modality ({spec.layout} layout); add it to "
                          "dataset.json (modality / channel_names), e.g. {\"0\": \"CT\"}")
    if len(spec.training) < 2:
        raise DataError(f"{data} has {len(spec.training)} labelled training case(s); a plan needs at least 2 "
                        "(one to train on, one to validate); add labelled cases")
    datalist = to_datalist(spec.training)
    fingerprint = compute_fingerprint(datalist, spec.modality, objects=True, progress=progress)
    read_seconds = (time.perf_counter() - start) / len(datalist)
    logger.info("plan: preprocessing one case, then timing training steps on %s (a minute or two)", machine.device)
    extent, prep_seconds, probe = _probe(datalist, fingerprint, spec.modality)
    facts = DatasetFacts(len(datalist), dict(spec.labels), len(spec.channel_names), spec.modality, extent,
                         read_seconds, prep_seconds)
    timer = measured_step_timer(machine.device)
    data_timer = None
    if fingerprint.classes is not None:  # the plan's own sampler on the probe case, through a real DataLoader
        sampler = {d.key.split(".", 1)[1]: d.value for d in
                   sampler_decisions(fingerprint.classes, facts.label_names, facts.num_classes)}
        workers = planned_workers(machine.cores)
        data_timer = measured_step_timer(machine.device, data=probe_batches(
            probe, AugmentConfig(num_samples=1, flip_prob=0.0, **sampler), facts.num_classes, workers))
    elapsed = time.perf_counter() - start if count_planning else 0.0
    # train --budget (count_planning) hands this fingerprint to its run; a saved plan's run measures its own
    plan = plan_from_fingerprint(fingerprint, facts, machine, seconds, timer, elapsed_seconds=elapsed,
                                 fold_all=fold_all, data_timer=data_timer, fingerprint_reused=count_planning)
    # the planned step in each memory layout: which one oneDNN runs faster depends on the CPU (timed
    # before the budget's re-plan so that it counts; the timer remembers, so the same plan costs no more)
    layout = layout_decision(machine.device, plan_layout_timer(plan, facts.in_channels, facts.num_classes, timer))
    if count_planning:  # the calibration took time too: plan again with what it measured (no new steps)
        plan = plan_from_fingerprint(fingerprint, facts, machine, seconds, timer,
                                     elapsed_seconds=time.perf_counter() - start, fold_all=fold_all,
                                     data_timer=data_timer, fingerprint_reused=True)
        layout = layout_decision(machine.device, plan_layout_timer(plan, facts.in_channels, facts.num_classes, timer))
    apply_layout(plan, layout)
    plan.notes.append(f"planned in {time.perf_counter() - start:.0f} s on {len(datalist)} cases of {spec.root} "
                      f"(reading {read_seconds:.2f} s and preprocessing {prep_seconds:.2f} s per case)")
    plan.config.data.root = str(spec.root)
    logger.info("%s", plan.summary())
    return plan


def probe_batches(item: dict, augment: AugmentConfig, num_classes: int, workers: int):
    """``batches(roi_size, patches)``: a DataLoader of training patches cut from one preprocessed case.

    The patches go through the training chain's random tail (:func:`build_augment_transforms`) in
    ``workers`` loader processes, as in training, so a step timed on them includes the loader's share
    of the machine.
    """
    from monai.data import Dataset

    from radseg.pipeline.data.cache import build_loader
    from radseg.transforms.preprocess import build_augment_transforms

    def batches(roi_size, patches):
        chain = build_augment_transforms(augment, roi_size, num_classes)
        return build_loader(Dataset([item] * 64, transform=chain), batch_size=patches, num_workers=workers,
                            shuffle=True, seed=0)

    return batches


def _probe(datalist: list[dict], fingerprint, modality: str) -> tuple[list[float], float, dict]:
    """Preprocess the median-sized case once: its cropped extent (mm, RAS), the seconds it took and the
    preprocessed case (image in the cache's dtype)."""
    import numpy as np

    from radseg import keys
    from radseg.transforms.fingerprint import resolve_preprocess
    from radseg.transforms.preprocess import build_val_transforms

    sizes = [float(np.prod(np.multiply(shape, spacing))) for shape, spacing in
             zip(fingerprint.shapes, fingerprint.spacings)]
    case = datalist[int(np.argsort(sizes)[len(sizes) // 2])]
    spacing = spacing_candidates(fingerprint.target_spacing)[min(2, len(fingerprint.target_spacing))]
    normalization = "zscore" if fingerprint.mean is not None else "window"
    settings = PreprocessConfig(target_spacing=spacing, ct_normalization=normalization,
                                ct_window="auto" if fingerprint.percentile_00_5 is not None else [-1000.0, 1000.0])
    resolved = resolve_preprocess(settings, fingerprint, modality)
    start = time.perf_counter()
    item = build_val_transforms(resolved, CacheConfig().image_dtype)(dict(case))
    seconds = time.perf_counter() - start
    shape = item[keys.IMAGE].shape[1:]
    return [float(n * s) for n, s in zip(shape, spacing)], seconds, item


def plan_to_yaml(plan: Plan, source: str = "") -> str:
    """The plan as config YAML, one ``# why`` comment line above each planned setting."""
    header = [f"# radseg plan{' for ' + source if source else ''}: {plan.machine.describe()}, "
              f"budget {format_seconds(plan.budget_seconds)}",
              f"# predicted: {plan.summary().split('; predicted ')[-1]} in all; "
              "train with: radseg train --config THIS_FILE --data DATA --output RUN",
              *[f"# note: {note}" for note in plan.notes]]
    lines = list(header)
    reasons = {d.key: d.why for d in plan.decisions}
    for section, values in config_to_dict(plan.config).items():
        lines.append(f"{section}:")
        for key, value in values.items():
            why = reasons.get(f"{section}.{key}")
            if why:
                lines.append(f"  # {why}")
            lines.append(f"  {key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """One value in YAML flow style on one line (``[16, 32]``, ``{widths: [16, 32]}``, ``auto``)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text[:-3].strip() if text.endswith("\n...") or text.endswith("...") else text


def write_plan(plan: Plan, path: str | Path, *, overwrite: bool = False, source: str = "") -> Path:
    """Write :func:`plan_to_yaml` atomically; an existing file is replaced only with ``overwrite``.

    Raises:
        ConfigError: see :func:`check_plan_output`.
    """
    path = Path(path)
    check_plan_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, plan_to_yaml(plan, source))


def check_plan_output(path: str | Path, overwrite: bool = False) -> None:
    """Refuse a plan output that cannot be written, before any planning.

    Raises:
        ConfigError: ``path`` is a folder, exists without ``overwrite``, or its folder cannot be
            created or written (a file on the way, no permission).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder, but the plan is a YAML file; pass a file path such as "
                          f"{path / 'plan.yaml'}")
    if path.exists() and not overwrite:
        raise ConfigError(f"plan output {path} already exists; pass --overwrite to replace it or choose another path")
    parent = path.absolute().parent
    while not parent.exists():  # the first folder that exists must be a writable folder
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--output {path}: {parent} is a file, not a folder; choose another path for the plan")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {path}: the folder {parent} is not writable; choose another path for the plan")
