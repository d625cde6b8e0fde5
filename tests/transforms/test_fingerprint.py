"""radseg.transforms.fingerprint: known-answer spacing and intensity statistics."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from radseg import keys
from radseg.configs.schema import PreprocessConfig
from radseg.errors import ConfigError, DataError
from radseg.transforms.fingerprint import (
    Fingerprint,
    anisotropic_target_spacing,
    compute_fingerprint,
    load_fingerprint,
    resolve_preprocess,
    save_fingerprint,
)


def _write(path, array_zyx, spacing, direction=None):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return str(path)


def _case(tmp_path, index, spacing, values=None, direction=None):
    """A 4x5x6 (x, y, z) case; when values are given, they fill the labelled voxels."""
    image = np.full((6, 5, 4), -1000, dtype=np.int16)
    label = np.zeros((6, 5, 4), dtype=np.uint8)
    if values is not None:
        flat_image, flat_label = image.reshape(-1), label.reshape(-1)
        flat_image[: len(values)] = values
        flat_label[: len(values)] = 1
    return {
        keys.IMAGE: _write(tmp_path / f"img{index}.nii.gz", image, spacing, direction),
        keys.LABEL: _write(tmp_path / f"lab{index}.nii.gz", label, spacing, direction),
        keys.CASE_ID: f"case{index}",
    }


def test_median_spacing_and_percentiles_known_answer(tmp_path):
    datalist = [
        _case(tmp_path, 0, (1.0, 1.0, 2.0), values=np.arange(0, 60)),
        _case(tmp_path, 1, (1.0, 1.0, 3.0), values=np.arange(60, 100)),
        _case(tmp_path, 2, (1.0, 1.0, 4.0)),
    ]
    fingerprint = compute_fingerprint(datalist, "CT", progress=False)
    assert fingerprint.median_spacing == [1.0, 1.0, 3.0]
    assert fingerprint.target_spacing == [1.0, 1.0, 3.0]
    assert fingerprint.shapes[0] == [4, 5, 6]
    assert fingerprint.case_ids == ["case0", "case1", "case2"]
    assert fingerprint.num_foreground_samples == 100
    assert fingerprint.percentile_00_5 == pytest.approx(0.495)
    assert fingerprint.percentile_99_5 == pytest.approx(98.505)
    assert fingerprint.mean == pytest.approx(49.5)
    assert fingerprint.std == pytest.approx(np.arange(100).std())


def test_sampling_is_capped_and_seeded(tmp_path):
    datalist = [_case(tmp_path, 0, (1.0, 1.0, 1.0), values=np.arange(100))]
    first = compute_fingerprint(datalist, "CT", samples_per_case=30, seed=3, progress=False)
    again = compute_fingerprint(datalist, "CT", samples_per_case=30, seed=3, progress=False)
    assert first.num_foreground_samples == 30
    assert first == again


def test_spacing_is_in_ras_axis_order(tmp_path):
    # index axes point along world (y, z, x): RAS-ordered spacing is (index2, index0, index1)
    direction = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    fingerprint = compute_fingerprint([_case(tmp_path, 0, (1.0, 2.0, 3.0), direction=direction)],
                                      "MRI", progress=False)
    assert fingerprint.spacings == [[3.0, 1.0, 2.0]]
    assert fingerprint.shapes == [[6, 4, 5]]
    assert fingerprint.mean is None


def test_anisotropy_rule_uses_tenth_percentile_on_coarse_axis():
    spacings = np.array([[0.7, 0.7, z] for z in (4.0, 5.0, 6.0, 7.0, 8.0)])
    shapes = np.array([[200, 200, 30]] * 5)
    target = anisotropic_target_spacing(spacings, shapes)
    np.testing.assert_allclose(target, [0.7, 0.7, 4.4])
    isotropic_shapes = np.array([[200, 200, 150]] * 5)  # not anisotropic in voxels: plain median
    np.testing.assert_allclose(anisotropic_target_spacing(spacings, isotropic_shapes), [0.7, 0.7, 6.0])


def test_save_load_round_trip_is_atomic(tmp_path):
    fingerprint = compute_fingerprint([_case(tmp_path, 0, (1.0, 1.0, 2.0), values=np.arange(10))],
                                      "CT", progress=False)
    path = save_fingerprint(fingerprint, tmp_path / "out" / "fingerprint.json")
    assert load_fingerprint(path) == fingerprint
    assert [p.name for p in path.parent.iterdir()] == ["fingerprint.json"]
    path.write_text('{"bogus": 1}')
    with pytest.raises(DataError, match="unknown keys \\['bogus'\\]"):
        load_fingerprint(path)


def _fingerprint(**overrides) -> Fingerprint:
    values = dict(modality="CT", case_ids=["a"], spacings=[[1.0, 1.0, 2.5]], shapes=[[9, 9, 9]],
                  median_spacing=[1.0, 1.0, 2.5], median_shape=[9, 9, 9], target_spacing=[1.0, 1.0, 2.5],
                  percentile_00_5=-100.0, percentile_99_5=300.0, mean=50.0, std=25.0)
    values.update(overrides)
    return Fingerprint(**values)


def test_resolve_auto_from_fingerprint():
    resolved = resolve_preprocess(PreprocessConfig(), _fingerprint(), "CT")
    assert resolved.target_spacing == (1.0, 1.0, 2.5)
    assert resolved.ct_window == (-100.0, 300.0)
    assert (resolved.mean, resolved.std) == (50.0, 25.0)
    mri = resolve_preprocess(PreprocessConfig(), _fingerprint(percentile_00_5=None), "MR")
    assert mri.modality == "MRI" and mri.ct_window is None


def test_resolve_refuses_auto_without_fingerprint():
    with pytest.raises(ConfigError, match="preprocess.target_spacing needs .* no dataset fingerprint"):
        resolve_preprocess(PreprocessConfig(), None, "CT")
    explicit = PreprocessConfig(target_spacing=[1, 1, 1], ct_window=[-50, 50])
    with pytest.raises(ConfigError, match="ct_normalization=zscore needs the fingerprint's mean"):
        resolve_preprocess(explicit, None, "CT")
    explicit.ct_normalization = "window"
    assert resolve_preprocess(explicit, None, "CT").ct_window == (-50.0, 50.0)
    with pytest.raises(ConfigError, match="modality must be 'CT' or 'MRI', not 'unknown'"):
        resolve_preprocess(explicit, None, "unknown")
    with pytest.raises(ConfigError, match="low < high"):
        resolve_preprocess(PreprocessConfig(target_spacing=[1, 1, 1], ct_window=[50, -50]), None, "CT")
