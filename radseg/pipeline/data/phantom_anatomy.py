"""The phantom's anatomy: a body, a liver and tumours in world millimetres, sampled onto a case's grid.

The anatomy of each case is defined in world coordinates (nibabel's RAS+ millimetres: +x is the
patient's left-to-right direction, so the patient's right is +x, +y anterior, +z superior), then
sampled onto that case's own voxel grid: spacing, orientation code and origin vary per case, yet the
liver is always on the patient's right. Every random choice comes from one numpy Generator seeded by
``(seed, case index)``. :mod:`radseg.pipeline.data.phantom` writes these cases as a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

#: stored orientations: the slice axis is always superior-inferior, the in-plane axes vary
ORIENTATIONS = ("RAS", "LPS", "LAS", "RPS", "LPI", "RAI", "PLS", "ARS")
#: in-plane field of view (x, y) in mm; the slab along z is 120-160 mm
FIELD_OF_VIEW_MM = (220.0, 180.0)


@dataclass
class _Field:
    """A smooth random field in (-1, 1): tanh of a weighted sum of separable products of cosines.

    The raw sum has a standard deviation near 0.12; the gain spreads it to about 0.35.
    """

    frequencies: np.ndarray  # (terms, 3 axes, waves), radians per mm
    phases: np.ndarray  # (terms, 3, waves)
    wave_weights: np.ndarray  # (terms, 3, waves), each row sums to 1
    term_weights: np.ndarray  # (terms,), sums to 1

    @classmethod
    def sample(cls, rng: np.random.Generator, wavelength_mm: tuple[float, float], terms: int = 3) -> "_Field":
        shape = (terms, 3, 2)
        return cls(
            frequencies=2 * np.pi / rng.uniform(*wavelength_mm, shape),
            phases=rng.uniform(0, 2 * np.pi, shape),
            wave_weights=rng.dirichlet(np.ones(2), (terms, 3)),
            term_weights=rng.dirichlet(np.ones(terms)),
        )

    def __call__(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Evaluate on the outer grid of 1D coordinates; returns float32 (len(u), len(v), len(w))."""
        total = np.zeros((u.size, v.size, w.size), np.float32)
        for term in range(self.term_weights.size):
            axes = [self._wave(term, axis, coords) for axis, coords in enumerate((u, v, w))]
            total += (float(self.term_weights[term]) * axes[0])[:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
        return np.tanh(3.0 * total, out=total)

    def _wave(self, term: int, axis: int, coords: np.ndarray) -> np.ndarray:
        arg = np.outer(coords, self.frequencies[term, axis]) + self.phases[term, axis]
        return (np.cos(arg) @ self.wave_weights[term, axis]).astype(np.float32)


@dataclass
class _Blob:
    """An ellipsoid (body-relative mm) whose surface is pushed in and out by a smooth field."""

    center: np.ndarray  # (3,)
    axes: np.ndarray  # (3,) semi-axes in mm
    field: _Field | None = None
    amplitude_mm: float = 0.0
    #: y semi-axis scale per mm of x offset (the liver is thick laterally, thin medially)
    taper: float = 0.0

    def reach(self) -> np.ndarray:
        return self.axes * (1 + abs(self.taper) * self.axes[0]) + self.amplitude_mm + 1

    def mask(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        du, dv, dw = u - self.center[0], v - self.center[1], w - self.center[2]
        y_axis = self.axes[1] * np.clip(1 + self.taper * du, 0.4, None)
        rho2 = (du / self.axes[0])[:, None, None] ** 2 + (dv[None, :] / y_axis[:, None])[:, :, None] ** 2
        rho = np.sqrt(rho2 + (dw / self.axes[2])[None, None, :] ** 2)
        level = (rho - 1) * self.axes.min()
        if self.field is not None:
            level += self.amplitude_mm * self.field(u, v, w)
        return level < 0


@dataclass
class _Anatomy:
    """Every random choice of one case, in body-relative mm (u right, v anterior, w superior)."""

    body_axes: tuple[float, float]
    fat_mm: float
    spine_center: tuple[float, float]
    spine_radius: float
    liver: _Blob
    tumours: list[_Blob]
    distractors: list[tuple[_Blob, float]]  # spleen and kidneys with their HU
    liver_hu: float
    tumour_hu: list[float]
    liver_texture: _Field
    cavity_texture: _Field
    noise_hu: float


@dataclass
class _Grid:
    """The world positions (mm, RAS) of a RAS-ordered voxel grid, and the stored orientation."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    body_center: np.ndarray
    orientation: str

    def affine(self) -> np.ndarray:
        spacing = [c[1] - c[0] for c in (self.x, self.y, self.z)]
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = [self.x[0], self.y[0], self.z[0]]
        return affine


def make_phantom_case(seed: int, index: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """One phantom case as in-memory NIfTI images ``(image int16 HU, label uint8)``.

    Deterministic in ``(seed, index)``; case ``index`` of :func:`write_phantom_dataset` is this case.
    """
    rng = np.random.default_rng([seed, index])
    anatomy = _sample_anatomy(rng)
    grid = _sample_grid(rng)
    image, label = _rasterize(anatomy, grid, rng)
    return _to_nifti(image, grid, "image"), _to_nifti(label, grid, "label")


def _to_nifti(array: np.ndarray, grid: _Grid, kind: str) -> nib.Nifti1Image:
    image = nib.Nifti1Image(array, grid.affine())
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(grid.orientation))
    )
    image = image.as_reoriented(transform)
    image = nib.Nifti1Image(np.ascontiguousarray(image.dataobj), image.affine)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = f"radseg phantom {kind}".encode()
    return image


def _sample_grid(rng: np.random.Generator) -> _Grid:
    in_plane = rng.uniform(0.6, 1.0)
    slice_mm = rng.uniform(1.5, 5.0)
    extent = (*FIELD_OF_VIEW_MM, rng.uniform(120.0, 160.0))
    body_center = np.array([rng.uniform(-30, 30), rng.uniform(-200, -100), rng.uniform(-700, 100)])
    fov_center = body_center + rng.uniform(-8, 8, 3)
    coords = []
    for axis, spacing in enumerate((in_plane, in_plane, slice_mm)):
        count = int(round(extent[axis] / spacing))
        coords.append(fov_center[axis] + (np.arange(count) - (count - 1) / 2) * spacing)
    orientation = str(ORIENTATIONS[rng.integers(len(ORIENTATIONS))])
    return _Grid(*coords, body_center=body_center, orientation=orientation)


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    a, b = rng.uniform(88, 102), rng.uniform(66, 78)
    liver = _Blob(
        center=np.array([0.42 * a, 0.05 * b, rng.uniform(5, 20)]),
        axes=np.array([0.45 * a, 0.62 * b, rng.uniform(55, 65)]),
        field=_Field.sample(rng, (50, 120)),
        amplitude_mm=rng.uniform(5, 10),
        taper=rng.uniform(0.004, 0.007),
    )
    spleen = _Blob(np.array([-0.6 * a, -0.25 * b, 25]), np.array([18, 30, 40]) * rng.uniform(0.9, 1.1, 3))
    kidneys = [
        _Blob(np.array([side * 0.45 * a, -0.5 * b, -35]), np.array([20, 25, 45]) * rng.uniform(0.9, 1.1, 3))
        for side in (1, -1)
    ]
    for organ in (spleen, *kidneys):
        organ.field, organ.amplitude_mm = _Field.sample(rng, (30, 80)), 3.0
    liver_hu = rng.uniform(55, 65)
    tumours = _sample_tumours(rng, liver)
    return _Anatomy(
        body_axes=(a, b),
        fat_mm=rng.uniform(8, 18),
        spine_center=(0.0, -b + rng.uniform(28, 34)),
        spine_radius=rng.uniform(13, 17),
        liver=liver,
        tumours=tumours,
        distractors=[(spleen, rng.uniform(45, 55)), *[(k, rng.uniform(25, 35)) for k in kidneys]],
        liver_hu=liver_hu,
        tumour_hu=[liver_hu - rng.uniform(25, 60) for _ in tumours],
        liver_texture=_Field.sample(rng, (15, 45)),
        cavity_texture=_Field.sample(rng, (12, 40)),
        noise_hu=rng.uniform(10, 20),
    )


def _sample_tumours(rng: np.random.Generator, liver: _Blob) -> list[_Blob]:
    tumours = []
    # A ball of radius r around p stays in the undeformed liver when (1 - rho(p)) * min_axis >= r;
    # the surface moves by at most amplitude_mm and a voxel neighbour lies up to ~5.3 mm away.
    depth = liver.axes.min() - liver.amplitude_mm - 6.5
    for _ in range(rng.integers(0, 4)):
        radius = min(rng.uniform(3, 20), 0.8 * depth)
        rho = rng.uniform(0, 1) ** (1 / 3) * (depth - radius) / liver.axes.min()
        direction = rng.normal(size=3)
        offset = rho * liver.axes * direction / np.linalg.norm(direction)
        shape = _Field.sample(rng, (15, 40))
        tumours.append(_Blob(liver.center + offset, radius * rng.uniform(0.8, 1.0, 3), shape, 0.1 * radius))
    return tumours


def _rasterize(anatomy: _Anatomy, grid: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    u, v, w = (c - grid.body_center[i] for i, c in enumerate((grid.x, grid.y, grid.z)))
    image, cavity, bone = _body(anatomy, u, v, w)
    for organ, hu in anatomy.distractors:
        region, mask = _crop(organ, u, v, w)
        image[region][mask & cavity[region]] = hu
    label = np.zeros(image.shape, np.uint8)
    region, liver = _crop(anatomy.liver, u, v, w)
    liver &= cavity[region] & ~bone[region]
    texture = anatomy.liver_hu + 12 * anatomy.liver_texture(u[region[0]], v[region[1]], w[region[2]])
    image[region][liver] = texture[liver]
    label[region][liver] = 1
    for tumour, hu in zip(anatomy.tumours, anatomy.tumour_hu):
        _paint_tumour(image, label, tumour, hu, (u, v, w))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(anatomy.noise_hu)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label


def _body(anatomy: _Anatomy, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Air, fat, muscle wall, textured cavity, spine and aorta; returns (image, cavity, bone)."""
    a, b = anatomy.body_axes
    uu, vv = u[:, None], v[None, :]

    def ellipse(shrink: float) -> np.ndarray:
        return (uu / (a - shrink)) ** 2 + (vv / (b - shrink)) ** 2 < 1

    cavity_2d = ellipse(anatomy.fat_mm + 8)
    su, sv = anatomy.spine_center
    spine_dist = np.hypot(uu - su, vv - sv)
    vertebra = spine_dist < anatomy.spine_radius
    bone_2d = vertebra | ((np.abs(uu - su) < 4) & (vv < sv) & (vv > sv - anatomy.spine_radius - 8))
    aorta_2d = np.hypot(uu - su + 12, vv - sv - anatomy.spine_radius - 12) < 10
    slab = np.where(cavity_2d, 35.0, np.where(ellipse(anatomy.fat_mm), 50.0, np.where(ellipse(0), -100.0, -1000.0)))
    image = np.repeat(slab.astype(np.float32)[:, :, None], w.size, axis=2)
    texture = anatomy.cavity_texture(u, v, w)
    soft = cavity_2d & ~bone_2d & ~aorta_2d
    # darker pockets of mesenteric fat between soft-tissue loops
    image[soft] = np.where(texture[soft] < -0.5, -90.0, 35.0 + 20.0 * texture[soft])
    disc = (np.mod(w, 30.0) < 6.0).astype(np.float32)
    rim = bone_2d & ~(spine_dist < anatomy.spine_radius - 2)
    image[bone_2d] = 250.0 * (1 - disc) + 90.0 * disc
    image[rim] = 750.0 * (1 - disc) + 90.0 * disc
    image[aorta_2d] = 150.0
    shape = image.shape
    cavity = np.broadcast_to(soft[:, :, None], shape)
    bone = np.broadcast_to((bone_2d | aorta_2d)[:, :, None], shape)
    return image, cavity, bone


def _crop(blob: _Blob, u: np.ndarray, v: np.ndarray, w: np.ndarray, pad: int = 0) -> tuple[tuple[slice, ...], np.ndarray]:
    """The grid slices around a blob (``pad`` voxels wider) and its mask inside them."""
    reach = blob.reach()
    region = tuple(
        slice(max(int(np.searchsorted(c, lo)) - pad, 0), int(np.searchsorted(c, hi)) + pad)
        for c, lo, hi in zip((u, v, w), blob.center - reach, blob.center + reach)
    )
    return region, blob.mask(u[region[0]], v[region[1]], w[region[2]])


def _paint_tumour(image: np.ndarray, label: np.ndarray, tumour: _Blob, hu: float, coords: tuple) -> None:
    # one voxel of margin so the erosion sees each tumour voxel's whole neighbourhood
    region, mask = _crop(tumour, *coords, pad=1)
    # strictly inside: every voxel of a tumour has liver or tumour all around it
    mask &= ndimage.binary_erosion(label[region] > 0, np.ones((3, 3, 3), bool), border_value=0)
    image[region][mask] = hu
    label[region][mask] = 2
