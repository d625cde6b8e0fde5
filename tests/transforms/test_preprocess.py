"""radseg.transforms.preprocess: geometry, normalisation and the cache boundary."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Randomizable, SpatialPadd

from radseg import keys
from radseg.configs.schema import AugmentConfig, RadsegConfig
from radseg.errors import ConfigError
from radseg.transforms.fingerprint import ResolvedPreprocess
from radseg.transforms.io import array_to_image, read_image
from radseg.transforms.preprocess import (
    build_augment_transforms,
    build_inference_transforms,
    build_preprocess_transforms,
    build_train_transforms,
    build_val_transforms,
)
from tests.conftest import real_data


def _resolved(**overrides) -> ResolvedPreprocess:
    values = dict(modality="CT", target_spacing=(1.5, 1.5, 1.5), ct_window=(-100.0, 100.0),
                  ct_normalization="window", crop_foreground=False)
    values.update(overrides)
    return ResolvedPreprocess(**values)


@pytest.fixture()
def lps_case(tmp_path):
    """A CT in LPS index orientation (x to the left, y to the back), spacing (2, 1.5, 3)."""
    image = np.full((10, 24, 20), -1000, dtype=np.int16)  # (z, y, x): air
    image[2:8, 4:20, 3:17] = 40  # body block, 40 HU
    label = np.zeros_like(image, dtype=np.uint8)
    label[3:6, 6:12, 4:9] = 1
    label[4:7, 14:18, 11:15] = 2
    paths = {}
    for key, array in ((keys.IMAGE, image), (keys.LABEL, label)):
        item = sitk.GetImageFromArray(array)
        item.SetSpacing((2.0, 1.5, 3.0))
        item.SetOrigin((12.0, -7.0, 30.0))
        paths[key] = str(tmp_path / f"{key}.nii.gz")
        sitk.WriteImage(item, paths[key])
    return paths


def _centroid_ras(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return (affine @ np.r_[ijk, 1.0])[:3]


def test_lps_case_comes_out_ras_at_target_spacing(lps_case):
    out = build_preprocess_transforms(_resolved(), image_dtype="float16")(lps_case)
    image, label = out[keys.IMAGE], out[keys.LABEL]
    affine = image.affine.numpy()
    np.testing.assert_allclose(np.diag(affine)[:3], [1.5, 1.5, 1.5])  # RAS: positive diagonal
    np.testing.assert_allclose(affine[:3, :3] - np.diag(np.diag(affine)[:3]), 0, atol=1e-6)
    assert image.dtype == torch.float16 and label.dtype == torch.uint8
    assert image.shape == label.shape and image.shape[0] == 1
    assert set(torch.unique(label).tolist()) == {0, 1, 2}
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # each label keeps its place in the world (centroid within half an output voxel)
    source = sitk.ReadImage(lps_case[keys.LABEL])
    source_array = sitk.GetArrayFromImage(source).T
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    source_affine = flip @ np.r_[np.c_[np.diag(source.GetSpacing()), source.GetOrigin()], [[0, 0, 0, 1]]]
    for value in (1, 2):
        before = _centroid_ras(source_array == value, source_affine)
        after = _centroid_ras(label[0].numpy() == value, affine)
        np.testing.assert_allclose(after, before, atol=0.75)


def test_constant_block_normalises_to_known_values(lps_case):
    window = build_preprocess_transforms(_resolved())(lps_case)
    zscore = build_preprocess_transforms(_resolved(ct_normalization="zscore", mean=0.0, std=100.0))(lps_case)
    body = window[keys.LABEL][0] == 1  # inside the 40 HU block
    np.testing.assert_allclose(window[keys.IMAGE][0][body].numpy(), 0.7, atol=1e-6)
    np.testing.assert_allclose(zscore[keys.IMAGE][0][body].numpy(), 0.4, atol=1e-6)
    np.testing.assert_allclose(float(zscore[keys.IMAGE].min()), -1.0, atol=1e-6)  # -1000 clipped to -100


def test_body_crop_uses_hounsfield_threshold(lps_case):
    out = build_preprocess_transforms(_resolved(crop_foreground=True, crop_margin=0,
                                                target_spacing=(2.0, 1.5, 3.0)))(lps_case)
    assert tuple(out[keys.IMAGE].shape[1:]) == (14, 16, 6)  # the 40 HU block exactly
    assert set(torch.unique(out[keys.LABEL]).tolist()) == {0, 1, 2}


def test_mri_is_zscored_over_nonzero_region(lps_case, tmp_path):
    array = np.zeros((6, 6, 6), dtype=np.float32)
    array[1:5, 1:5, 1:5] = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    path = str(tmp_path / "mr.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(array), path)
    resolved = ResolvedPreprocess(modality="MRI", target_spacing=(1.0, 1.0, 1.0), crop_foreground=False)
    image = build_inference_transforms(resolved)({keys.IMAGE: path})[keys.IMAGE][0].numpy()
    nonzero = (array != 0).T[::-1, ::-1, :]  # (z, y, x) LPS -> (x, y, z) RAS
    inside = image[nonzero]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1.0) < 1e-5
    assert np.all(image[~nonzero] == 0)


def test_real_dicom_keeps_world_geometry():
    """Orientation (LPS DICOM -> RAS) and resampling land every voxel where SimpleITK says it is."""
    folder = real_data("totalseg_ct", "example_ct_dicom")
    resolved = _resolved(target_spacing=(2.0, 2.0, 2.0), ct_window=(-2000.0, 5000.0))
    image = build_inference_transforms(resolved)({keys.IMAGE: str(folder)})[keys.IMAGE]
    hounsfield = image[0].numpy().astype(np.float64) * 7000.0 - 2000.0
    ours = array_to_image(hounsfield, image.affine.numpy())
    source = sitk.Cast(read_image(folder), sitk.sitkFloat64)
    expected = sitk.GetArrayFromImage(sitk.Resample(source, ours, sitk.Transform(), sitk.sitkLinear, np.nan))
    got = sitk.GetArrayFromImage(ours)
    inside = ~np.isnan(expected)
    assert inside.mean() > 0.9
    assert np.median(np.abs(got[inside] - expected[inside])) < 1.0
    assert np.corrcoef(got[inside], expected[inside])[0, 1] > 0.999


def test_totalseg_ct_and_segmentation_share_one_grid():
    case = {keys.IMAGE: str(real_data("totalseg_ct", "example_ct.nii.gz")),
            keys.LABEL: str(real_data("totalseg_ct", "example_seg_fast_force_split.nii.gz"))}
    out = build_val_transforms(_resolved(target_spacing=(3.0, 3.0, 3.0), crop_foreground=True))(case)
    assert out[keys.IMAGE].shape == out[keys.LABEL].shape
    np.testing.assert_allclose(out[keys.IMAGE].affine, out[keys.LABEL].affine)
    assert out[keys.IMAGE].dtype == torch.float32
    assert 5 in torch.unique(out[keys.LABEL]).tolist()  # liver


def test_dcmqi_dicom_and_nrrd_mask_share_one_grid():
    case = {keys.IMAGE: str(real_data("dcmqi_ct3slice", "ct-3slice")),
            keys.LABEL: str(real_data("dcmqi_ct3slice", "liver_seg.nrrd"))}
    out = build_val_transforms(_resolved(target_spacing=(0.810547, 0.810547, 1.0)))(case)
    assert out[keys.IMAGE].shape == out[keys.LABEL].shape == (1, 512, 512, 3)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(case[keys.LABEL])).T  # (x, y, z), LPS
    np.testing.assert_array_equal(out[keys.LABEL][0].numpy(), mask[::-1, ::-1, :])  # LPS -> RAS flips x, y


def test_train_chain_caches_preprocessing_then_samples_patches(lps_case):
    cfg = RadsegConfig()
    cfg.train.roi_size = [16, 16, 8]
    cfg.augment.affine_prob = 0.5
    cfg.augment.elastic_prob = 0.5
    resolved = _resolved()
    chain = build_train_transforms(cfg, resolved, num_classes=3)
    first_random = next(i for i, t in enumerate(chain.transforms) if isinstance(t, Randomizable))
    preprocess_length = len(build_preprocess_transforms(resolved).transforms)
    assert first_random == preprocess_length, "the cache holds the preprocessing alone, not a padded copy"
    assert isinstance(chain.transforms[preprocess_length + 1], SpatialPadd)
    chain.set_random_state(seed=0)
    patches = chain(lps_case)
    assert len(patches) == cfg.augment.num_samples
    for patch in patches:
        assert tuple(patch[keys.IMAGE].shape) == (1, 16, 16, 8)
        assert patch[keys.IMAGE].dtype == torch.float32 and patch[keys.LABEL].dtype == torch.uint8
        assert set(torch.unique(patch[keys.LABEL]).tolist()) <= {0, 1, 2}


def test_label_class_sampler_and_config_errors(lps_case):
    augment = AugmentConfig(sampler="label_classes", class_ratios=[0.0, 1.0, 1.0], num_samples=4)
    chain = build_augment_transforms(augment, [8, 8, 4], num_classes=3)
    chain.set_random_state(seed=0)
    case = build_val_transforms(_resolved())(lps_case)
    for patch in chain(case):  # background has weight 0: every patch centres on a labelled voxel
        assert patch[keys.LABEL].shape == (1, 8, 8, 4) and int(patch[keys.LABEL].max()) > 0
    with pytest.raises(ConfigError, match="class_ratios has 3 weights but the dataset has 4"):
        build_augment_transforms(augment, [8, 8, 4], num_classes=4)
    with pytest.raises(ConfigError, match="square in-plane roi_size"):
        build_augment_transforms(AugmentConfig(rotate90_prob=0.5), [8, 16, 4], num_classes=3)


def _ball_case(tmp_path, values=(2, 5), balls=6):
    """A 1 mm CT with off-grid balls of 4-10 mm radius, labelled ``values`` in turn."""
    rng = np.random.default_rng(3)
    grid = np.indices((64, 64, 64)).astype(float)
    label = np.zeros((64, 64, 64), dtype=np.uint8)
    for index in range(balls):
        centre = rng.uniform(14, 50, 3)
        label[((grid - centre[:, None, None, None]) ** 2).sum(0) < rng.uniform(4, 10) ** 2] = values[index % 2]
    image = np.where(label > 0, 60, 20).astype(np.int16)
    paths = {}
    for key, array in ((keys.IMAGE, image), (keys.LABEL, label)):
        item = sitk.GetImageFromArray(array)
        paths[key] = str(tmp_path / f"{key}.nii.gz")
        sitk.WriteImage(item, paths[key])
    return paths


def test_labels_are_resampled_by_linear_interpolation_of_each_mask(tmp_path):
    from monai.transforms import Spacingd

    from radseg.pipeline.predict.to_grid import axis_map, logits_to_grid

    paths = _ball_case(tmp_path)
    resolved = _resolved(target_spacing=(1.7, 1.7, 2.3))
    out = build_preprocess_transforms(resolved)(dict(paths))
    image, resampled = out[keys.IMAGE], out[keys.LABEL]
    assert resampled.dtype == torch.uint8 and resampled.shape == image.shape
    assert np.allclose(resampled.affine, image.affine)
    assert set(torch.unique(resampled).tolist()) == {0, 2, 5}  # the label values as they are, not 0..n
    # back on the 1 mm grid (linear interpolation of each mask, as predict maps logits back), the
    # linearly resampled labels keep each ball closer to the truth than nearest-neighbour ones
    nearest = Spacingd([keys.IMAGE, keys.LABEL], pixdim=resolved.target_spacing, mode=["bilinear", "nearest"],
                       padding_mode="border")
    chain = build_preprocess_transforms(resolved).transforms
    before = next(i for i, t in enumerate(chain) if type(t).__name__ == "Spacingd")
    loaded = dict(paths)
    for transform in chain[:before]:
        loaded = transform(loaded)
    coarse_nearest = nearest(loaded)[keys.LABEL]
    truth = torch.as_tensor(loaded[keys.LABEL])[0].long()  # the 1 mm label on the RAS grid

    def dice_back(coarse) -> list[float]:
        # as radseg predict maps logits back: per-axis linear interpolation between the two grids
        onehot = torch.nn.functional.one_hot(torch.as_tensor(coarse)[0].long(), 6).permute(3, 0, 1, 2).float()
        back, _ = logits_to_grid(onehot, axis_map(coarse.affine, loaded[keys.LABEL].affine), tuple(truth.shape))
        back = torch.as_tensor(back.transpose(2, 1, 0).astype(np.int64))  # (z, y, x) -> (x, y, z)
        scores = []
        for value in (2, 5):
            both = ((back == value) & (truth == value)).sum().item()
            scores.append(2 * both / ((back == value).sum().item() + (truth == value).sum().item()))
        return scores

    linear, nearest_scores = dice_back(resampled), dice_back(coarse_nearest)
    assert sum(linear) > sum(nearest_scores) + 0.005, (linear, nearest_scores)


@pytest.mark.parametrize("modality", ["MRI", "CT"])
def test_a_bundle_without_intensity_transforms_keeps_the_raw_intensities(modality, lps_case):
    """A bundle mapped from Orientationd + Spacingd alone: no z-score for MRI, no window (and no crash) for CT."""
    from radseg.pipeline.predict.bundle_transforms import map_preprocessing

    items = [{"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
             {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
             {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 1.5, 3.0], "mode": "bilinear"}]
    resolved = map_preprocessing(items, modality, "bundle")
    assert resolved.intensity_steps == () and resolved.ct_window is None
    image = build_inference_transforms(resolved)({keys.IMAGE: lps_case[keys.IMAGE]})[keys.IMAGE]
    assert tuple(image.shape[1:]) == (20, 24, 10)  # the input grid: nothing resampled or cropped
    np.testing.assert_allclose(sorted(set(np.round(image.numpy().ravel(), 3))), [-1000.0, 40.0])
