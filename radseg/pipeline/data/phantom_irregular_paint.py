"""Paint the ``irregular`` phantom's anatomy onto a voxel grid: HU image and the liver label.

The grid is given by three sorted 1D coordinate arrays in body millimetres (u right, v anterior,
w superior), so the arrays are RAS-ordered; :mod:`radseg.pipeline.data.phantom_irregular` stores them
in the case's own orientation afterwards. Lesions are painted by
:mod:`radseg.pipeline.data.phantom_irregular_lesions`.
"""

from __future__ import annotations

import numpy as np

from radseg.pipeline.data.phantom_irregular_anatomy import (
    RIB_PERIOD_MM, SPINE_PERIOD_MM, IrregularAnatomy, Organ, cavity_axes, top_and_bottom,
)
from radseg.pipeline.data.phantom_irregular_shapes import is_empty, region_of, sub_coords

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
_AIR_HU = -1000.0


def paint_anatomy(anatomy: IrregularAnatomy, coords: Coords) -> tuple[np.ndarray, np.ndarray]:
    """The HU image (float32) and label (uint8: 0 background, 1 liver) of ``anatomy`` on ``coords``."""
    image, soft = _paint_body(anatomy, coords)
    for organ in anatomy.organs:
        paint_organ(image, organ, coords, soft)
    label = np.zeros(image.shape, np.uint8)
    _paint_liver(image, label, anatomy, coords, soft)
    for organ in anatomy.carved:
        region, mask = paint_organ(image, organ, coords, soft)
        if mask is not None:
            label[region][mask] = 0
    return image, label


def _superellipse(u: np.ndarray, v: np.ndarray, a: float, front: float, back: float, p: float) -> np.ndarray:
    """Inside a superellipse of half width ``a``, half depths ``front`` (v > 0) and ``back``: 2D bool."""
    depth = np.where(v >= 0, front, back)[None, :]
    return np.abs(u[:, None] / a) ** p + np.abs(v[None, :] / depth) ** p < 1


def _paint_body(anatomy: IrregularAnatomy, coords: Coords) -> tuple[np.ndarray, np.ndarray]:
    """Air, subcutaneous fat, muscle wall, spine, ribs, aorta, bowel; returns (image, soft-tissue 2D mask)."""
    u, v, w = coords
    hu, (a, b), p = anatomy.hu, anatomy.body_axes, anatomy.exponent
    inset = anatomy.fat_mm
    outline = _superellipse(u, v, a, b, b * anatomy.posterior_scale, p)
    wall = _superellipse(u, v, a - inset, b - inset, b * anatomy.posterior_scale - inset, p)
    cavity = _superellipse(u, v, *cavity_axes(anatomy), p)
    sv, radius = anatomy.spine_v, anatomy.spine_radius
    muscles = sum(((u[:, None] - side * (radius + 12)) / 24) ** 2 + ((v[None, :] - sv + radius + 6) / 20) ** 2 < 1
                  for side in (1, -1)).astype(bool)
    slab = np.where(cavity, hu["fat"], np.where(wall, hu["muscle"], np.where(outline, hu["fat"], _AIR_HU)))
    slab[muscles & outline] = hu["muscle"]
    aorta = np.hypot(u[:, None] + 0.6 * radius, v[None, :] - sv - radius - 13) < 11
    slab[aorta] = hu["aorta"]
    image = np.repeat(slab.astype(np.float32)[:, :, None], w.size, axis=2)
    bone = _paint_spine(image, anatomy, coords)
    image[~outline] = _AIR_HU  # the spinous process ends under the skin
    axes = cavity_axes(anatomy)
    ribs = _superellipse(u, v, axes[0] + 7, axes[1] + 7, axes[2] + 7, p) & ~_superellipse(u, v, *axes, p)
    _paint_ribs(image, anatomy, coords, ribs & ~muscles)
    soft = cavity & ~bone & ~aorta & ~muscles
    _paint_bowel(image, anatomy, coords, soft)
    return image, soft


