"""The ``irregular`` phantom family: a second synthetic liver CT, held out from tuning.

``radseg phantom DIR --profile irregular`` writes it in the same MSD layout as the other profiles
(labels 0 background, 1 liver, 2 tumour). Its generator shares no shape code with
:mod:`radseg.pipeline.data.phantom_anatomy`, and it differs the way real datasets differ from each other:

* lesions: 0-8 per case (a fifth of cases have none), 5-50 mm across, lobulated and irregular (unions of
  rotated ellipsoids under a smooth random field), hypo- or hyperdense to the liver, some with an
  enhancing rim or a necrotic core, textured, with soft borders;
* look-alikes touching the liver: spleen, stomach wall and heart within 10 HU of it, a kidney, a
  gallbladder and the vena cava carved out of it; plain, arterial or portal-venous phase;
* correlated noise of varying level (the kernel colours it), white noise, a low-frequency bias in some
  cases, metal streaks in some;
* slices 1-5 mm, 0.6-1.0 mm in plane, a 160-320 mm scan that cuts the liver at the top or bottom in
  some cases, stored RAS, LPS or other flips, and about a third oblique (a tilted direction matrix).

No planner rule is read off this family; it is only used to check rules read off the others.
Each case is deterministic in ``(seed, index)``; at most 14 million voxels (about 340 x 340 x 120).
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from radseg.pipeline.data.phantom_irregular_anatomy import IrregularAnatomy, sample_anatomy, top_and_bottom
from radseg.pipeline.data.phantom_irregular_lesions import Lesion, paint_lesions, sample_lesions
from radseg.pipeline.data.phantom_irregular_noise import Noise, apply_noise, sample_noise
from radseg.pipeline.data.phantom_irregular_paint import paint_anatomy
from radseg.pipeline.data.phantom_irregular_shapes import random_rotation

#: slice thicknesses (mm) and in-plane spacing range (mm)
SLICE_MM = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
IN_PLANE_MM = (0.6, 1.0)
#: the most voxels along an in-plane axis (a narrower field of view keeps the liver's side) and in all
MAX_IN_PLANE = 416
MAX_VOXELS = 14_000_000  # 56 MB of float32
#: stored orientations (the slice axis stays last) and their share; shares of oblique and cut scans
ORIENTATIONS = ("RAS", "LPS", "LPI", "LAS", "RPS")
ORIENTATION_SHARE = (0.35, 0.35, 0.1, 0.1, 0.1)
OBLIQUE_SHARE = 0.3
CUT_SHARE = 0.3
#: scan length along w (mm) before the voxel budget
SCAN_MM = (160.0, 320.0)
#: "abdomen" draws from (seed, index), "chest-pelvis" from (seed, index, 1)
_STREAM = 2


@dataclass
class IrregularCase:
    """Every random choice of one case but its noise samples."""

    anatomy: IrregularAnatomy
    lesions: list[Lesion]
    spacing: np.ndarray  # (3,) mm, RAS axis order
    shape: tuple[int, int, int]
    centre: np.ndarray  # (3,) the scan's centre, body mm
    body_world: np.ndarray  # (3,) world position (RAS mm) of the body origin
    orientation: str
    rotation: np.ndarray | None  # the tilt of an oblique scan
    noise: Noise
    cut: str  # where the liver may reach past the scan: "", "top", "bottom" or "top+bottom"


def sample_irregular_case(seed: int, index: int) -> IrregularCase:
    """The random choices of case ``index`` of seed ``seed`` (cheap: nothing is rasterised)."""
    rng = np.random.default_rng([seed, index, _STREAM])
    anatomy = sample_anatomy(rng)
    lesions = sample_lesions(rng, anatomy)
    spacing, shape, centre, cut = _sample_grid(rng, anatomy)
    half = shape[2] * spacing[2] / 2
    noise = sample_noise(rng, anatomy, (centre[2] - half, centre[2] + half))
    orientation = str(rng.choice(ORIENTATIONS, p=ORIENTATION_SHARE))
    body_world = np.array([rng.uniform(-30, 30), rng.uniform(-220, -120), rng.uniform(-600, 100)])
    return IrregularCase(anatomy, lesions, spacing, shape, centre, body_world, orientation,
                         _sample_oblique(rng), noise, cut)


def make_irregular_case(seed: int, index: int, scale: float = 1.0) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """One case as in-memory NIfTI images ``(image int16 HU, label uint8)``, deterministic in ``(seed, index)``.

    Args:
        seed: dataset seed.
        index: case index.
        scale: voxel size factor; above 1 renders the same case on a coarser grid (for fast tests).
    """
    case = sample_irregular_case(seed, index)
    return render_case(case, np.random.default_rng([seed, index, _STREAM, 1]), scale)


def render_case(case: IrregularCase, rng: np.random.Generator, scale: float = 1.0) -> tuple[nib.Nifti1Image, ...]:
    """Rasterise ``case`` (noise drawn from ``rng``) into ``(image int16 HU, label uint8)`` NIfTI images."""
    spacing = case.spacing * scale
    shape = tuple(max(int(round(n / scale)), 2) for n in case.shape)
    coords = tuple(c + (np.arange(n) - (n - 1) / 2) * s for c, n, s in zip(case.centre, shape, spacing))
    image, label = paint_anatomy(case.anatomy, coords)
    paint_lesions(image, label, case.lesions, coords, case.anatomy.hu["liver"])
    image = apply_noise(image, label, case.noise, coords, rng)
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    affine = _affine(case, spacing, shape)
    return _nifti(_stored(hu, case.orientation), affine, "image"), _nifti(_stored(label, case.orientation), affine, "label")


def _sample_grid(rng: np.random.Generator, anatomy: IrregularAnatomy) -> tuple[np.ndarray, tuple, np.ndarray, str]:
    """Spacing, shape, centre (body mm) and liver cut of the scan, within the voxel budget."""
    in_plane, slice_mm = rng.uniform(*IN_PLANE_MM), float(rng.choice(SLICE_MM))
    front, back = anatomy.body_axes[1], anatomy.body_axes[1] * anatomy.posterior_scale
    width = 2 * anatomy.body_axes[0] + 20
    nx = min(int(round(width / in_plane)), MAX_IN_PLANE)
    ny = min(int(round((front + back + 20) / in_plane)), MAX_IN_PLANE)
    nz = min(int(round(rng.uniform(*SCAN_MM) / slice_mm)), MAX_VOXELS // (nx * ny))
    centre_w, cut = _sample_scan_range(rng, anatomy, nz * slice_mm)
    # a field of view narrower than the body keeps the patient's right, where the liver is
    centre = np.array([(width - nx * in_plane) / 2, (front - back) / 2, centre_w])
    return np.array([in_plane, in_plane, slice_mm]), (nx, ny, nz), centre, cut


def _sample_scan_range(rng: np.random.Generator, anatomy: IrregularAnatomy, extent: float) -> tuple[float, str]:
    """The scan's centre along w and where it may cut the liver: on purpose in CUT_SHARE of cases."""
    top, bottom = top_and_bottom(anatomy.liver)
    low, high = (corner[2] for corner in anatomy.liver.box())
    choice = rng.uniform()
    if choice < CUT_SHARE / 2:
        start = top - rng.uniform(25, 55) - extent
    elif choice < CUT_SHARE:
        start = bottom + rng.uniform(25, 55)
    elif high - extent <= low:
        start = rng.uniform(high - extent, low)
    else:  # the scan is shorter than the liver: centred on it
        start = (low + high - extent) / 2 + rng.uniform(-10, 10)
    cut = "+".join(name for name, past in (("top", start + extent < high), ("bottom", start > low)) if past)
    return start + extent / 2, cut


