"""Shape primitives of the ``irregular`` phantom: smooth random fields and level sets of rotated ellipsoids.

Written independently of :mod:`radseg.pipeline.data.phantom_anatomy` (whose shapes are cosine-perturbed
axis-aligned ellipsoids): here a field is a lattice of Gaussian bumps with normal weights, and a shape is
the union of rotated ellipsoids whose level is pushed in and out by such a field. Everything is in body
millimetres ``(u, v, w)`` (u towards the patient's right, v anterior, w superior) and is evaluated on
the outer grid of three 1D coordinate arrays, so a volume never needs 3D coordinate arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: a field is clipped to this many standard deviations, so a perturbed shape stays inside its box
FIELD_CLIP = 2.5


@dataclass
class SmoothField:
    """A smooth random field of unit variance over a box: normal weights on a lattice of Gaussian bumps.

    The value at ``(u, v, w)`` is ``sum_abc C[a, b, c] g_a(u) g_b(v) g_c(w)``; each axis' bumps (standard
    deviation = lattice step) are scaled so that their squares sum to one at every point, hence the field
    has variance exactly 1 everywhere. Outside its box it continues the border value.
    """

    start: np.ndarray  # (3,) first lattice node, mm
    step: float  # lattice step and bump width, mm
    weights: np.ndarray  # (cu, cv, cw) float32

    @classmethod
    def sample(cls, rng: np.random.Generator, low, high, length_mm: float) -> "SmoothField":
        """A field over the box ``[low, high]`` (mm) whose features are about ``length_mm`` across."""
        low, high = np.asarray(low, float) - 2 * length_mm, np.asarray(high, float) + 2 * length_mm
        counts = tuple(int(n) for n in np.ceil((high - low) / length_mm).astype(int) + 1)
        return cls(low, float(length_mm), rng.standard_normal(counts, dtype=np.float32))

    def __call__(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The field on the outer grid of ``u``, ``v``, ``w``: float32 ``(len(u), len(v), len(w))``."""
        bumps = [self._bumps(coords, axis) for axis, coords in enumerate((u, v, w))]
        partial = np.tensordot(self.weights, bumps[2], axes=([2], [1]))  # (cu, cv, nw)
        partial = np.einsum("jb,abk->ajk", bumps[1], partial, optimize=True)  # (cu, nv, nw)
        return np.tensordot(bumps[0], partial, axes=([1], [0]))  # (nu, nv, nw)

    def _bumps(self, coords: np.ndarray, axis: int) -> np.ndarray:
        count = self.weights.shape[axis]
        nodes = self.start[axis] + self.step * np.arange(count)
        coords = np.clip(np.asarray(coords, float), nodes[0] + self.step, nodes[-1] - self.step)
        bumps = np.exp(-0.5 * ((coords[:, None] - nodes[None, :]) / self.step) ** 2)
        bumps /= np.sqrt((bumps**2).sum(axis=1, keepdims=True))
        return bumps.astype(np.float32)


def random_rotation(rng: np.random.Generator, max_degrees: float, axis: np.ndarray | None = None,
                    min_degrees: float = 0.0) -> np.ndarray:
    """A 3x3 rotation by ``min_degrees`` to ``max_degrees`` either way about ``axis`` (random when None)."""
    axis = rng.normal(size=3) if axis is None else np.asarray(axis, float)
    axis = axis / np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(min_degrees, max_degrees) * rng.choice((-1.0, 1.0)))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


@dataclass
class Ellipsoid:
    """A rotated ellipsoid: ``rotation``'s columns are its axes in body coordinates."""

    center: np.ndarray  # (3,) mm
    axes: np.ndarray  # (3,) semi-axes, mm
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def half_extent(self) -> np.ndarray:
        """Half the size of the axis-aligned box around the ellipsoid (mm, per body axis)."""
        return np.sqrt((self.rotation**2) @ (self.axes**2))

    def level(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """About the signed distance (mm, negative inside): ``(rho - 1) * min(axes)`` on the outer grid."""
        quad = (self.rotation / self.axes**2) @ self.rotation.T
        d = [np.asarray(c, np.float32) - np.float32(c0) for c, c0 in zip((u, v, w), self.center)]
        q = np.float32(quad[0, 0]) * (d[0] ** 2)[:, None, None] + np.float32(quad[1, 1]) * (d[1] ** 2)[None, :, None]
        q = q + np.float32(quad[2, 2]) * (d[2] ** 2)[None, None, :]
        q += np.float32(2 * quad[0, 1]) * np.multiply.outer(d[0], d[1])[:, :, None]
        q += np.float32(2 * quad[0, 2]) * np.multiply.outer(d[0], d[2])[:, None, :]
        q += np.float32(2 * quad[1, 2]) * np.multiply.outer(d[1], d[2])[None, :, :]
        return (np.sqrt(q, out=q) - 1) * np.float32(self.axes.min())


@dataclass
class Shape:
    """The union of ellipsoids, its surface pushed in and out by up to ``FIELD_CLIP * amplitude_mm``."""

    parts: list[Ellipsoid]
    field: SmoothField | None = None
    amplitude_mm: float = 0.0

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """The axis-aligned box (low, high corners, mm) that holds the shape."""
        pad = FIELD_CLIP * self.amplitude_mm * self._stretch() + 1.0
        low = np.min([p.center - p.half_extent() for p in self.parts], axis=0) - pad
        high = np.max([p.center + p.half_extent() for p in self.parts], axis=0) + pad
        return low, high

    def level(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The shape's level on the outer grid (negative inside), float32."""
        level = self.parts[0].level(u, v, w)
        for part in self.parts[1:]:
            np.minimum(level, part.level(u, v, w), out=level)
        if self.field is not None and self.amplitude_mm > 0:
            bump = np.clip(self.field(u, v, w), -FIELD_CLIP, FIELD_CLIP)
            level += np.float32(self.amplitude_mm) * bump
        return level

    def _stretch(self) -> float:
        # the level is (rho - 1) * min axis, so along a long axis a 1 mm level is up to max/min mm of distance
        return max(float(p.axes.max() / p.axes.min()) for p in self.parts)


def perturbed(rng: np.random.Generator, parts: list[Ellipsoid], amplitude_mm: float, length_mm: float) -> Shape:
    """The union of ``parts`` with a random field of ``length_mm`` features pushing its surface by ``amplitude_mm``."""
    shape = Shape(parts, None, amplitude_mm)
    shape.field = SmoothField.sample(rng, *shape.box(), length_mm)
    return shape


def region_of(box: tuple[np.ndarray, np.ndarray], coords: tuple[np.ndarray, ...]) -> tuple[slice, ...]:
    """The grid slices (of sorted 1D ``coords``) that cover ``box``; an empty slice when it misses the grid."""
    low, high = box
    return tuple(slice(int(np.searchsorted(c, lo)), int(np.searchsorted(c, hi, side="right")))
                 for c, lo, hi in zip(coords, low, high))


def sub_coords(region: tuple[slice, ...], coords: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The 1D coordinates inside ``region``."""
    return tuple(c[s] for c, s in zip(coords, region))


def is_empty(region: tuple[slice, ...]) -> bool:
    """Whether ``region`` holds no voxel."""
    return any(s.stop <= s.start for s in region)
