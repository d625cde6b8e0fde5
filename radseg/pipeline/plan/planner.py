"""Plan a training run from the dataset's fingerprint, the machine and a wall-clock budget.

:func:`plan_from_fingerprint` is the decision maker (no files, testable on synthetic numbers); it
chooses, in order: target spacing (the finest at which the budget still sees the data often enough
and the smallest objects stay resolved), patch (the median foreground box with context, within the
field of view), U-Net depth and widths (from the patch; the widest that leaves enough steps),
sampler, augmentation, schedule, inference and the clean-ups of predictions. Each choice is a
:class:`Decision` with its reason.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from radseg.configs.loader import load_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError, DataError
from radseg.pipeline.plan import rules
from radseg.pipeline.plan.budget import (VAL_SHARE, VAL_SHARE_FOLD_ALL, Schedule, fit_schedule, format_seconds,
                                         sliding_windows)
from radseg.pipeline.plan.machine import Machine, StepTimer, planned_network, training_memory_gb, unet_gflops
from radseg.pipeline.plan.rules import Decision, fmt
from radseg.transforms.fingerprint import Fingerprint

logger = logging.getLogger(__name__)

#: passes over the training data the planned steps should make before a finer spacing is worth it
PASSES_MIN = 25.0
#: steps a plan should have before a wider network or a larger patch is worth it (on 2 CPU cores the
#: spleen-tutorial recipe reached liver Dice 0.92 on the chest-pelvis phantom in 61 steps of 8 large patches,
#: about 500 patches; a plan's step holds 2)
STEPS_MIN = {"cpu": 500, "cuda": 20_000}
BASE_WIDTHS = {"cpu": (32, 24, 16), "cuda": (32,)}
WIDTH_CAP = {"cpu": 256, "cuda": 320}
SHRINKS = (0.85, 0.7, 0.6, 0.5)
#: compute steps on random tensors (loss and clipping included) miss the data loader sharing the machine:
#: loader-fed steps measured 1.07-1.15x on 2 CPU cores with one worker
LOADER_FACTOR = {"cpu": 1.1, "cuda": 1.05}
#: a run's steps are slower than the calibration's loader-fed steps: 1.00, 1.05, 1.14 and 1.26x in four whole
#: 15-minute runs, 1.06 and 1.07x in two 3-epoch runs, on 2 CPU cores, both phantom profiles; this is their
#: median. The spread is the machine's speed drifting over minutes (epochs of one run vary by +-8-15%)
SUSTAINED_FACTOR = 1.07
#: the network family per device: on a CPU, MONAI's UNet (strided first unit, about a ninth of unet3d's
#: FLOPs per voxel at equal widths, so many more steps in a budget); on a GPU, radseg's nnU-Net-style unet3d
NETWORK = {"cpu": "monai_unet", "cuda": "unet3d"}
#: a validation window costs about a quarter of a training patch (forward only, no loss or loader), plus
#: stitching; measured on 2 CPU cores: 0.22-0.28 of a loader-fed step's per-patch time
VAL_FACTOR = 0.25


@dataclass
class DatasetFacts:
    """What the planner knows besides the fingerprint: declarations and what one probe case showed."""

    num_cases: int
    label_names: dict[int, str]
    in_channels: int
    modality: str
    #: median case after the body crop, mm along RAS
    cropped_extent_mm: list[float]
    #: measured seconds to read a case (check-data, fingerprint) and to preprocess it (cache)
    read_seconds: float = 1.0
    prep_seconds: float = 2.0

    @property
    def num_classes(self) -> int:
        """Classes, background included."""
        return len(self.label_names)


@dataclass
class Plan:
    """A planned config, the decisions behind it and the predicted times."""

    config: RadsegConfig
    decisions: list[Decision]
    schedule: Schedule
    machine: Machine
    budget_seconds: float
    notes: list[str] = field(default_factory=list)
    #: the dataset's fingerprint the plan was made from (``train --budget`` hands it to the run)
    fingerprint: Fingerprint | None = None

    def why(self, key: str) -> str:
        """The reason given for a dotted config key ('' when it was not a decision)."""
        return next((d.why for d in self.decisions if d.key == key), "")

    def summary(self) -> str:
        """A few lines for the terminal."""
        train, s = self.config.train, self.schedule
        params = self.config.network.params
        return (f"plan for {self.machine.describe()}, budget {format_seconds(self.budget_seconds)}: spacing "
                f"{fmt(self.config.preprocess.target_spacing)} mm, patch {fmt(train.roi_size, 0)}, "
                f"{self.config.network.name} {params.get('widths', params.get('channels'))}, {s.steps} steps ({s.max_epochs} epochs x "
                f"{s.iterations_per_epoch}) at {s.step_seconds:.2f} s, {s.validations} validation(s); predicted "
                f"{format_seconds(s.total_seconds)}")


def plan_from_fingerprint(fingerprint: Fingerprint, facts: DatasetFacts, machine: Machine, budget_seconds: float,
                          timer: StepTimer, *, elapsed_seconds: float = 0.0, fold_all: bool = False,
                          data_timer: StepTimer | None = None, fingerprint_reused: bool = False) -> Plan:
    """Choose every setting of a training run that ends inside ``budget_seconds``.

    Args:
        fingerprint: computed with ``objects=True`` (per-class object statistics).
        facts: declarations and probe measurements of the dataset.
        machine: where training runs.
        budget_seconds: wall clock for the whole run, planning included.
        timer: seconds per training step of a candidate network (measured, or a model in tests).
        elapsed_seconds: planning time already spent (counted against the budget).
        fold_all: train on every case (validation then monitors fold 0's cases, seen in training).
        data_timer: seconds per training step of the chosen network fed by the real data loader (the
            schedule's step); None scales ``timer`` by :data:`LOADER_FACTOR` instead.
        fingerprint_reused: the run takes this fingerprint (``train --budget``) rather than reading
            every case again for its own (``train --config plan.yaml``).

    Raises:
        DataError: too few cases to split, or a declared class absent from every label.
        ConfigError: the budget or the machine's memory cannot hold even the smallest plan.
    """
    _check_dataset(fingerprint, facts)
    folds = min(5, facts.num_cases)
    val_cases = math.ceil(facts.num_cases / folds)
    train_cases = facts.num_cases if fold_all else facts.num_cases - val_cases
    # check-data reads every case, the run's fingerprint again unless it takes this one, caching preprocesses it
    reads = 1 if fingerprint_reused else 2
    fixed = elapsed_seconds + facts.num_cases * (reads * facts.read_seconds + facts.prep_seconds)
    search = _Search(fingerprint, facts, machine, timer, budget_seconds, fixed, train_cases, val_cases, data_timer,
                     fold_all)
    decisions = [Decision("data.modality", facts.modality, "declared by the dataset"),
                 Decision("data.num_folds", folds, f"{facts.num_cases} labelled cases: "
                          + ("5 folds as nnU-Net" if folds == 5 else "one validation case per fold"))]
    decisions += search.spacing()
    decisions += search.network_and_patch()
    schedule = search.schedule()
    decisions += rules.schedule_decisions(schedule, machine, budget_seconds)
    decisions += rules.sampler_decisions(fingerprint.classes, facts.label_names, facts.num_classes)
    decisions += rules.augment_decisions(facts.modality, search.passes(schedule.steps))
    decisions += rules.postprocess_decisions(fingerprint.classes, facts.label_names, facts.num_classes)
    decisions += rules.inside_decisions(fingerprint.classes, facts.label_names, facts.num_classes,
                                        fingerprint.median_spacing)
    decisions += rules.runtime_decisions(machine, search.train_cases, search.spacing_value,
                                         facts.cropped_extent_mm)
    config = _to_config(decisions)
    notes = search.notes + ([f"--fold all: trains on all {facts.num_cases} cases; validation scores fold 0's "
                             f"{val_cases} cases, which are in training, so it is optimistic; it gets "
                             f"{100 * VAL_SHARE_FOLD_ALL:.0f}% of the budget, not {100 * VAL_SHARE:.0f}%"] if fold_all else [])
    return Plan(config, decisions, schedule, machine, budget_seconds, notes, fingerprint)


def _check_dataset(fingerprint: Fingerprint, facts: DatasetFacts) -> None:
    if facts.num_cases < 2:
        raise DataError(f"the dataset has {facts.num_cases} labelled training case(s); a plan needs at least 2 "
                        "(one to train on, one to validate); add labelled cases")
    if fingerprint.classes is None:
        raise ConfigError("the fingerprint has no object statistics; compute it with objects=True")
    absent = [f"{value} ({name})" for value, name in sorted(facts.label_names.items())
              if value > 0 and str(value) not in fingerprint.classes]
    if absent:
        raise DataError(f"class(es) {', '.join(absent)} are declared in the dataset's labels but appear in none of "
                        f"the {facts.num_cases} training labels; fix the labels, or remove the class from "
                        "dataset.json's labels")


class _Search:
    """The measured search over spacing, patch and widths (remembers what it chose)."""

    def __init__(self, fingerprint, facts, machine, timer, budget, fixed, train_cases, val_cases, data_timer=None,
                 fold_all=False):
        self.fp, self.facts, self.machine, self.timer = fingerprint, facts, machine, timer
        self.data_timer, self.fold_all = data_timer, fold_all
        self.budget, self.fixed, self.train_cases, self.val_cases = budget, fixed, train_cases, val_cases
        self.device = machine.device
        self.network = NETWORK[machine.device]
        self.patches_per_step = rules.PATCHES_PER_STEP[machine.device]
        self.notes: list[str] = []
        box = fingerprint.foreground_box_mm or facts.cropped_extent_mm
        self.box = box
        self.patch_mm = rules.desired_patch_mm(box, facts.cropped_extent_mm)
        self.spacing_value: list[float] = list(fingerprint.target_spacing)
        self.widths: list[int] = []
        self.patch: list[int] = []
        self._flops: dict[tuple, float] = {}

    def _train_time(self) -> float:
        return max(self.budget * (1 - 0.12) - self.fixed, 1.0)

    def _gflops(self, widths: list[int], patch: list[int], network: str | None = None) -> float:
        network = network or self.network
        key = (tuple(widths), tuple(patch), network)
        if key not in self._flops:
            self._flops[key] = unet_gflops(widths, patch, self.facts.in_channels, self.facts.num_classes, network)
        return self._flops[key]

    def _step_model(self, base: int, patch: list[int]) -> float:
        """Seconds per step: one reference network measured, other candidates scaled by their counted FLOPs."""
        reference = [64, 64, 32] if self.device == "cpu" else [128, 128, 64]
        ref_widths = rules.widths_for(16, rules.levels_for(reference), WIDTH_CAP[self.device])
        seconds = self.timer(ref_widths, reference, self.patches_per_step, self.facts.in_channels,
                             self.facts.num_classes, network=self.network)
        widths = rules.widths_for(base, rules.depth_for(patch), WIDTH_CAP[self.device])
        ratio = self._gflops(widths, patch) / self._gflops(ref_widths, reference)
        return seconds * ratio * LOADER_FACTOR[self.device]

    def _data_voxels(self, spacing: list[float]) -> float:
        return self.train_cases * math.prod(e / s for e, s in zip(self.facts.cropped_extent_mm, spacing))

    def passes(self, steps: int) -> float:
        """Times the planned steps' patches cover the training data's voxels."""
        return steps * self.patches_per_step * math.prod(self.patch) / self._data_voxels(self.spacing_value)

    def spacing(self) -> list[Decision]:
        smallest = rules.smallest_object_mm(self.fp.classes)
        candidates = rules.spacing_candidates(self.fp.target_spacing)
        allowed = [s for s in candidates if rules.resolves(s, smallest, self.device)] or candidates[:1]
        chosen, passes, steps = allowed[-1], 0.0, 0.0
        for spacing in allowed:  # finest first: the first where a whole patch still gets enough steps
            patch = rules.patch_for(self.patch_mm, spacing)
            steps = self._train_time() / self._step_model(16, patch)
            passes = steps * self.patches_per_step * math.prod(patch) / self._data_voxels(spacing)
            if passes >= PASSES_MIN and steps >= STEPS_MIN[self.device]:
                chosen = spacing
                break
        self.spacing_value = chosen
        voxels = smallest / sorted(chosen)[1]
        why = (f"finest spacing at which a whole patch of a base-16 U-Net gets about {steps:.0f} steps "
               f"({STEPS_MIN[self.device]} wanted) passing over the {self.train_cases} training cases {passes:.0f} "
               f"times ({PASSES_MIN:.0f} wanted; data median {fmt(self.fp.median_spacing)} mm); the smallest "
               f"objects (5th percentile {smallest:.0f} mm across, border fragments set aside) span {voxels:.1f} "
               "voxels")
        return [Decision("preprocess.target_spacing", chosen, why)]

    def network_and_patch(self) -> list[Decision]:
        bases = BASE_WIDTHS[self.device]
        sequence = [(b, 1.0) for b in bases] + [(bases[-1], f) for f in SHRINKS] + [(8, f) for f in (1.0, *SHRINKS)]
        limit = self._memory_limit_gb()
        for base, shrink in sequence:
            patch = rules.patch_for(self.patch_mm, self.spacing_value, shrink)
            widths = rules.widths_for(base, rules.depth_for(patch), WIDTH_CAP[self.device])
            if training_memory_gb(widths, patch, self.patches_per_step, self._bytes(), self.network) > limit:
                continue
            self.widths, self.patch = widths, patch
            if self._train_time() / self._step_model(base, patch) >= STEPS_MIN[self.device]:
                break
        if not self.widths:
            smallest = training_memory_gb([8, 16, 32], [32, 32, 16], self.patches_per_step, self._bytes(), self.network)
            raise ConfigError(f"this machine has {limit / 0.5 if self.device == 'cpu' else limit / 0.8:.1f} GB of "
                              f"{'RAM' if self.device == 'cpu' else 'GPU memory'} available, less than even the "
                              f"smallest plan needs (about {smallest:.2f} GB for training besides the data); free "
                              "memory or use a larger machine")
        return self._network_decisions()

    def _bytes(self) -> int:
        return 2 if self.device == "cuda" else 4

    def _memory_limit_gb(self) -> float:
        if self.device == "cuda":
            return 0.8 * self.machine.gpu_memory_gb
        return 0.5 * self.machine.memory_gb

    def _network_decisions(self) -> list[Decision]:
        field_vox = self._receptive_field()
        field_mm = [min(f, p) * sp for f, p, sp in zip(field_vox, self.patch, self.spacing_value)]
        field_text = ("the whole patch" if all(f >= p for f, p in zip(field_vox, self.patch))
                      else f"{fmt(field_vox, 0)} voxels")
        covered = [p * s for p, s in zip(self.patch, self.spacing_value)]
        patch_why = (f"covers {fmt(covered, 0)} mm at {fmt(self.spacing_value)} mm: the median foreground box "
                     f"of {fmt(self.box, 0)} mm with context, within the median cropped field of view of "
                     f"{fmt(self.facts.cropped_extent_mm, 0)} mm")
        widths_why = (f"{len(self.widths)} levels keep >= {rules.MIN_BOTTLENECK} voxels per axis at the bottleneck "
                      f"(receptive field {field_text} = {fmt(field_mm, 0)} mm); base width "
                      f"{self.widths[0]}: the widest that leaves enough steps in the budget (a base-16 network "
                      "measured on this machine, the others scaled by their counted FLOPs)")
        ours, theirs = self._gflops(self.widths, self.patch, "unet3d"), self._gflops(self.widths, self.patch, "monai_unet")
        deep = self.device == "cuda"
        if self.network == "monai_unet":
            name_why = (f"MONAI's UNet (residual units): its first unit is strided, so a patch costs {theirs:.1f} "
                        f"GFLOPs forward against {ours:.1f} for radseg's unet3d of the same widths, "
                        f"{ours / theirs:.1f}x the optimiser steps in a CPU budget")
        else:
            name_why = (f"radseg's nnU-Net-style U-Net: two convolutions at full resolution ({ours:.1f} GFLOPs per "
                        f"patch, {theirs:.1f} for MONAI's UNet), which a GPU affords")
        network = planned_network(self.network, self.widths, deep_supervision=deep)
        return [Decision("train.roi_size", self.patch, patch_why),
                Decision("network.name", self.network, name_why),
                Decision("network.params", network.params,
                         widths_why + ("; deep supervision as nnU-Net" if deep else
                                       "; no deep supervision (CPU steps are the scarce resource)"))]

    def _receptive_field(self) -> tuple[int, ...]:
        """Receptive field in voxels: analytic for unet3d, measured by gradient on the patch otherwise."""
        from radseg.networks import analytic_receptive_field, build_network, empirical_receptive_field

        network = planned_network(self.network, self.widths)
        try:
            return analytic_receptive_field(network.name, network.params)
        except ValueError:
            model = build_network(network, in_channels=1, out_channels=2)
            return empirical_receptive_field(model, self.patch)

    def schedule(self) -> Schedule:
        args = (self.widths, self.patch, self.patches_per_step, self.facts.in_channels, self.facts.num_classes)
        if self.data_timer is not None:
            step = self.data_timer(*args, network=self.network) * SUSTAINED_FACTOR
            how = (f"the median training step fed by the data loader on a preprocessed case, x{SUSTAINED_FACTOR} "
                   "for a long run's steady state")
        else:
            step = self.timer(*args, network=self.network) * LOADER_FACTOR[self.device]
            how = f"x{LOADER_FACTOR[self.device]} for data loading sharing the machine"
        self.notes.append(f"measured step: {step:.3f} s for {self.patches_per_step} patches of "
                          f"{fmt(self.patch, 0)} ({how})")
        shape = [e / s for e, s in zip(self.facts.cropped_extent_mm, self.spacing_value)]
        windows = sliding_windows(shape, self.patch, rules.OVERLAP[self.device])
        val_pass = self.val_cases * (windows * step / self.patches_per_step * VAL_FACTOR + 0.5)
        return fit_schedule(self.budget, self.fixed, step, val_pass, self.device, fold_all=self.fold_all)


def _to_config(decisions: list[Decision]) -> RadsegConfig:
    """The decisions as a validated config (the same loader reads the written plan back)."""
    from radseg.networks import check_network_config

    raw: dict[str, Any] = {}
    for decision in decisions:
        section, key = decision.key.split(".", 1)
        raw.setdefault(section, {})[key] = decision.value
    config = load_config(raw)
    check_network_config(config)
    return config