def _sample_oblique(rng: np.random.Generator) -> np.ndarray | None:
    """A gantry tilt (about the left-right axis) or a tilt about any axis, in OBLIQUE_SHARE of cases."""
    choice = rng.uniform()
    if choice >= OBLIQUE_SHARE:
        return None
    if choice < OBLIQUE_SHARE / 2:
        return random_rotation(rng, 25.0, np.array([1.0, 0.0, 0.0]), min_degrees=8.0)
    return random_rotation(rng, 15.0, min_degrees=5.0)


def _flips(orientation: str) -> tuple[bool, bool, bool]:
    return orientation[0] == "L", orientation[1] == "P", orientation[2] == "I"


def _stored(array: np.ndarray, orientation: str) -> np.ndarray:
    axes = tuple(axis for axis, flip in enumerate(_flips(orientation)) if flip)
    return np.ascontiguousarray(np.flip(array, axes) if axes else array)


def _affine(case: IrregularCase, spacing: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The stored array's affine: flipped axes, then the tilt about the scan's centre."""
    direction = np.diag(spacing * np.where(_flips(case.orientation), -1.0, 1.0))
    if case.rotation is not None:
        direction = case.rotation @ direction
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = case.body_world + case.centre - direction @ ((np.asarray(shape) - 1) / 2)
    return affine


def _nifti(array: np.ndarray, affine: np.ndarray, kind: str) -> nib.Nifti1Image:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = f"radseg irregular phantom {kind}".encode()
    return image
