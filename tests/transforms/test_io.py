"""radseg.transforms.io: DICOM and file reading, geometry against independent conversions."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.data import NibabelReader
from monai.transforms import LoadImage
from pydicom.uid import generate_uid

from radseg.errors import DataError
from radseg.transforms.io import (
    SimpleITKReader,
    array_to_image,
    list_dicom_series,
    read_header,
    read_image,
)
from tests.conftest import real_data

DICOM_SERIES = [
    ("totalseg_ct", "example_ct_dicom"),
    ("dcmqi_ct3slice", "ct-3slice"),
    ("torchio_mr_dicom", "dicom"),
]


def _reference(folder: str, name: str):
    return real_data(folder, f"{name}.reference.nii.gz")


def _resample_onto(moving: sitk.Image, fixed: sitk.Image) -> np.ndarray:
    """moving's values at fixed's voxel centres (nearest, world coordinates), as (z, y, x)."""
    out = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, -99999.0,
                        sitk.sitkFloat64)
    return sitk.GetArrayFromImage(out)


@pytest.mark.parametrize("folder, name", DICOM_SERIES)
def test_dicom_series_matches_reference_in_world(folder, name):
    ours = read_image(real_data(folder, name))
    reference = sitk.ReadImage(str(_reference(folder, name)))
    np.testing.assert_allclose(ours.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    on_reference = _resample_onto(ours, reference)
    expected = sitk.GetArrayFromImage(sitk.Cast(reference, sitk.sitkFloat64))
    inside = on_reference != -99999.0
    assert inside.mean() > 0.99  # same field of view
    np.testing.assert_allclose(on_reference[inside], expected[inside], atol=1e-3)


@pytest.mark.parametrize("folder, name", DICOM_SERIES)
def test_reader_affine_maps_voxels_like_nibabel(folder, name):
    reader = SimpleITKReader()
    array, meta = reader.get_data(reader.read(real_data(folder, name)))
    reference = nib.load(str(_reference(folder, name)))
    ref_data = np.asarray(reference.dataobj)  # scaled values
    rng = np.random.default_rng(0)
    ijk = np.stack([rng.integers(0, s, 500) for s in array.shape], axis=1)
    world = (meta["affine"] @ np.c_[ijk, np.ones(len(ijk))].T)[:3]  # RAS
    ref_ijk = np.rint(np.linalg.inv(reference.affine) @ np.r_[world, np.ones((1, len(ijk)))])[:3]
    ref_ijk = ref_ijk.astype(int).T
    assert np.all((ref_ijk >= 0) & (ref_ijk < ref_data.shape))
    ours = array[tuple(ijk.T)]
    theirs = ref_data[tuple(ref_ijk.T)]  # the array proxy applies scl_slope/scl_inter
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_reader_matches_nibabel_reader_on_nifti(tmp_path):
    ct = real_data("totalseg_ct", "example_ct.nii.gz")
    generated = tmp_path / "lps.nii.gz"
    image = sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    sitk.WriteImage(image, str(generated))
    for path in (ct, generated):
        ours = LoadImage(reader=SimpleITKReader(), image_only=True)(path)
        theirs = LoadImage(reader=NibabelReader(), image_only=True)(path)
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-4)


def test_multichannel_paths_are_stacked_first(tmp_path):
    paths = []
    for channel in range(2):
        image = sitk.GetImageFromArray(np.full((4, 5, 6), channel, dtype=np.float32))
        paths.append(tmp_path / f"case_{channel:04d}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    reader = SimpleITKReader()
    array, meta = reader.get_data(reader.read(paths))
    assert array.shape == (2, 6, 5, 4)
    assert meta["original_channel_dim"] == 0
    np.testing.assert_array_equal(array[1], 1)


def test_multichannel_on_different_grids_is_refused(tmp_path):
    paths = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    sitk.WriteImage(sitk.Image(6, 5, 4, sitk.sitkFloat32), str(paths[0]))
    sitk.WriteImage(sitk.Image(6, 5, 3, sitk.sitkFloat32), str(paths[1]))
    reader = SimpleITKReader()
    with pytest.raises(DataError, match="b.nii.gz is not on the grid"):
        reader.get_data(reader.read(paths))


def test_array_to_image_inverts_the_reader():
    image = read_image(real_data("torchio_mr_dicom", "dicom"))
    reader = SimpleITKReader()
    array, meta = reader.get_data(image)
    back = array_to_image(array, meta["affine"])
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_header_matches_image_geometry():
    for folder, name in DICOM_SERIES:
        path = real_data(folder, name)
        header, image = read_header(path), read_image(path)
        assert header.shape == image.GetSize()
        np.testing.assert_allclose(header.spacing, image.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(header.origin, image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(np.ravel(header.direction), image.GetDirection(), atol=1e-6)
        assert header.num_series == 1 and header.slices_even and not header.gantry_tilt
        assert header.dtype == image.GetPixelIDTypeAsString()


def test_header_flags_missing_slice(tmp_path):
    source = real_data("torchio_mr_dicom", "dicom")
    for path in sorted(source.iterdir())[:8]:
        if path.name != "IMG0004.dcm":
            shutil.copy(path, tmp_path / path.name)
    assert not read_header(tmp_path).slices_even


def _two_series_folder(tmp_path):
    source = real_data("dcmqi_ct3slice", "ct-3slice")
    folder = tmp_path / "two"
    folder.mkdir()
    second_uid = generate_uid()
    for path in sorted(source.iterdir()):
        shutil.copy(path, folder / path.name)
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = second_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.save_as(folder / f"b_{path.name}")
    first_uid = str(pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    return folder, first_uid, second_uid


def test_two_series_are_listed_and_refused(tmp_path):
    folder, first_uid, second_uid = _two_series_folder(tmp_path)
    series = list_dicom_series(folder)
    assert set(series) == {first_uid, second_uid}
    assert all(len(files) == 3 for files in series.values())
    with pytest.raises(DataError) as info:
        read_image(folder)
    assert first_uid in str(info.value) and second_uid in str(info.value)
    assert "3 files" in str(info.value) and "series_uid" in str(info.value)
    assert read_image(folder, series_uid=second_uid).GetSize() == (512, 512, 3)
    assert read_header(folder, series_uid=first_uid).num_series == 2


def test_empty_and_non_dicom_folders_are_refused(tmp_path):
    with pytest.raises(DataError, match="holds no files"):
        read_image(tmp_path)
    (tmp_path / "notes.txt").write_text("not a scan")
    with pytest.raises(DataError, match="no DICOM files"):
        read_image(tmp_path)


def _truncated(path):
    rng = np.random.default_rng(0)
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(size=(40, 40, 40)).astype(np.float32)), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii"])
def test_truncated_nifti_is_refused(tmp_path, name):
    # SimpleITK itself reads these silently, zero-filling the missing half
    path = _truncated(tmp_path / name)
    with pytest.raises(DataError, match=f"{name} is truncated"):
        read_image(path)
    with pytest.raises(DataError, match=f"{name} is truncated"):
        read_header(path)


def test_truncated_nrrd_and_missing_files_are_refused(tmp_path):
    path = _truncated(tmp_path / "scan.nrrd")
    with pytest.raises(DataError, match=r"cannot read image .*scan.nrrd: \[nrrd\] .*fread got only") as info:
        read_image(path)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(DataError, match="missing.nii.gz does not exist"):
        read_image(tmp_path / "missing.nii.gz")
    with pytest.raises(DataError, match="missing.nii.gz does not exist"):
        read_header(tmp_path / "missing.nii.gz")


def test_complete_multi_member_gzip_is_accepted(tmp_path):
    plain = tmp_path / "scan.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(4000, dtype=np.float32).reshape(10, 20, 20)), str(plain))
    data = plain.read_bytes()
    packed = tmp_path / "multi.nii.gz"
    packed.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(packed)).ravel(), np.arange(4000))


def test_nrrd_label_shares_the_dicom_grid():
    reader = SimpleITKReader()
    _, image_meta = reader.get_data(reader.read(real_data("dcmqi_ct3slice", "ct-3slice")))
    label, label_meta = reader.get_data(reader.read(real_data("dcmqi_ct3slice", "liver_seg.nrrd")))
    np.testing.assert_array_equal(image_meta["spatial_shape"], label_meta["spatial_shape"])
    np.testing.assert_allclose(image_meta["affine"], label_meta["affine"], atol=1e-3)
    assert set(np.unique(label).tolist()) == {0, 1}
