"""ISA-L .nii.gz writer: files SimpleITK, nibabel and plain gzip read with the same geometry."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from radseg.errors import DataError
from radseg.transforms.nifti_gzip import write_nifti_gz


def _oblique_image(dtype: np.dtype, seed: int = 0) -> sitk.Image:
    """A (x, y, z) = (7, 6, 5) image, rotated about two axes and mirrored, with odd spacing."""
    rng = np.random.default_rng(seed)
    array = (rng.random((5, 6, 7)) * 200 - 100).astype(dtype)
    image = sitk.GetImageFromArray(array)
    rotation = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.1).GetMatrix()
    direction = np.asarray(rotation).reshape(3, 3) @ np.diag([1, -1, 1])  # a flipped axis too
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((0.7, 1.3, 2.5))
    image.SetOrigin((-12.5, 30.25, -7.0))
    return image


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("threads", [0, 2])
def test_simpleitk_reads_what_it_would_have_written(tmp_path, dtype, threads):
    image = _oblique_image(np.dtype(dtype))
    ours = write_nifti_gz(image, tmp_path / "ours.nii.gz", threads=threads)
    sitk.WriteImage(image, str(tmp_path / "sitk.nii.gz"), True)
    back, reference = sitk.ReadImage(str(ours)), sitk.ReadImage(str(tmp_path / "sitk.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert back.GetPixelID() == image.GetPixelID()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(back, get)(), getattr(reference, get)(), atol=1e-6)
        np.testing.assert_allclose(getattr(back, get)(), getattr(image, get)(), atol=1e-5)


def test_nibabel_reads_the_same_header_geometry_as_from_simpleitk(tmp_path):
    image = _oblique_image(np.dtype(np.int16))
    write_nifti_gz(image, tmp_path / "ours.nii.gz")
    sitk.WriteImage(image, str(tmp_path / "sitk.nii.gz"), True)
    ours, reference = nib.load(tmp_path / "ours.nii.gz"), nib.load(tmp_path / "sitk.nii.gz")
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-5)
    for field in ("qform_code", "sform_code", "dim", "datatype", "bitpix"):
        np.testing.assert_array_equal(ours.header[field], reference.header[field])
    np.testing.assert_allclose(ours.header["pixdim"][1:4], reference.header["pixdim"][1:4])
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(reference.dataobj))
    assert np.asanyarray(ours.dataobj).dtype == np.int16


def test_output_is_one_plain_gzip_stream_of_header_and_voxels(tmp_path):
    image = _oblique_image(np.dtype(np.uint8))
    raw = gzip.decompress(write_nifti_gz(image, tmp_path / "a.nii.gz", threads=2).read_bytes())
    assert len(raw) == 352 + image.GetNumberOfPixels()
    assert raw[344:348] == b"n+1\x00"
    assert raw[352:] == sitk.GetArrayViewFromImage(image).tobytes()


def test_refusals_leave_an_existing_file_alone(tmp_path):
    path = tmp_path / "mask.nii.gz"
    path.write_bytes(b"earlier")
    with pytest.raises(DataError, match="compression level must be 0, 1, 2 or 3, not 6"):
        write_nifti_gz(_oblique_image(np.dtype(np.uint8)), path, compresslevel=6)
    with pytest.raises(DataError, match="writes 3D scalar images, not a 2D image"):
        write_nifti_gz(sitk.Image([4, 4], sitk.sitkUInt8), path)
    with pytest.raises(DataError, match=r"writes \.nii\.gz files, not mask\.nrrd"):
        write_nifti_gz(_oblique_image(np.dtype(np.uint8)), tmp_path / "mask.nrrd")
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
