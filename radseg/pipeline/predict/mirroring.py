"""Test-time mirroring over the axes the network saw mirrored in training (nnU-Net's mirroring).

Averaging over mirrored copies only helps where the network was trained on mirrored patches: a
model trained with ``augment.flip_prob=0`` (radseg plan's choice, since the liver is on the right and
the spleen on the left) has never seen a left-right mirrored scan, and averaging in its prediction
on one blurs exactly the asymmetry it learnt. :func:`trained_mirror_axes` reads those axes from the
training config, which travels inside every checkpoint.
"""

from __future__ import annotations

import itertools
from typing import Sequence

from radseg.configs.schema import AugmentConfig
from radseg.errors import ConfigError


def trained_mirror_axes(augment_cfg: AugmentConfig) -> tuple[int, ...]:
    """The spatial axes (0 = x, 1 = y, 2 = z of the RAS grid) flipped in training.

    A checkpoint written before ``augment.flip_axes`` existed loads with its default (every axis),
    which is what training did then (``RandFlipd`` on all three axes with ``flip_prob``).

    Args:
        augment_cfg: the run's ``augment`` section.

    Returns:
        The sorted axes, or ``()`` when ``flip_prob`` is 0 (nothing to mirror).
    """
    if augment_cfg.flip_prob <= 0:
        return ()
    return tuple(sorted({int(axis) for axis in augment_cfg.flip_axes}))


def mirror_flips(axes: Sequence[int] | None, spatial_dims: int) -> list[tuple[int, ...]]:
    """Every combination of the mirrored axes as tensor dims of ``(B, C, *spatial)``, identity first.

    Args:
        axes: spatial axes to mirror; None means every axis.
        spatial_dims: 2 or 3.

    Returns:
        ``2 ** len(axes)`` tuples of dims to ``torch.flip``, the first one empty.

    Raises:
        ConfigError: an axis is not a spatial axis of the image.
    """
    axes = list(range(spatial_dims)) if axes is None else [int(a) for a in axes]
    if any(not 0 <= axis < spatial_dims for axis in axes):
        raise ConfigError(f"mirror axes {axes} must be spatial axes 0..{spatial_dims - 1} of the "
                          f"{spatial_dims}D image; fix: set augment.flip_axes to a subset of them")
    dims = [2 + axis for axis in sorted(set(axes))]
    return [flip for n in range(len(dims) + 1) for flip in itertools.combinations(dims, n)]
