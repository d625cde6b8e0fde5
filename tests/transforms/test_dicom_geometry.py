"""DICOM series whose slices are not a regular grid (tilted gantry, uneven gaps): refused with the
reason and the fix by check-data and by the reader; a regular series has one geometry everywhere."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from radseg.errors import DataError
from radseg.pipeline.data.check_data import check_dataset
from radseg.transforms.io import read_header, read_image

TILT = math.radians(18.5)


def write_series(folder: Path, positions, size: int = 8) -> Path:
    """A tiny axial CT series, one slice per ImagePositionPatient, written with pydicom."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for index, position in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "tilted", index + 1
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 4.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((size, size), 1000 + index, np.int16).tobytes()
        ds.save_as(folder / f"slice{index:03d}.dcm", enforce_file_format=True)
    return folder


SERIES = {
    # a GE-style gantry tilt: each 4 mm step along the table also moves 4 tan(18.5 deg) mm in y
    "tilted": [(0.0, 4.0 * i * math.tan(TILT), 4.0 * i) for i in range(6)],
    "missing_slice": [(0.0, 0.0, z) for z in (0.0, 4.0, 8.0, 16.0, 20.0, 24.0)],
    "two_spacings": [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 6.0, 10.0, 14.0, 18.0)],
}


@pytest.mark.parametrize("name", sorted(SERIES))
def test_check_data_refuses_an_irregular_series_with_reason_and_fix(tmp_path, name):
    write_series(tmp_path / "data" / "images" / "scan", SERIES[name])
    report = check_dataset(tmp_path / "data")
    assert not report.ok
    (line,) = report.lines()
    assert line.startswith("ERROR case scan (images/scan): DICOM slices are not a regular grid: ")
    assert ("gantry tilt" if name == "tilted" else "uneven slice positions") in line
    assert "; fix: convert the series with dcm2niix" in line


@pytest.mark.parametrize("name", sorted(SERIES))
def test_the_reader_never_hands_out_shifted_slices(tmp_path, name):
    folder = write_series(tmp_path / name, SERIES[name])
    with pytest.raises(DataError, match=r"is not a regular grid: .*; fix: convert the series with dcm2niix"):
        read_image(folder)


def test_a_regular_series_has_one_geometry_in_header_and_image(tmp_path):
    # gaps of 4.00 and 4.02 mm (DICOM rounding): regular, and the header must say what the voxels use
    folder = write_series(tmp_path / "ok", [(0.0, 0.0, z) for z in (0.0, 4.0, 8.0, 12.02, 16.02, 20.02)])
    header, image = read_header(folder), read_image(folder)
    np.testing.assert_allclose(header.spacing, image.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(header.origin, image.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.ravel(header.direction), image.GetDirection(), rtol=0, atol=1e-9)
    assert header.shape == image.GetSize() == (8, 8, 6)
    assert check_dataset_ok(tmp_path, folder)


def check_dataset_ok(tmp_path: Path, folder: Path) -> bool:
    root = tmp_path / "data_ok" / "images"
    root.mkdir(parents=True)
    (root / "scan").symlink_to(folder, target_is_directory=True)
    report = check_dataset(tmp_path / "data_ok")
    return report.ok and report.lines() == []

