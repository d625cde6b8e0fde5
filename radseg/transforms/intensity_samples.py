"""Foreground intensities of a case, channel by channel, for the dataset fingerprint."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from radseg.errors import DataError
from radseg.transforms.grid import axis_correspondence, label_on_image_grid
from radseg.transforms.io import read_header, read_image


def foreground_samples(image_paths: Sequence[str], label_path: str, rng: np.random.Generator,
                       count: int) -> list[np.ndarray]:
    """Up to ``count`` intensities per channel, sampled at the same foreground voxels.

    Args:
        image_paths: the case's image files (one per channel, or one 4D/multi-component file).
        label_path: its label, on the image's voxels in any axis order (see
            :func:`radseg.transforms.grid.label_on_image_grid`).
        rng: the sampling's random generator.
        count: voxels sampled (all of them when the foreground has fewer).

    Returns:
        One float64 array per channel, the same voxels in each.

    Raises:
        DataError: the label does not lie on the image's voxels.
    """
    _check_same_voxels(image_paths[0], label_path)
    label_image = read_image(label_path)
    chosen = None
    samples: list[np.ndarray] = []
    for path in image_paths:
        image = read_image(path)
        if chosen is None:
            label = sitk.GetArrayFromImage(label_on_image_grid(label_image, image)) > 0
            chosen = np.flatnonzero(label)
            if chosen.size > count:
                chosen = np.sort(rng.choice(chosen, size=count, replace=False))
        array = sitk.GetArrayFromImage(image)  # (z, y, x), (c, z, y, x) for 4D, (z, y, x, c) vectors
        if image.GetNumberOfComponentsPerPixel() > 1:
            array = np.moveaxis(array, -1, 0)
        for channel in (array if array.ndim == 4 else [array]):
            samples.append(np.asarray(channel.reshape(-1)[chosen], dtype=np.float64))
    return samples


def _check_same_voxels(image_path: str, label_path: str) -> None:
    image, label = read_header(image_path), read_header(label_path)
    if axis_correspondence(label, image) is None:
        raise DataError(f"label {label_path} has shape {label.shape} but image {image_path} has {image.shape} "
                        "(or its axes are not those of the image, flipped or permuted); expected one grid; "
                        "fix: resample the label to the image")
