"""Phantom profiles: the default abdominal slab, and a harder chest-to-pelvis geometry.

``abdomen`` (the default, fast in tests) is :func:`radseg.pipeline.data.phantom_anatomy.make_phantom_case`:
a 120-160 mm slab around the liver. ``chest-pelvis`` is what a planner, a demo and tests should
also be tuned on, so that no setting fits one easy geometry only:

* a 180-300 mm field of view along z at about 1 x 1 x 2.5-5 mm, from the lungs to the pelvis;
* lungs, spine, pelvic bones and a bladder; a spleen whose HU is the liver's within +-5 HU and
  kidneys, as distractors of similar intensity;
* 0-3 tumours of 6-22 mm radius, 25-45 HU darker than the liver; noise of 8-22 HU;
* about a third of the cases oblique: the scanner axes rotated 5-20 degrees from the patient's.

``irregular`` is a second, independently written family held out from tuning (no planner rule is read
off it): :mod:`radseg.pipeline.data.phantom_irregular`.

Each case is deterministic in ``(profile, seed, index)``, so the same seed writes the same bytes.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from radseg.errors import DataError
from radseg.pipeline.data.phantom_anatomy import (
    FIELD_OF_VIEW_MM, ORIENTATIONS, _Anatomy, _Blob, _Field, _Grid, _rasterize, _sample_anatomy, _to_nifti,
    make_phantom_case,
)
from radseg.pipeline.data.phantom_irregular import make_irregular_case

#: profile names accepted by ``radseg phantom --profile`` (the first is the default)
PROFILES = ("abdomen", "chest-pelvis", "irregular")
#: the chest-pelvis profile's field of view along z (mm), in-plane spacing and slice thickness
LONG_FOV_MM = (180.0, 300.0)
IN_PLANE_MM = (0.9, 1.1)
SLICE_MM = (2.5, 5.0)
#: share of chest-pelvis cases whose scanner axes are tilted, and the tilt range (degrees)
OBLIQUE_SHARE = 0.35
OBLIQUE_DEGREES = (5.0, 20.0)
_LUNG_HU, _BONE_HU, _BLADDER_HU = -850.0, 450.0, 8.0


def check_profile(profile: str) -> str:
    """The profile name, or a DataError naming the valid ones."""
    if profile not in PROFILES:
        raise DataError(f"phantom profile must be one of {', '.join(PROFILES)}, not {profile!r}; "
                        "pass --profile abdomen (fast, the default), --profile chest-pelvis (harder) "
                        "or --profile irregular (held-out family)")
    return profile


def make_profile_case(profile: str, seed: int, index: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """One case of ``profile`` as in-memory NIfTI images ``(image int16 HU, label uint8)``.

    Args:
        profile: one of :data:`PROFILES`.
        seed: dataset seed.
        index: case index; deterministic in ``(profile, seed, index)``.

    Raises:
        DataError: an unknown profile.
    """
    if check_profile(profile) == "abdomen":
        return make_phantom_case(seed, index)
    if profile == "irregular":
        return make_irregular_case(seed, index)
    rng = np.random.default_rng([seed, index, PROFILES.index(profile)])
    anatomy = _chest_pelvis_anatomy(rng)
    grid = _long_grid(rng, anatomy.liver)
    tilt = _oblique_rotation(rng)
    image, label = _rasterize(anatomy, grid, rng)
    return _tilted(_to_nifti(image, grid, "image"), tilt), _tilted(_to_nifti(label, grid, "label"), tilt)


def _chest_pelvis_anatomy(rng: np.random.Generator) -> _Anatomy:
    """The abdominal anatomy, with lungs, pelvis and bladder added and harder intensities."""
    anatomy = _sample_anatomy(rng)
    a, b = anatomy.body_axes
    liver = anatomy.liver
    anatomy.tumours = _tumours(rng, liver)
    anatomy.tumour_hu = [anatomy.liver_hu - rng.uniform(25, 45) for _ in anatomy.tumours]
    anatomy.noise_hu = rng.uniform(8, 22)
    spleen, _ = anatomy.distractors[0]
    kidneys = anatomy.distractors[1:]
    # the lungs sit above the liver dome; the liver is painted after them and keeps its dome
    dome = liver.center[2] + liver.axes[2] * rng.uniform(0.55, 0.8)
    lungs = [_Blob(np.array([side * 0.45 * a, 0.0, dome + 95]), np.array([0.4 * a, 0.75 * b, 110.0]))
             for side in (1, -1)]
    pelvis = [_Blob(np.array([side * 0.55 * a, -0.35 * b, -170.0]), np.array([9.0, 0.45 * b, 45.0]))
              for side in (1, -1)]
    bladder = _Blob(np.array([0.0, 0.35 * b, -185.0]), np.array([35.0, 28.0, 30.0]) * rng.uniform(0.8, 1.1, 3))
    for organ in (*lungs, *pelvis, bladder):
        organ.field, organ.amplitude_mm = _Field.sample(rng, (40, 100)), 4.0
    liver_like = anatomy.liver_hu + rng.uniform(-5, 5)
    anatomy.distractors = [*[(lung, _LUNG_HU) for lung in lungs], *[(bone, _BONE_HU) for bone in pelvis],
                           (bladder, _BLADDER_HU), (spleen, liver_like), *kidneys]
    return anatomy


def _tumours(rng: np.random.Generator, liver: _Blob) -> list[_Blob]:
    """0-3 tumours of 6-22 mm radius (shrunk only where the liver is too thin to hold them)."""
    depth = liver.axes.min() - liver.amplitude_mm - 6.5
    tumours = []
    for _ in range(rng.integers(0, 4)):
        radius = min(rng.uniform(6, 22), 0.9 * depth)
        rho = rng.uniform(0, 1) ** (1 / 3) * max(depth - radius, 0.0) / liver.axes.min()
        direction = rng.normal(size=3)
        offset = rho * liver.axes * direction / np.linalg.norm(direction)
        tumours.append(_Blob(liver.center + offset, radius * rng.uniform(0.85, 1.0, 3),
                             _Field.sample(rng, (15, 40)), 0.1 * radius))
    return tumours


def _long_grid(rng: np.random.Generator, liver: _Blob) -> _Grid:
    """A chest-to-pelvis grid: 180-300 mm along z, about 1 mm in plane, 2.5-5 mm slices."""
    in_plane = rng.uniform(*IN_PLANE_MM)
    slice_mm = rng.uniform(*SLICE_MM)
    extent = (*FIELD_OF_VIEW_MM, rng.uniform(*LONG_FOV_MM))
    body_center = np.array([rng.uniform(-30, 30), rng.uniform(-200, -100), rng.uniform(-700, 100)])
    # the field of view always holds the whole liver (centred on it when it barely fits)
    half, reach = extent[2] / 2, liver.reach()[2]
    low, high = liver.center[2] + reach - half, liver.center[2] - reach + half
    fov_z = rng.uniform(low, high) if low < high else float(liver.center[2])
    fov_center = body_center + np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), fov_z])
    coords = []
    for axis, spacing in enumerate((in_plane, in_plane, slice_mm)):
        count = int(round(extent[axis] / spacing))
        coords.append(fov_center[axis] + (np.arange(count) - (count - 1) / 2) * spacing)
    orientation = str(ORIENTATIONS[rng.integers(len(ORIENTATIONS))])
    return _Grid(*coords, body_center=body_center, orientation=orientation)


def _oblique_rotation(rng: np.random.Generator) -> np.ndarray | None:
    """A rotation (3x3) about a random axis by 5-20 degrees for about a third of the cases, else None."""
    if rng.uniform() >= OBLIQUE_SHARE:
        return None
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(*OBLIQUE_DEGREES))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _tilted(image: nib.Nifti1Image, rotation: np.ndarray | None) -> nib.Nifti1Image:
    """The same voxels with the scanner axes rotated about the volume's centre (an oblique scan)."""
    if rotation is None:
        return image
    affine = image.affine.copy()
    centre = affine[:3, :3] @ ((np.asarray(image.shape[:3]) - 1) / 2) + affine[:3, 3]
    affine[:3, :3] = rotation @ affine[:3, :3]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(image.shape[:3]) - 1) / 2)
    tilted = nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header)
    tilted.set_qform(affine, code=1)
    tilted.set_sform(affine, code=1)
    return tilted
