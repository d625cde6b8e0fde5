"""Liver lesions of the ``irregular`` phantom: lobulated shapes, hypo- and hyperdense, rim-enhancing, necrotic.

A lesion is the union of a rotated ellipsoid and up to three smaller lobes, its border pushed in and out
by a smooth random field; its HU is the liver's plus an offset, with a textured interior, a rim or a
fluid core, blended into the liver over a soft edge. Labels are painted only strictly inside the liver
(every tumour voxel has liver or tumour all around it), so the tumour is always inside the liver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radseg.pipeline.data.phantom_irregular_anatomy import IrregularAnatomy
from radseg.pipeline.data.phantom_irregular_shapes import (
    Ellipsoid, Shape, SmoothField, is_empty, perturbed, random_rotation, region_of, sub_coords,
)

#: lesion kinds and their share; "rim" and "necrotic" need a radius of at least _LAYERED_MIN_RADIUS mm
KINDS = ("hypo", "hyper", "rim", "necrotic")
KIND_SHARE = (0.45, 0.25, 0.15, 0.15)
#: lesion diameters (mm), log-uniform, and the largest number of lesions in a case
DIAMETER_MM = (5.0, 50.0)
MAX_LESIONS = 8
#: share of cases with no lesion
NO_LESION_SHARE = 0.2
_LAYERED_MIN_RADIUS = 7.0
_CONTRAST_HU = {"hypo": (-70, -15), "hyper": (20, 70), "rim": (25, 60), "necrotic": (-30, -5)}


@dataclass
class Lesion:
    """One lesion: its shape and how it is painted (HU offsets from the liver, or absolute for a fluid core)."""

    kind: str
    shape: Shape
    radius_mm: float
    contrast_hu: float  # offset of the solid part (of the rim, for "rim") from the liver
    core_hu: float  # "rim": the core's offset from the liver; "necrotic": the core's absolute HU
    core_from: float  # fraction of the depth (0 border, 1 centre) where the core begins
    texture: SmoothField
    texture_hu: float
    edge_mm: float  # width of the soft border


def sample_lesions(rng: np.random.Generator, anatomy: IrregularAnatomy) -> list[Lesion]:
    """0 to MAX_LESIONS lesions inside the liver; most share the case's kind, as metastases do."""
    if rng.uniform() < NO_LESION_SHARE:
        return []
    weights = 1.0 / np.arange(1, MAX_LESIONS + 1)
    count = int(rng.choice(np.arange(1, MAX_LESIONS + 1), p=weights / weights.sum()))
    case_kind = str(rng.choice(KINDS, p=KIND_SHARE))
    lesions = []
    for _ in range(count):
        kind = case_kind if rng.uniform() < 0.75 else str(rng.choice(KINDS, p=KIND_SHARE))
        radius = 0.5 * float(np.exp(rng.uniform(*np.log(DIAMETER_MM))))
        if radius < _LAYERED_MIN_RADIUS and kind in ("rim", "necrotic"):
            kind = "hypo" if kind == "necrotic" else "hyper"
        placed = _place(rng, anatomy, radius)
        if placed is not None:
            lesions.append(_sample_lesion(rng, kind, *placed))
    return lesions


def _place(rng: np.random.Generator, anatomy: IrregularAnatomy, radius: float) -> tuple[np.ndarray, float] | None:
    """A centre deep enough inside the liver (and away from the carved organs), shrinking the lesion if needed."""
    parts = anatomy.liver.parts
    volumes = np.array([np.prod(p.axes) for p in parts])
    while radius >= DIAMETER_MM[0] / 2:
        for _ in range(20):
            part = parts[rng.choice(len(parts), p=volumes / volumes.sum())]
            direction = rng.normal(size=3)
            point = rng.uniform() ** (1 / 3) * direction / np.linalg.norm(direction)
            centre = part.center + part.rotation @ (part.axes * point)
            if _clear(anatomy, centre, radius):
                return centre, radius
        radius *= 0.8
    return None


def _level_at(shape: Shape, point: np.ndarray) -> float:
    return float(shape.level(*(np.array([c]) for c in point))[0, 0, 0])


def _clear(anatomy: IrregularAnatomy, centre: np.ndarray, radius: float) -> bool:
    if _level_at(anatomy.liver, centre) > -min(0.6 * radius, 12.0) - 2.0:
        return False
    return all(_level_at(organ.shape, centre) > 0.5 * radius for organ in anatomy.carved)


def _sample_lesion(rng: np.random.Generator, kind: str, centre: np.ndarray, radius: float) -> Lesion:
    parts = [Ellipsoid(centre, radius * rng.uniform(0.7, 1.0, 3), random_rotation(rng, 180))]
    for _ in range(int(rng.integers(0, 4)) if radius > 6 else 0):
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * radius * rng.uniform(0.4, 0.75)
        parts.append(Ellipsoid(centre + offset, radius * rng.uniform(0.35, 0.65) * rng.uniform(0.75, 1.0, 3),
                               random_rotation(rng, 180)))
    shape = perturbed(rng, parts, radius * rng.uniform(0.06, 0.16), max(radius * rng.uniform(0.5, 0.9), 2.0))
    core_hu = {"rim": -rng.uniform(25, 60), "necrotic": rng.uniform(5, 25)}.get(kind, 0.0)
    core_from = {"rim": rng.uniform(0.2, 0.4), "necrotic": rng.uniform(0.35, 0.6)}.get(kind, 1.0)
    return Lesion(kind, shape, radius, float(rng.uniform(*_CONTRAST_HU[kind])), float(core_hu), float(core_from),
                  SmoothField.sample(rng, *shape.box(), max(radius / 3, 2.0)), float(rng.uniform(4, 12)),
                  float(rng.uniform(0.5, 2.5)))


def paint_lesions(image: np.ndarray, label: np.ndarray, lesions: list[Lesion], coords: tuple, liver_hu: float) -> None:
    """Paint every lesion strictly inside the liver label (label 2), blending its HU into the liver's."""
    for lesion in lesions:
        region = _padded(region_of(lesion.shape.box(), coords), image.shape)
        if is_empty(region):
            continue
        sub = sub_coords(region, coords)
        level = lesion.shape.level(*sub)
        # strictly inside: every tumour voxel has liver or tumour all around it
        mask = (level < 0) & ndimage.binary_erosion(label[region] > 0, np.ones((3, 3, 3), bool), border_value=0)
        if not mask.any():
            continue
        values = _lesion_values(lesion, level, sub, liver_hu)
        alpha = np.clip(-level / np.float32(lesion.edge_mm), 0, 1)
        blended = alpha * values + (1 - alpha) * image[region]
        image[region][mask] = blended[mask]
        label[region][mask] = 2


def _padded(region: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(region, shape))


def _lesion_values(lesion: Lesion, level: np.ndarray, sub: tuple, liver_hu: float) -> np.ndarray:
    """The lesion's HU on its region: textured solid part, and a rim or a fluid core where it has one."""
    texture = lesion.texture(*sub)
    values = np.float32(liver_hu + lesion.contrast_hu) + np.float32(lesion.texture_hu) * texture
    if lesion.kind in ("rim", "necrotic"):
        depth = -level / max(float(-level.min()), 1e-3)
        core = depth + 0.12 * texture > lesion.core_from
        base = liver_hu + lesion.core_hu if lesion.kind == "rim" else lesion.core_hu
        values[core] = base + 0.5 * lesion.texture_hu * texture[core]
    return values
