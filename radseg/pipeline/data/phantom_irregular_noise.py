"""Noise and artefacts of the ``irregular`` phantom: correlated and white noise, low-frequency bias, metal streaks.

The reconstruction kernel blurs the image and colours the noise alike: white noise is added, then the
image is smoothed in plane by a Gaussian of ``kernel_mm``, so the noise is correlated over about that
distance; a little white noise is added after. Some cases get a smooth low-frequency bias (shading),
and some a small metal object (a clip, a screw) with streaks radiating from it over a few slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radseg.pipeline.data.phantom_irregular_anatomy import IrregularAnatomy, top_and_bottom
from radseg.pipeline.data.phantom_irregular_shapes import SmoothField

#: shares of cases with a low-frequency bias and with metal streaks
BIAS_SHARE = 0.35
STREAK_SHARE = 0.25
_METAL_HU = 2800.0


@dataclass
class Streaks:
    """A metal ball at ``centre`` (body mm) and straight streaks through it, fading with distance and along w."""

    centre: np.ndarray
    metal_radius_mm: float
    angles: np.ndarray  # (k,) radians in the axial plane
    amplitudes_hu: np.ndarray  # (k,) bright (> 0) and dark (< 0)
    width_mm: float
    reach_w_mm: float  # the streaks fade over this distance along w


@dataclass
class Noise:
    """The noise and artefacts of one case."""

    correlated_hu: float  # standard deviation of the kernel-coloured noise
    white_hu: float
    kernel_mm: float  # in-plane Gaussian blur (standard deviation) of the reconstruction kernel
    bias: SmoothField | None
    bias_hu: float
    streaks: Streaks | None


def sample_noise(rng: np.random.Generator, anatomy: IrregularAnatomy, fov_w: tuple[float, float]) -> Noise:
    """The noise of one case; ``fov_w`` is the scan's range along w (mm), where a metal object may sit."""
    noise = Noise(float(rng.uniform(4, 24)), float(rng.uniform(2, 10)), float(rng.uniform(0.5, 1.4)), None, 0.0, None)
    if rng.uniform() < BIAS_SHARE:
        noise.bias = SmoothField.sample(rng, (-150, -150, fov_w[0]), (150, 150, fov_w[1]), rng.uniform(60, 120))
        noise.bias_hu = float(rng.uniform(8, 25))
    if rng.uniform() < STREAK_SHARE:
        noise.streaks = _sample_streaks(rng, anatomy, fov_w)
    return noise


def _sample_streaks(rng: np.random.Generator, anatomy: IrregularAnatomy, fov_w: tuple[float, float]) -> Streaks:
    low, high = fov_w
    if rng.uniform() < 0.5:  # a screw in a vertebra's pedicle
        side = rng.choice((-1.0, 1.0))
        centre = (side * 10.0, anatomy.spine_v - anatomy.spine_radius, rng.uniform(0.8 * low + 0.2 * high,
                                                                                   0.2 * low + 0.8 * high))
    else:  # a surgical clip under the liver
        bottom = top_and_bottom(anatomy.liver)[1]
        centre = (rng.uniform(0, 40), rng.uniform(-10, 30), np.clip(bottom + rng.uniform(5, 40), low, high))
    count = int(rng.integers(4, 11))
    amplitudes = rng.uniform(30, 90, count) * rng.choice((-1.5, 1.0), count)
    return Streaks(np.array(centre, float), float(rng.uniform(1.5, 3.5)), rng.uniform(0, np.pi, count),
                   amplitudes, float(rng.uniform(0.8, 2.0)), float(rng.uniform(8, 25)))


def apply_noise(image: np.ndarray, label: np.ndarray, noise: Noise, coords: tuple, rng: np.random.Generator) -> np.ndarray:
    """The image with metal, kernel blur and correlated noise, streaks, white noise and bias; float32."""
    if noise.streaks is not None:
        _paint_metal(image, label, noise.streaks, coords)
    spacing = [float(c[1] - c[0]) if c.size > 1 else 1.0 for c in coords[:2]]
    sigma = (noise.kernel_mm / spacing[0], noise.kernel_mm / spacing[1], 0.0)
    gain = _kernel_gain(sigma[0]) * _kernel_gain(sigma[1])
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise.correlated_hu / gain)
    image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    if noise.streaks is not None:
        _add_streaks(image, noise.streaks, coords)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise.white_hu)
    if noise.bias is not None:
        image += np.float32(noise.bias_hu) * noise.bias(*coords)
    return image


def _kernel_gain(sigma: float) -> float:
    """How much scipy's Gaussian filter of ``sigma`` voxels scales the standard deviation of white noise."""
    if sigma <= 0:
        return 1.0
    radius = int(4.0 * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    return float(np.sqrt((weights**2).sum()))


def _paint_metal(image: np.ndarray, label: np.ndarray, streaks: Streaks, coords: tuple) -> None:
    """A metal ball outside the liver label (it never changes a label)."""
    near = [np.nonzero(np.abs(c - c0) <= streaks.metal_radius_mm)[0] for c, c0 in zip(coords, streaks.centre)]
    if any(n.size == 0 for n in near):
        return
    region = tuple(slice(n[0], n[-1] + 1) for n in near)
    d2 = sum(((c[s] - c0) ** 2).reshape([-1 if i == axis else 1 for i in range(3)])
             for axis, (c, s, c0) in enumerate(zip(coords, region, streaks.centre)))
    ball = (d2 <= streaks.metal_radius_mm**2) & (label[region] == 0)
    image[region][ball] = _METAL_HU


def _add_streaks(image: np.ndarray, streaks: Streaks, coords: tuple) -> None:
    u, v, w = coords
    fade = np.exp(-0.5 * ((w - streaks.centre[2]) / streaks.reach_w_mm) ** 2)
    near = np.nonzero(fade > 0.02)[0]
    if not near.size:
        return
    slices = slice(near[0], near[-1] + 1)
    du, dv = u[:, None] - streaks.centre[0], v[None, :] - streaks.centre[1]
    r, theta = np.hypot(du, dv), np.arctan2(dv, du)
    pattern = np.zeros(r.shape, np.float32)
    for angle, amplitude in zip(streaks.angles, streaks.amplitudes_hu):
        distance = r * np.abs(np.sin(theta - angle))
        pattern += np.float32(amplitude) * np.exp(-0.5 * (distance / streaks.width_mm) ** 2).astype(np.float32)
    pattern /= 1 + r.astype(np.float32) / 60
    image[:, :, slices] += pattern[:, :, None] * fade[slices].astype(np.float32)[None, None, :]
