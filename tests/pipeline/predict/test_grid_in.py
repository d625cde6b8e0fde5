"""The fast way in (grid_in) against MONAI's own Orientationd, CropForegroundd and Spacingd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import MetaKeys

from radseg import keys
from radseg.pipeline.predict.grid_in import body_box, orient_crop_resample
from radseg.pipeline.predict.prepare import _spacing_end
from radseg.transforms.fingerprint import ResolvedPreprocess
from radseg.transforms.preprocess import build_inference_transforms


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])


def _scan(shape, dtype, seed: int = 0) -> np.ndarray:
    """Air with a smooth off-centre body of soft tissue and noise (so the crop box is not the whole scan)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = (grids[0] - 0.2) ** 2 / 0.4 + (grids[1] + 0.1) ** 2 / 0.5 + grids[2] ** 2 / 0.8 < 1
    values = np.where(inside, 40.0 + 200 * grids[0], -1000.0) + rng.normal(0, 20, size=shape)
    return values.astype(dtype)


def _monai(array: np.ndarray, affine: np.ndarray, resolved: ResolvedPreprocess) -> MetaTensor:
    chain = build_inference_transforms(resolved).transforms
    meta = {MetaKeys.AFFINE: torch.as_tensor(affine), MetaKeys.ORIGINAL_AFFINE: affine,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan")}
    loaded = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), meta=meta)
    return Compose(chain[1:_spacing_end(chain)])({keys.IMAGE: loaded})[keys.IMAGE]


def _affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


CASES = {
    # LPS-stored axial CT (most exports), z already at the target spacing (Spacingd keeps it)
    "lps-axial": (_affine(np.diag([-1.0, -1.0, 1.0]), (0.8, 0.8, 2.0), (100, 120, -50)), (1.5, 1.5, 2.0), 4),
    # sagittal storage (axes permuted and flipped), oblique by 10 degrees, upsampled along one axis
    "sagittal-oblique": (_affine(_rotation(10) @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
                                 (1.1, 0.9, 3.0), (-20, 30, 40)), (1.0, 2.0, 1.7), 2),
    # RAS-stored, no margin, coarser everywhere
    "ras-coarse": (_affine(np.eye(3), (0.7, 0.75, 1.25), (0, 0, 0)), (2.1, 1.9, 2.6), 0),
    # a bundle's pixdim may keep an axis (0: the scan's own spacing) or give two values (the last repeats)
    "keep-y": (_affine(np.diag([-1.0, 1.0, 1.0]), (0.9, 0.8, 2.2), (0, 0, 0)), (1.4, 0.0, 1.6), 1),
    "two-values": (_affine(np.eye(3), (0.9, 0.8, 2.2), (0, 0, 0)), (1.4, 1.7), 1),
    # within about 0.1% of the target on every axis: Spacingd leaves the scan and its affine as they are
    "near-target": (_affine(np.diag([-1.0, -1.0, 1.0]), (2.0, 2.0, 3.0), (1, 2, 3)), (2.0, 2.0, 3.002), 100),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_same_grid_and_values_as_monai(name: str, dtype) -> None:
    affine, spacing, margin = CASES[name]
    array = _scan((61, 53, 37), dtype)
    resolved = ResolvedPreprocess(modality="CT", target_spacing=spacing, ct_window=(-100.0, 200.0),
                                  ct_normalization="window", crop_foreground=True, body_threshold_hu=-500.0,
                                  crop_margin=margin)
    expected = _monai(array, affine, resolved)
    got = orient_crop_resample(array, affine, resolved)
    assert got.image.shape == expected.shape[1:]
    np.testing.assert_allclose(got.affine, np.asarray(expected.affine), atol=1e-9)
    # float32 sampling grids (MONAI) against float64 positions (here): HU differ by rounding only
    np.testing.assert_allclose(got.image.numpy(), expected[0].numpy(), atol=0.05, rtol=0)
    if name == "near-target":  # a margin of 100 keeps the whole scan: nothing to crop, nothing to resample
        np.testing.assert_array_equal(got.image.numpy(), array.astype(np.float32)[::-1, ::-1])
        assert not np.shares_memory(got.image.numpy(), array)  # the scan's buffer may be freed after this
    else:
        assert got.image.shape != array.shape  # the crop and resampling did something


def test_strided_view_input_and_no_crop() -> None:
    """A transposed view of a (z, y, x) buffer, as SimpleITK gives it, and crop_foreground off (MRI)."""
    buffer = np.ascontiguousarray(_scan((37, 53, 61), np.float32, seed=3) + 1000.0)
    array = buffer.T
    affine = _affine(np.diag([-1.0, 1.0, -1.0]), (1.0, 1.2, 2.5), (5, 5, 5))
    resolved = ResolvedPreprocess(modality="MRI", target_spacing=(1.5, 1.5, 2.0), crop_foreground=False)
    expected = _monai(array, affine, resolved)
    got = orient_crop_resample(array, affine, resolved)
    np.testing.assert_allclose(got.affine, np.asarray(expected.affine), atol=1e-9)
    np.testing.assert_allclose(got.image.numpy(), expected[0].numpy(), atol=0.05, rtol=0)


def test_body_box_integer_threshold_and_empty_scan() -> None:
    array = np.full((20, 30, 40), -1000, dtype=np.int16)
    array[5, 7:9, 30] = -57  # above -57.5, not above -57
    assert body_box(array, -57.5, 2) == ([3, 5, 28], [8, 11, 33])
    assert body_box(array, -57.0, 2) == ([0, 0, 0], [20, 30, 40])  # nothing above: the whole scan
    assert body_box(array, 40000.0, 0) == ([0, 0, 0], [20, 30, 40])  # above the dtype's range


def test_sheared_affine_is_left_to_monai() -> None:
    affine = np.eye(4)
    affine[0, 1] = 0.3
    resolved = ResolvedPreprocess(modality="CT", target_spacing=(2.0, 2.0, 2.0), crop_foreground=False)
    assert orient_crop_resample(_scan((20, 20, 20), np.int16), affine, resolved) is None
