"""Labels on the image's voxels in another array order (flipped, permuted axes) pass the grid check,
train on the right voxels, and real mismatches (shift, spacing, field of view) are still refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from radseg import keys
from radseg.pipeline.data.check_data import check_dataset
from radseg.transforms.fingerprint import ResolvedPreprocess, compute_fingerprint
from radseg.transforms.grid import grid_differences, label_on_image_grid
from radseg.transforms.io import read_header, read_image
from radseg.transforms.preprocess import build_preprocess_transforms
from conftest import real_data


def _flip(array, affine, axis):
    flip = np.eye(4)
    flip[axis, axis], flip[axis, 3] = -1, array.shape[axis] - 1
    return np.flip(array, axis).copy(), affine @ flip


def _permute(array, affine, order):
    swap = np.eye(4)[:, list(order) + [3]]
    return np.transpose(array, order).copy(), affine @ swap


def _shift(array, affine, mm):
    moved = affine.copy()
    moved[:3, 3] += mm
    return array, moved


def _other_spacing(array, affine):
    return array, affine @ np.diag([1.0, 1.0, 1.25, 1.0])


def _other_field_of_view(array, affine):
    return array[:, :, 1:].copy(), affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1.0]])


SAME_VOXELS = {
    "flip_x": lambda a, f: _flip(a, f, 0),
    "flip_y": lambda a, f: _flip(a, f, 1),
    "flip_xz": lambda a, f: _flip(*_flip(a, f, 0), 2),
    "permute_yxz": lambda a, f: _permute(a, f, (1, 0, 2)),
    "permute_zxy_flip_y": lambda a, f: _flip(*_permute(a, f, (2, 0, 1)), 1),
}
MISMATCHES = {
    "shift_half_voxel": (lambda a, f: _shift(a, f, [0.0, 0.0, f[2, 2] / 2]), "voxel centres up to"),
    "flip_and_shift": (lambda a, f: _shift(*_flip(a, f, 1), [0.0, 1.0, 0.0]), "voxel centres up to"),
    "other_spacing": (_other_spacing, "spacing"),
    "other_field_of_view": (_other_field_of_view, "shape"),
}


@pytest.fixture()
def data_copy(phantom_dataset, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_dataset, tmp_path / "data"))


def _relabel(root: Path, case: str, change) -> Path:
    path = root / "labelsTr" / f"{case}.nii.gz"
    label = nib.load(path)
    array, affine = change(np.asarray(label.dataobj), label.affine)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.mark.parametrize("change", sorted(SAME_VOXELS))
def test_flipped_or_permuted_labels_pass_and_preprocess_onto_the_same_voxels(data_copy, phantom_dataset, change):
    case = "phantom_001"
    _relabel(data_copy, case, SAME_VOXELS[change])
    report = check_dataset(data_copy)
    assert report.ok and report.lines() == [], report.lines()
    resolved = ResolvedPreprocess(modality="CT", target_spacing=(3.0, 3.0, 6.0), ct_window=(-100.0, 200.0),
                                  ct_normalization="window")
    chain = build_preprocess_transforms(resolved, image_dtype="float32")
    original = {keys.IMAGE: str(phantom_dataset / "imagesTr" / f"{case}.nii.gz"),
                keys.LABEL: str(phantom_dataset / "labelsTr" / f"{case}.nii.gz")}
    moved = {keys.IMAGE: original[keys.IMAGE], keys.LABEL: str(data_copy / "labelsTr" / f"{case}.nii.gz")}
    expected, got = chain(original), chain(moved)
    assert expected[keys.LABEL].shape == got[keys.LABEL].shape
    assert torch.equal(expected[keys.LABEL].as_tensor(), got[keys.LABEL].as_tensor())
    assert int(got[keys.LABEL].max()) > 0
    datalist = [{**moved, keys.CASE_ID: case}]
    assert compute_fingerprint(datalist, "CT", progress=False) == compute_fingerprint(
        [{**original, keys.CASE_ID: case}], "CT", progress=False)


@pytest.mark.parametrize("change", sorted(MISMATCHES))
def test_a_real_mismatch_is_still_refused(data_copy, change):
    plant, words = MISMATCHES[change]
    _relabel(data_copy, "phantom_002", plant)
    (line,) = check_dataset(data_copy).lines()
    assert line.startswith("ERROR case phantom_002 (labelsTr/phantom_002.nii.gz): not on the image's grid: ")
    assert words in line and "; fix: resample it onto the image's grid" in line


def test_grid_differences_tolerates_rounding_but_not_a_tenth_of_a_voxel(tmp_path, phantom_dataset):
    image = phantom_dataset / "imagesTr" / "phantom_000.nii.gz"
    header = read_header(image)
    label = nib.load(image)
    array, affine = _flip(np.asarray(label.dataobj), label.affine, 0)
    for offset, same in ((1e-5, True), (header.spacing[0] / 10, False)):
        nib.save(nib.Nifti1Image(array, _shift(array, affine, [offset, 0.0, 0.0])[1]), tmp_path / "l.nii.gz")
        differences = grid_differences(read_header(tmp_path / "l.nii.gz"), header, header.spacing[0] / 20)
        assert (differences == []) is same, differences


def test_real_j2k_ct_and_its_las_segmentation(tmp_path):
    series = real_data("totalseg_ct", "example_ct_dicom")
    segmentation = real_data("totalseg_ct", "example_seg_dicom.nii.gz")
    image_header, label_header = read_header(series), read_header(segmentation)
    assert not np.allclose(image_header.origin, label_header.origin), "stored LAS: y flipped against the DICOM"
    assert grid_differences(label_header, image_header, 1e-3) == []
    root = tmp_path / "real"
    shutil.copytree(series, root / "images" / "ct")
    (root / "labels").mkdir()
    shutil.copy(segmentation, root / "labels" / "ct.nii.gz")
    (root / "labels.json").write_text(json.dumps({str(i): f"class_{i}" for i in range(118)}))
    report = check_dataset(root)
    assert report.ok and report.lines() == [], report.lines()
    # training sees the liver (5) where the scan has it: the LAS mask and the same mask stored in
    # the DICOM's own array order preprocess to the same voxels
    image, label = read_image(series), read_image(segmentation)
    in_dicom_order = label_on_image_grid(label, image)
    assert in_dicom_order.GetOrigin() == image.GetOrigin()
    liver = sitk.GetArrayViewFromImage(in_dicom_order) == 5
    hu = sitk.GetArrayViewFromImage(image)[liver]
    assert liver.sum() > 1000 and 0 < np.median(hu) < 200, "liver voxels hold soft-tissue HU"
    sitk.WriteImage(in_dicom_order, str(tmp_path / "lps.nii.gz"))
    resolved = ResolvedPreprocess(modality="CT", target_spacing=(4.0, 4.0, 4.0), ct_window=(-100.0, 200.0),
                                  ct_normalization="window")
    chain = build_preprocess_transforms(resolved, image_dtype="float32")
    las = chain({keys.IMAGE: str(series), keys.LABEL: str(segmentation)})[keys.LABEL]
    lps = chain({keys.IMAGE: str(series), keys.LABEL: str(tmp_path / "lps.nii.gz")})[keys.LABEL]
    assert torch.equal(las.as_tensor(), lps.as_tensor()) and int((las == 5).sum()) > 0
