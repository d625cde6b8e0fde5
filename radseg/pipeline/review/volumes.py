"""A case's volumes for the review page: read, put on the display grid, and encoded once, compressed.

The display grid is the scan's own voxel grid turned to the nearest RAS axes (nibabel's closest
canonical orientation: only axis permutations and flips, no resampling), so that index ``i`` runs
towards the patient's right (R), ``j`` towards anterior (A), ``k`` towards superior (S).
Its affine is exact, so the page's millimetre read-out is exact also for oblique scans, which are
shown in their voxel grid. Volumes above ``max_voxels`` are shown with every ``step``-th voxel
(display only; the page says so), the affine scaled to match.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from isal import isal_zlib
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from radseg.pipeline.evaluate.inputs import CasePair
from radseg.pipeline.evaluate.loading import load_case
from radseg.pipeline.review.cases import ReviewCase
from radseg.transforms.io import read_image

#: voxels above which a volume is shown subsampled (a 512x512x800 CT is shown at 256x256x400)
MAX_DISPLAY_VOXELS = 32_000_000
_INT16 = (-32768, 32767)


@dataclass
class CaseVolumes:
    """One case on its own grid, ``(X, Y, Z)`` index order, affine voxel -> RAS mm."""

    pred: np.ndarray
    truth: np.ndarray | None
    image: np.ndarray | None
    probability: np.ndarray | None  # foreground probability (1 - background), float32
    affine: np.ndarray
    spacing: tuple[float, float, float]


def load_volumes(case: ReviewCase, labels: dict[int, str]) -> CaseVolumes:
    """Read a case's prediction (checked against the label map), truth, scan and probability map.

    Raises:
        DataError: as :func:`radseg.pipeline.evaluate.loading.load_case`.
    """
    foreground = tuple(index for index in labels if index)
    pair = CasePair(case.case_id, case.truth or case.pred, case.pred, probabilities=case.probabilities)
    loaded = load_case(pair, len(labels), probability_classes=foreground)  # prediction only: read twice, checked once
    probability = sum(loaded.probabilities.values()) if loaded.probabilities else None
    image = None
    if case.image is not None:
        image = sitk.GetArrayFromImage(read_image(case.image, case.series_uid))
        image = image[..., 0].T if image.ndim == 4 else image.T  # several channels: the first is shown
    return CaseVolumes(loaded.pred, loaded.truth if case.truth else None, image, probability, loaded.affine,
                       loaded.spacing)


@dataclass
class DisplayGrid:
    """How a case's arrays become the page's arrays: orientation, subsampling step, and the result."""

    orientation: np.ndarray  # nibabel ornt: for each voxel axis, the RAS axis it goes to and its flip
    step: int
    shape: tuple[int, int, int]  # display shape (R, A, S)
    affine: np.ndarray  # display index -> RAS mm

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``array`` on the display grid, in Fortran order (the page indexes ``i + nI * (j + nJ * k)``)."""
        turned = apply_orientation(array, self.orientation)[:: self.step, :: self.step, :: self.step]
        return np.asfortranarray(turned)


def display_grid(shape: tuple[int, ...], affine: np.ndarray, max_voxels: int = MAX_DISPLAY_VOXELS) -> DisplayGrid:
    """The display grid of a volume of ``shape`` with voxel -> RAS ``affine``."""
    orientation = io_orientation(affine)
    turned = tuple(int(shape[int(axis)]) for axis in np.argsort(orientation[:, 0]))
    step = 1
    while math.prod(math.ceil(n / step) for n in turned) > max_voxels:
        step += 1
    canonical = affine @ inv_ornt_aff(orientation, shape)
    display = canonical @ np.diag([step, step, step, 1.0])
    return DisplayGrid(orientation, step, tuple(math.ceil(n / step) for n in turned), display)


def encode(array: np.ndarray, dtype: str) -> str:
    """Base64 of the zlib-compressed little-endian bytes (the page inflates them with DecompressionStream)."""
    raw = np.asarray(array, dtype=dtype).tobytes(order="F")
    return base64.b64encode(isal_zlib.compress(raw, 2)).decode("ascii")


def encode_image(image: np.ndarray) -> dict:
    """The scan as int16 with ``value = stored * slope + intercept`` (exact for CT's integer HU)."""
    low, high = float(image.min()), float(image.max())
    integral = np.issubdtype(image.dtype, np.integer) and _INT16[0] <= low and high <= _INT16[1]
    if integral:
        slope, intercept, stored = 1.0, 0.0, image
    else:
        slope = (high - low) / 65535.0 or 1.0
        intercept = low + 32768.0 * slope
        stored = np.clip(np.round((image - intercept) / slope), *_INT16)
    return {"slope": slope, "intercept": intercept, "data": encode(stored, "<i2"), "modality": _modality(image),
            "auto_window": [float(v) for v in np.percentile(image[::2, ::2, ::2], (1.0, 99.0))]}


def _modality(image: np.ndarray) -> str:
    """CT when the values look like Hounsfield units (reaching air, about -1000), else MR (which never goes below 0
    by much, even bias-corrected)."""
    return "CT" if float(image.min()) <= -500 else "MR"