def _paint_spine(image: np.ndarray, anatomy: IrregularAnatomy, coords: Coords) -> np.ndarray:
    """A vertebral body with cortex and discs, the canal and the posterior arch; returns the 2D bone mask."""
    u, v, w = coords
    hu, sv, radius = anatomy.hu, anatomy.spine_v, anatomy.spine_radius
    dist = np.hypot(u[:, None], v[None, :] - sv)
    body = dist < radius
    canal_dist = np.hypot(u[:, None], v[None, :] - sv + radius + 8)
    arch = (canal_dist < 13) | ((np.abs(u[:, None]) < 3.5) & (v[None, :] < sv - radius - 14)
                                & (v[None, :] > sv - radius - 40))
    arch &= ~body
    disc = np.mod(w - anatomy.spine_phase, SPINE_PERIOD_MM) < 7.0
    cortex = body & (dist > radius - 2.5)
    image[body] = hu["cancellous"]
    image[cortex] = hu["cortex_bone"]
    image[arch] = hu["cortex_bone"] * 0.8
    image[canal_dist < 7.5] = hu["csf"]
    body_index = np.nonzero(body)
    image[body_index[0][:, None], body_index[1][:, None], np.nonzero(disc)[0][None, :]] = hu["disc"]
    return body | arch | (canal_dist < 7.5)


def _paint_ribs(image: np.ndarray, anatomy: IrregularAnatomy, coords: Coords, ring: np.ndarray) -> None:
    """Rib segments in the muscle wall, sloping down anteriorly, above the liver's lower edge."""
    u, v, w = coords
    a = anatomy.body_axes[0]
    lateral = ring & ((np.abs(u[:, None]) > 0.3 * a) | (v[None, :] < 0))
    lateral &= np.abs(u[:, None]) > anatomy.spine_radius + 15
    pixels = np.nonzero(lateral)
    if not pixels[0].size:
        return
    floor = top_and_bottom(anatomy.liver)[1] + 25
    height = w[None, :] + 0.4 * v[pixels[1]][:, None] - anatomy.rib_phase
    rib = (np.mod(height, RIB_PERIOD_MM) < 7.0) & (w[None, :] > floor)
    rows, slices = np.nonzero(rib)
    image[pixels[0][rows], pixels[1][rows], slices] = 0.6 * anatomy.hu["cortex_bone"]


def _paint_bowel(image: np.ndarray, anatomy: IrregularAnatomy, coords: Coords, soft: np.ndarray) -> None:
    """Loops of bowel in the mesenteric fat below ``bowel_top``, some with gas or oral contrast."""
    u, v, w = coords
    low = int(np.searchsorted(w, anatomy.bowel_top))
    if low == 0:
        return
    rows, cols = np.nonzero(soft.any(axis=1))[0], np.nonzero(soft.any(axis=0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1), slice(0, low))
    sub = sub_coords(box, coords)
    loops_field, gas_field = (f(*sub) for f in anatomy.bowel)
    inside = soft[box[0], box[1]][:, :, None]
    values = anatomy.hu["bowel"] + 12.0 * loops_field
    values[gas_field > 1.4] = anatomy.hu["gas"]
    if anatomy.oral_contrast:
        values[loops_field > 1.3] = 250.0
    loops = (loops_field > 0.3) & inside
    image[box][loops] = values[loops]


def paint_organ(image: np.ndarray, organ: Organ, coords: Coords, allowed: np.ndarray) -> tuple[tuple, np.ndarray | None]:
    """Paint one organ where the 2D ``allowed`` mask lets it; returns (region, mask) or (region, None)."""
    region = region_of(organ.shape.box(), coords)
    if is_empty(region):
        return region, None
    sub = sub_coords(region, coords)
    level = organ.shape.level(*sub)
    mask = (level < 0) & allowed[region[0], region[1]][:, :, None]
    values = np.full(level.shape, organ.hu, np.float32)
    if organ.texture is not None:
        values += np.float32(organ.texture_hu) * organ.texture(*sub)
    if organ.inner_hu is not None:
        inner = level < -organ.wall_mm
        values[inner] = organ.inner_hu
        if organ.gas_above_v is not None:
            values[inner & (sub[1] > organ.gas_above_v)[None, :, None]] = organ.gas_hu
    image[region][mask] = values[mask]
    return region, mask


def _paint_liver(image: np.ndarray, label: np.ndarray, anatomy: IrregularAnatomy, coords: Coords,
                 soft: np.ndarray) -> None:
    """The liver: fine texture and hepatic vessels (labelled liver, as in LiTS); label 1."""
    region = region_of(anatomy.liver.box(), coords)
    if is_empty(region):
        return
    sub = sub_coords(region, coords)
    mask = (anatomy.liver.level(*sub) < 0) & soft[region[0], region[1]][:, :, None]
    values = anatomy.hu["liver"] + np.float32(anatomy.liver_texture_hu) * anatomy.liver_texture(*sub)
    first, second = (f(*sub) for f in anatomy.vessels)
    tubes = first**2 + second**2 < anatomy.vessel_radius**2
    values[tubes] = anatomy.hu["hepatic_vessel"]
    image[region][mask] = values[mask]
    label[region][mask] = 1
