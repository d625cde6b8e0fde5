"""Clean-ups of a label map on the scan's own grid: largest component, filled holes, small bits dropped.

Each works class by class inside the class's bounding box (plus a one-voxel margin), so a liver in
a 512x512x800 scan labels a few million voxels, not the whole grid. Connectivity is 26 voxels in
3D (scipy's full structuring element), nnU-Net's choice for "largest component". A dropped
component takes the label most common around it: a tumour speck inside the liver becomes liver,
a liver island in the spleen becomes background.

After them come the structure rules (``inference.inside``): where every training label holds a class
(tumour) only in or beside another (liver), predicted components of the first farther than a margin
from the second are removed the same way (far from the liver, that is background); the organ has
been cleaned to its largest component by then. A rule is skipped, with a warning, on a scan where the
container is not predicted at all: without a liver there is nothing to measure against.

``radseg plan`` chooses them per class from the training labels (``inference.largest_component``,
``inference.min_component_ml`` and ``inference.inside``), and ``radseg predict`` applies a run's own
unless told otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy import ndimage

from radseg.configs.schema import InferenceConfig
from radseg.errors import ConfigError
from radseg.pipeline.core.masks import bounding_box
from radseg.transforms.containment import component_distances, grown_box

logger = logging.getLogger(__name__)

_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class PostprocessConfig:
    """Which clean-ups to apply (all off by default).

    Attributes:
        largest_component: keep only the largest connected component: True for every class, or a
            tuple of the class values it applies to.
        fill_holes: fill background cavities enclosed by a class with that class.
        min_component_ml: drop components smaller than this many mL (0: keep all): one value for
            every class, or a tuple with one per class, background first.
        inside: ``(value, within, margin_mm)`` rules: components of class ``value`` farther than
            ``margin_mm`` from class ``within`` are removed (after the clean-ups above).
    """

    largest_component: Union[bool, tuple[int, ...]] = False
    fill_holes: bool = False
    min_component_ml: Union[float, tuple[float, ...]] = 0.0
    inside: tuple[tuple[int, int, float], ...] = ()

    @classmethod
    def planned(cls, inference: InferenceConfig, num_classes: int) -> PostprocessConfig:
        """A run's own clean-ups, from its config's ``inference`` section.

        Raises:
            ConfigError: ``min_component_ml`` does not have one value per class, or an ``inside`` rule
                names a class the model does not have.
        """
        sizes = tuple(float(v) for v in inference.min_component_ml)
        if sizes and len(sizes) != num_classes:
            raise ConfigError(f"inference.min_component_ml has {len(sizes)} values for a model of {num_classes} "
                              "classes; give one per class, background first, or none")
        inside = tuple((int(r.value), int(r.within), float(r.margin_mm)) for r in inference.inside)
        unknown = sorted({c for rule in inside for c in rule[:2] if not 0 < c < num_classes})
        if unknown:
            raise ConfigError(f"inference.inside names class(es) {unknown}, but the model's foreground classes are "
                              f"1..{num_classes - 1}; fix: remove those rules or name classes of this model")
        return cls(largest_component=tuple(int(v) for v in inference.largest_component), min_component_ml=sizes,
                   inside=inside)

    def keeps_largest(self, value: int) -> bool:
        """Whether class ``value`` keeps only its largest component."""
        if isinstance(self.largest_component, bool):
            return self.largest_component
        return value in self.largest_component

    def min_ml(self, value: int) -> float:
        """The smallest component (mL) class ``value`` keeps."""
        if isinstance(self.min_component_ml, tuple):
            return self.min_component_ml[value] if value < len(self.min_component_ml) else 0.0
        return float(self.min_component_ml)

    def classes_active(self, num_classes: int) -> list[int]:
        """The foreground classes any clean-up touches."""
        return [v for v in range(1, num_classes)
                if self.fill_holes or self.keeps_largest(v) or self.min_ml(v) > 0]

    @property
    def active(self) -> bool:
        """True when any clean-up is on for some class."""
        sizes = self.min_component_ml if isinstance(self.min_component_ml, tuple) else (self.min_component_ml,)
        return bool(self.largest_component) or self.fill_holes or any(v > 0 for v in sizes) or bool(self.inside)

    def describe(self, names: Sequence[str]) -> str:
        """One line, e.g. ``liver: largest component; tumour: components under 0.09 mL removed``."""
        parts = []
        for value in self.classes_active(len(names)):
            steps = (["largest component"] if self.keeps_largest(value) else []) + (
                [f"components under {self.min_ml(value):.2g} mL removed"] if self.min_ml(value) > 0 else []) + (
                ["holes filled"] if self.fill_holes else [])
            parts.append(f"{names[value]}: {', '.join(steps)}")
        parts += [f"{names[value]}: components farther than {margin:g} mm from {names[within]} removed"
                  for value, within, margin in self.inside]
        return "; ".join(parts) or "none"


def postprocess(labels: np.ndarray, num_classes: int, voxel_ml: float, cfg: PostprocessConfig,
                spacing: Union[Sequence[float], None] = None, case: str = "") -> np.ndarray:
    """Apply the configured clean-ups to each foreground class, then the structure rules, in place.

    Args:
        labels: uint8 label map, any axis order.
        num_classes: classes including background.
        voxel_ml: volume of one voxel in mL (for ``min_component_ml``).
        cfg: which clean-ups.
        spacing: mm per voxel along ``labels``' axes (for ``inside``); None: cubic voxels of ``voxel_ml``.
        case: the scan's name, for the log line of what the structure rules removed.

    Returns:
        ``labels`` (modified in place).
    """
    for value in cfg.classes_active(num_classes):
        box = bounding_box(labels == value, margin=1)
        if box is None:
            continue
        region = labels[box]
        mask = region == value
        min_voxels = cfg.min_ml(value) / voxel_ml if voxel_ml > 0 else 0.0
        _drop_components(region, mask, cfg.keeps_largest(value), min_voxels)
        if cfg.fill_holes:
            keep = region == value
            holes = ndimage.binary_fill_holes(keep) & ~keep & (region == 0)
            region[holes] = value
    if spacing is None:
        spacing = (10.0 * voxel_ml ** (1 / 3),) * labels.ndim
    for value, within, margin_mm in cfg.inside:
        _drop_outside(labels, value, within, margin_mm, spacing, voxel_ml, case)
    return labels


def drop_outside(labels: np.ndarray, value: int, within: int, margin_mm: float,
                 spacing: Sequence[float]) -> tuple[int, int]:
    """Remove the components of class ``value`` farther than ``margin_mm`` from class ``within``, in place.

    A removed component takes the label most common around it (background, far from the organ).
    The components are found on the class's box grown by the margin, which holds every voxel of
    ``within`` that could be near enough, so the decision is exact.

    Args:
        labels: uint8 label map.
        value: the contained class (tumour).
        within: the containing class (liver); when absent, nothing is removed.
        margin_mm: how far outside ``within`` a component may lie and stay.
        spacing: mm per voxel along ``labels``' axes.

    Returns:
        ``(components removed, voxels removed)``.
    """
    grow = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    box = grown_box(labels == value, grow)
    if box is None or not (labels == within).any():
        return 0, 0
    region = labels[box]
    mask = region == value
    components, count = ndimage.label(mask, structure=_FULL)
    far = component_distances(components, count, region == within, spacing) > margin_mm
    removed = int(np.count_nonzero(far[components[mask] - 1]))
    _relabel(region, components, mask, np.concatenate([[True], ~far]))
    return int(far.sum()), removed


def _drop_outside(labels, value, within, margin_mm, spacing, voxel_ml, case) -> None:
    """:func:`drop_outside` with its log line (or its warning when ``within`` is not predicted)."""
    scan = f"case {case}: " if case else ""
    if not (labels == within).any():
        if (labels == value).any():
            logger.warning("%sclass %d is predicted but class %d is not, so class %d's components are kept (the "
                           "rule 'within %g mm of class %d' needs class %d)", scan, value, within, value, margin_mm,
                           within, within)
        return
    count, voxels = drop_outside(labels, value, within, margin_mm, spacing)
    logger.info("%sclass %d: %d component(s), %.2f mL, farther than %g mm from class %d removed", scan, value,
                count, voxels * voxel_ml, margin_mm, within)


def _drop_components(region: np.ndarray, mask: np.ndarray, largest: bool, min_voxels: float) -> None:
    """Relabel the components of ``mask`` that are not kept with the label most common around each."""
    if not largest and min_voxels <= 0:
        return
    components, count = ndimage.label(mask, structure=_FULL)
    if count == 0 or (count == 1 and min_voxels <= 0):
        return
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    keep = sizes >= min_voxels
    if largest:
        keep &= np.arange(count + 1) == int(np.argmax(sizes))
    _relabel(region, components, mask, keep)


def _relabel(region: np.ndarray, components: np.ndarray, mask: np.ndarray, keep: np.ndarray) -> None:
    """Give each component not in ``keep`` (indexed by component, 0 first) the label most common around it."""
    for index, where in enumerate(ndimage.find_objects(components), start=1):
        if keep[index] or where is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in where)
        piece = components[grown] == index
        ring = ndimage.binary_dilation(piece, structure=_FULL) & ~mask[grown]
        around = region[grown][ring]
        region[grown][piece] = np.bincount(around).argmax() if around.size else 0
