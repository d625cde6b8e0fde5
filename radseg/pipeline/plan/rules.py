"""The planner's rules: pure functions from fingerprint numbers to settings, each with its reason.

Nothing here measures or reads files; :mod:`radseg.pipeline.plan.planner` feeds in the fingerprint,
the machine and the calibration, so each rule can be tested on synthetic numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from radseg.pipeline.plan.budget import Schedule, format_seconds

if TYPE_CHECKING:
    from radseg.pipeline.plan.machine import Machine

#: the smallest objects (5th percentile diameter) should span this many voxels in plane, by device. A CPU
#: budget pays for resolution in steps: at 15 CPU minutes on the abdomen phantom (seed 2027), 3 voxels
#: (0.96 mm, 1363 steps) scored liver 0.981 / tumour 0.783 where 6 voxels (0.77 mm, 672 steps) scored
#: 0.977 / 0.765 (benchmarks/plan_tradeoff.py, benchmarks/README.md); a GPU budget affords nnU-Net's finer grid
MIN_OBJECT_VOXELS = {"cpu": 3.0, "cuda": 6.0}
#: spacing factors tried, finest first (fine axes are coarsened towards the coarse one first)
SPACING_FACTORS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
#: context around the median foreground box a patch should cover
CONTEXT = 1.25
#: the bottleneck of the U-Net keeps at least this many voxels per axis
MIN_BOTTLENECK = 4
MAX_LEVELS, MIN_LEVELS = 6, 3
#: a class is small below this median share of a scan's voxels, rare when in fewer cases than this share
SMALL_FRACTION, RARE_SHARE = 0.01, 0.6
#: sliding-window overlap of a plan's inference and validation, by device
OVERLAP = {"cpu": 0.25, "cuda": 0.5}
#: patches per optimiser step, by device (nnU-Net's 2). On CPU, 8 smaller patches per step (the hand-tuned
#: MONAI recipe's) were measured against 2 at the same budget: liver 0.983 against 0.981, tumour 0.758 against
#: 0.783 (the same measurement as MIN_OBJECT_VOXELS), so the CPU keeps 2
PATCHES_PER_STEP = {"cpu": 2, "cuda": 2}
#: a class in every training label, not small, whose largest object holds at least this share of it in
#: each, is an organ: its predictions keep their largest component
ONE_OBJECT_SHARE = 0.99
#: other classes lose predicted components under this share of their smallest object in the training labels
MIN_COMPONENT_SHARE = 0.1
#: a class lies inside another when each of its objects, in every label holding it, lies within this tolerance
#: of the other: the larger of these mm and voxels of the coarsest median axis (a predicted organ's border is
#: a few mm or a slice off, so a lesion at its surface can poke out of an under-segmented organ); the rule's
#: margin is the largest distance seen plus the same tolerance. Stray predictions 50-110 mm out stay far outside.
INSIDE_TOLERANCE_MM, INSIDE_TOLERANCE_VOXELS = 5.0, 2.0
#: labels holding a class before its containment in another is taken as a rule
INSIDE_MIN_LABELS = 3


@dataclass(frozen=True)
class Decision:
    """One planned setting (dotted config key), its value and why it was chosen."""

    key: str
    value: Any
    why: str


def fmt(values: Sequence[float], digits: int = 2) -> str:
    """``1.5×1.5×3`` style."""
    texts = (f"{v:.{digits}f}" for v in values)
    return "×".join(t.rstrip("0").rstrip(".") if "." in t else t for t in texts)


def spacing_candidates(base: Sequence[float]) -> list[list[float]]:
    """Target spacings from ``base`` (the fingerprint's) to 4× coarser, finest first, no repeats."""
    finest = min(base)
    out: list[list[float]] = []
    for factor in SPACING_FACTORS:
        spacing = [round(max(b, factor * finest), 3) for b in base]
        if spacing not in out:
            out.append(spacing)
    return out


def smallest_object_mm(classes: dict[str, dict]) -> float:
    """The 5th-percentile object diameter of the class with the smallest objects.

    Objects are the components above the fragment floor
    (:func:`radseg.transforms.object_stats.fragments`), so a ring of one-voxel pieces along a lesion's
    border does not ask for a spacing fine enough to resolve them.
    """
    return min(stats["object_diameter_mm_p05"] for stats in classes.values())


def resolves(spacing: Sequence[float], smallest_mm: float, device: str = "cpu") -> bool:
    """Whether the smallest objects span the device's :data:`MIN_OBJECT_VOXELS` along the finer in-plane axes."""
    return smallest_mm / sorted(spacing)[1] >= MIN_OBJECT_VOXELS[device]


def levels_for(patch: Sequence[int]) -> int:
    """U-Net depth: halve until the smallest patch axis would fall under :data:`MIN_BOTTLENECK` voxels."""
    levels = int(math.floor(math.log2(max(min(patch), 1) / MIN_BOTTLENECK))) + 1
    return max(MIN_LEVELS, min(MAX_LEVELS, levels))


def depth_for(patch: Sequence[int]) -> int:
    """U-Net depth for a patch: :func:`levels_for`, but never more than every axis's divisibility allows."""
    levels = levels_for(patch)
    while levels > 1 and any(size % 2 ** (levels - 1) for size in patch):
        levels -= 1
    return levels


def desired_patch_mm(box_mm: Sequence[float], extent_mm: Sequence[float]) -> list[float]:
    """Patch extent (mm): the object box with context, or half the cropped field of view if larger,
    never more than the cropped field of view itself."""
    return [min(extent, max(CONTEXT * box, 0.5 * extent)) for box, extent in zip(box_mm, extent_mm)]


def patch_for(patch_mm: Sequence[float], spacing: Sequence[float], shrink: float = 1.0) -> list[int]:
    """Patch in voxels: ``patch_mm * shrink / spacing`` rounded to the divisor of the depth it allows."""
    raw = [max(p * shrink / s, 1.0) for p, s in zip(patch_mm, spacing)]
    levels = levels_for([int(r) for r in raw])
    divisor = 2 ** (levels - 1)
    smallest = divisor * MIN_BOTTLENECK if levels > MIN_LEVELS else divisor * 2
    return [max(smallest, int(round(r / divisor)) * divisor) for r in raw]


def widths_for(base: int, levels: int, cap: int) -> list[int]:
    """Channels per level: ``base`` doubling per level, capped (nnU-Net caps at 320)."""
    return [min(base * 2**level, cap) for level in range(levels)]


def sampler_decisions(classes: dict[str, dict], names: dict[int, str], num_classes: int) -> list[Decision]:
    """Class-balanced patches when a foreground class is small or rare, else 2:1 foreground:background."""
    reasons = []
    for key, stats in sorted(classes.items(), key=lambda item: int(item[0])):
        name = names.get(int(key), key)
        share = stats["cases_present"] / max(stats["cases"], 1)
        if stats["median_voxel_fraction"] < SMALL_FRACTION:
            reasons.append(f"{name} fills {100 * stats['median_voxel_fraction']:.2g}% of a scan")
        elif share < RARE_SHARE:
            reasons.append(f"{name} is in {stats['cases_present']} of {stats['cases']} cases")
    if reasons:
        why = (f"class-balanced patch centres (background and each class equally often): {'; '.join(reasons)}, "
               "so foreground/background sampling would rarely centre a patch on it")
        return [Decision("augment.sampler", "label_classes", why),
                Decision("augment.class_ratios", [1.0] * num_classes, "one share per class, background included")]
    why = "every class is large and frequent: patches centred on foreground twice as often as on background"
    return [Decision("augment.sampler", "pos_neg", why), Decision("augment.pos", 2.0, "foreground share of 2:1"),
            Decision("augment.neg", 1.0, "background share of 2:1")]


def schedule_decisions(s: Schedule, machine: Any, budget: float) -> list[Decision]:
    """Epochs, iterations, validation, batch, optimiser and device for a fitted schedule."""
    end = (f"{s.steps} steps x {s.step_seconds:.2f} s = {format_seconds(s.train_seconds)} of training, "
           f"{s.validations} validation pass(es) {format_seconds(s.val_seconds)}, data and epoch ends "
           f"{format_seconds(s.overhead_seconds)}: {format_seconds(s.total_seconds)} of the {format_seconds(budget)} budget")
    long_run = s.steps > 5000
    return [
        Decision("train.max_epochs", s.max_epochs, f"{s.max_epochs} epochs: {end}"),
        Decision("train.iterations_per_epoch", s.iterations_per_epoch, "fixed at planning time from the measured "
                 "step, so a resumed run repeats the same schedule"),
        Decision("train.val_interval", s.val_interval, f"validation every {s.val_interval} epoch(s) and at the "
                 f"end: {s.validations} pass(es), about {100 * s.val_seconds / budget:.0f}% of the budget"),
        Decision("train.batch_size", PATCHES_PER_STEP[machine.device], f"{PATCHES_PER_STEP[machine.device]} patches "
                 "per step (nnU-Net's 2): more optimiser steps per budget than larger batches at the same voxels per "
                 "second; 8 smaller ones per CPU step scored no better (benchmarks/plan_tradeoff.py)"),
        Decision("train.optimizer", "sgd" if long_run else "adamw", "SGD with Nesterov momentum for a long run "
                 "(nnU-Net)" if long_run else "AdamW converges in few steps, as a short budget needs"),
        Decision("train.learning_rate", 0.01 if long_run else 3e-3, "the optimiser's usual rate for this loss"),
        Decision("train.schedule", "poly", "polynomial decay to zero at the last planned step: the run ends annealed"),
        Decision("train.warmup_epochs", 1 if s.max_epochs >= 10 else 0, "one warm-up epoch when it is under a "
                 "tenth of the run"),
        Decision("train.device", machine.device, machine.describe()),
    ]


def augment_decisions(modality: str, passes: float) -> list[Decision]:
    """Augmentation: no mirroring (RAS), rotations only for long runs, intensity jitter by modality."""
    affine = 0.2 if passes >= 200 else 0.0
    intensity = 0.15 if modality == "MRI" else 0.1
    return [
        Decision("augment.num_samples", 1, "one patch per loaded case; each patch of a step comes from its own case"),
        Decision("augment.flip_prob", 0.0, "scans are reoriented to RAS, so left and right differ (liver right, "
                 "spleen left); mirrored patches would teach the network to confuse them"),
        Decision("augment.affine_prob", affine, f"the plan passes over the data {passes:.0f} times: "
                 + ("enough to profit from rotations and scaling" if affine else "too few to profit from rotations "
                    "and scaling, which would cost CPU time and convergence")),
        Decision("augment.intensity_scale", intensity, f"{modality} intensities vary between scans by about this "
                 "share after normalisation"),
        Decision("augment.intensity_shift", intensity, "as the scale"),
    ]


def postprocess_decisions(classes: dict[str, dict], names: dict[int, str], num_classes: int) -> list[Decision]:
    """Clean-ups for predictions, from the training labels' objects (nnU-Net picks its own by cross-validation).

    An organ (a class in every label, not small, and one object in each) keeps its largest predicted
    component; every other class loses components under :data:`MIN_COMPONENT_SHARE` of its smallest
    labelled object, so specks go and no object the size of a real one does. A lesion class with one
    lesion per label is not an organ: a scan may hold several.
    """
    largest, sizes, organ_reasons, size_reasons = [], [0.0] * num_classes, [], []
    for key, stats in sorted(classes.items(), key=lambda item: int(item[0])):
        value, share, smallest = int(key), stats.get("min_largest_object_share"), stats.get("min_object_volume_ml")
        if share is None or smallest is None or not 0 < value < num_classes:
            continue
        name = names.get(value, key)
        organ = (share >= ONE_OBJECT_SHARE and stats["cases_present"] == stats["cases"]
                 and stats["median_voxel_fraction"] >= SMALL_FRACTION)
        if organ:
            largest.append(value)
            whole = "is one object" if share > 0.9995 else f"has one object holding at least {100 * share:.1f}% of it"
            organ_reasons.append(f"{name} {whole} in each of the {stats['cases']} labels")
        else:
            sizes[value] = float(f"{MIN_COMPONENT_SHARE * smallest:.2g}")
            size_reasons.append(f"{name}: under {sizes[value]:g} mL, a tenth of its smallest object in the training "
                                f"labels ({smallest:.2g} mL)")
    largest_why = ("largest predicted component only, for the organs: " + "; ".join(organ_reasons) if organ_reasons
                   else "no class is one sizeable object in every label, so none is cut to its largest component")
    sizes_why = ("predicted components removed (their voxels take the label around them), one value per class, "
                 "background first: " + "; ".join(size_reasons) if size_reasons else "no components removed by size")
    return [Decision("inference.largest_component", largest, largest_why),
            Decision("inference.min_component_ml", sizes if any(sizes) else [], sizes_why)]


def inside_decisions(classes: dict[str, dict], names: dict[int, str], num_classes: int,
                     median_spacing: Sequence[float]) -> list[Decision]:
    """Structure rules from the labels: a class always found in or beside a larger one loses predicted
    components farther than a margin from it (``inference.inside``).

    Class B lies inside A when B is in at least :data:`INSIDE_MIN_LABELS` labels, A is in every one of
    them, A's median volume exceeds B's (a container is larger than what it holds: a liver touches
    every tumour in it, but lies in none) and every object of B lies within the tolerance of A.
    """
    tolerance = max(INSIDE_TOLERANCE_MM, INSIDE_TOLERANCE_VOXELS * max(median_spacing))
    found, reasons = [], []
    for key, stats in sorted(classes.items(), key=lambda item: int(item[0])):
        container = _container(key, classes, num_classes, tolerance)
        if container is None:
            continue
        within, distance = container
        margin = round(distance + tolerance, 1)
        found.append({"value": int(key), "within": within, "margin_mm": margin})
        name, outer = names.get(int(key), key), names.get(within, str(within))
        reasons.append(f"{name} lies within {distance:.1f} mm of {outer} in {stats['cases_present']}/"
                       f"{stats['cases_present']} labels with {name} → {name} components outside {outer} + "
                       f"{margin:g} mm are removed")
    if not found:
        return [Decision("inference.inside", [], "no class lies in or beside a larger one in every label holding it "
                         f"(within {tolerance:.2g} mm): no components removed by position")]
    why = (f"{'; '.join(reasons)} (margin: the largest distance seen + {tolerance:.2g} mm, the larger of "
           f"{INSIDE_TOLERANCE_MM:g} mm and {INSIDE_TOLERANCE_VOXELS:g} voxels of {max(median_spacing):.2g} mm)")
    return [Decision("inference.inside", found, why)]


def _container(key: str, classes: dict[str, dict], num_classes: int, tolerance: float) -> tuple[int, float] | None:
    """The class that class ``key`` lies inside, and the largest distance seen, or None (the nearest, then largest)."""
    stats = classes[key]
    if not 0 < int(key) < num_classes or stats["cases_present"] < INSIDE_MIN_LABELS:
        return None
    candidates = []
    for other, distance in (stats.get("distance_to_mm") or {}).items():
        outer = classes.get(other)
        if (distance is None or outer is None or distance > tolerance or not 0 < int(other) < num_classes
                or outer["median_volume_ml"] <= stats["median_volume_ml"]):
            continue
        candidates.append((distance, -outer["median_volume_ml"], int(other)))
    if not candidates:
        return None
    distance, _, within = min(candidates)
    return within, float(distance)


def planned_workers(cores: int) -> int:
    """DataLoader workers of a plan: one beside the step on 2 cores, else one core left for training (at most 8)."""
    return 1 if cores <= 2 else min(cores - 1, 8)


def runtime_decisions(machine: Machine, train_cases: int, spacing: Sequence[float],
                      cropped_extent_mm: Sequence[float]) -> list[Decision]:
    """Cache, loader workers and sliding window for the machine, given the planned spacing."""
    cpu = machine.device == "cpu"
    cache_gb = 1.2 * train_cases * math.prod(e / s for e, s in zip(cropped_extent_mm, spacing)) * 3 / 2**30 + 0.25
    budget_gb = round(min(max(cache_gb, 0.5), 0.4 * machine.memory_gb), 1)
    workers = planned_workers(machine.cores)
    return [
        Decision("preprocess.crop_foreground", True, "crop to the body before caching: fewer voxels per case"),
        Decision("cache.mode", "ram", f"the preprocessed training cases need about {cache_gb:.1f} GB"),
        Decision("cache.ram_budget_gb", budget_gb, f"their size, at most 40% of the {machine.memory_gb:.0f} GB available"),
        Decision("cache.num_workers", workers, f"{machine.cores} cores: " + ("one loader worker beside the step"
                 if workers == 1 else "one core left for the training process")),
        Decision("inference.overlap", OVERLAP[machine.device], "sliding-window overlap: " + (
            "0.25 halves the windows of 0.5 on a CPU" if cpu else "nnU-Net's 0.5 on a GPU")),
        Decision("inference.sw_batch_size", 2 if cpu else 4, "windows per forward pass"),
    ]
