"""Bad input to radseg predict: one clear line each, no traceback, nothing half-written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from conftest import real_data
from predict_helpers import DIRECTIONS, phantom_scan, write_checkpoint
from radseg.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run") / "best.pt")


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20))
    path = tmp_path_factory.mktemp("scan") / "scan.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def _predict(capsys, model: Path, source: Path, out: Path) -> tuple[int, str]:
    code = main(["predict", "--model", str(model), "--input", str(source), "--output", str(out),
                 "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.err


def _one_line(err: str) -> str:
    # what remains of stderr once tqdm's bar (redrawn with carriage returns) is taken out
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    lines = [line for line in lines if line.strip() and not re.search(r"\d+/\d+ \[", line)]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_checkpoint(capsys, scan, tmp_path):
    code, err = _predict(capsys, tmp_path / "nowhere.pt", scan, tmp_path / "out")
    assert code == 2 and "does not exist" in _one_line(err)


def test_corrupt_checkpoint(capsys, scan, tmp_path):
    broken = tmp_path / "best.pt"
    broken.write_bytes(os.urandom(256))
    code, err = _predict(capsys, broken, scan, tmp_path / "out")
    assert code == 2 and "cannot be read as a radseg checkpoint" in _one_line(err)


def test_checkpoint_of_another_format(capsys, scan, tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"state_dict": {}, "epoch": 3}, old)
    code, err = _predict(capsys, old, scan, tmp_path / "out")
    line = _one_line(err)
    assert code == 2 and "another radseg version" in line and "config" in line


def test_mri_scan_for_a_ct_model(capsys, checkpoint, tmp_path):
    image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20))
    mri = sitk.Cast(image, sitk.sitkFloat32) + 1000.0  # no air: MR-like intensities
    sitk.WriteImage(mri, str(tmp_path / "mri.nii.gz"))
    code, err = _predict(capsys, checkpoint, tmp_path / "mri.nii.gz", tmp_path / "out")
    line = _one_line(err)
    assert code == 1 and "the model expects CT" in line
    assert not list((tmp_path / "out").glob("mri*"))


@pytest.mark.parametrize("dimensions", [4, 2])
def test_4d_and_2d_images(capsys, checkpoint, tmp_path, dimensions):
    volume = sitk.GetImageFromArray(np.full((8, 10, 12), -1000, dtype=np.int16))
    image = sitk.JoinSeries([volume] * 3) if dimensions == 4 else volume[:, :, 0]
    sitk.WriteImage(image, str(tmp_path / "odd.nii.gz"))
    code, err = _predict(capsys, checkpoint, tmp_path / "odd.nii.gz", tmp_path / "out")
    line = _one_line(err)
    assert code == 1 and f"is {dimensions}D" in line and "expected one 3D volume" in line


def test_dicom_folder_without_pixel_data(capsys, checkpoint, tmp_path):
    folder = tmp_path / "nopixels"
    folder.mkdir()
    for file in sorted(real_data("dcmqi_ct3slice", "ct-3slice").iterdir()):
        dataset = pydicom.dcmread(file)
        del dataset.PixelData
        dataset.save_as(folder / file.name)
    code, err = _predict(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 2 and "no image series with pixel data" in _one_line(err)


def test_unevenly_spaced_dicom_series(capsys, checkpoint, tmp_path):
    folder = tmp_path / "gap"
    folder.mkdir()
    files = sorted(real_data("totalseg_ct", "example_ct_dicom").iterdir())
    for file in files[:8] + files[9:]:  # one slice missing in the middle
        os.symlink(file, folder / file.name)
    code, err = _predict(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 1 and "unevenly spaced slices" in _one_line(err)


def test_output_folder_that_cannot_be_written(capsys, checkpoint, scan, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _predict(capsys, checkpoint, scan, blocker / "out")
    assert code == 2 and "cannot be written" in _one_line(err)


def test_gantry_tilted_dicom_series(capsys, checkpoint, tmp_path):
    folder = tmp_path / "tilt"
    folder.mkdir()
    for file in sorted(real_data("dcmqi_ct3slice", "ct-3slice").iterdir()):
        dataset = pydicom.dcmread(file)
        x, y, z = (float(v) for v in dataset.ImagePositionPatient)
        dataset.ImagePositionPatient = [x, y + 0.3 * z, z]  # slices slide along y as z grows: a tilt
        dataset.save_as(folder / file.name)
    code, err = _predict(capsys, checkpoint, folder, tmp_path / "out")
    assert code == 1 and "tilted gantry" in _one_line(err)
