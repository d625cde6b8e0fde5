"""Bad input to radseg predict: one clear line each, no traceback, nothing half-written; run folders as --model."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from conftest import real_data
from predict_helpers import DIRECTIONS, phantom_scan, write_checkpoint
from radseg.cli import main
from radseg.errors import ConfigError
from radseg.pipeline.core.checkpoint import resolve_checkpoint
from radseg.pipeline.predict.model import load_predict_model
from radseg.pipeline.predict.predict import PredictOptions, predict_many


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


def test_run_folder_is_taken_for_its_best_pt(capsys, checkpoint, scan, tmp_path):
    out = tmp_path / "out"
    code = main(["predict", "--model", str(checkpoint.parent), "--input", str(scan), "--output", str(out),
                 "--device", "cpu", "--no-postprocess"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "scan.json").read_text())["model"] == str(checkpoint)


def test_run_folder_without_best_pt_falls_back_to_last_pt_and_says_so(checkpoint, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "last.pt")
    with caplog.at_level(logging.WARNING, logger="radseg.pipeline.core.checkpoint"):
        model = load_predict_model(run, "cpu")
    assert model.source == str(run / "last.pt")
    assert f"run folder {run} has no best.pt; using last.pt" in caplog.text
    (run / "best.pt").write_bytes(b"")  # best.pt, when there, wins
    assert resolve_checkpoint(run) == run / "best.pt"


def test_run_folder_without_a_checkpoint_names_the_folder_and_what_it_looked_for(capsys, scan, tmp_path):
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0" / "best.pt").write_bytes(b"")
    (run / "epoch3.pt").write_bytes(b"")
    code, err = _predict(capsys, run, scan, tmp_path / "out")
    line = _one_line(err)
    assert code == 2
    assert f"run folder {run} holds no best.pt or last.pt (found: epoch3.pt, fold0/best.pt)" in line


OPTION_ERRORS = {
    "overlap": ({"overlap": 1.5}, "--overlap 1.5 is out of range", "at least 0 and below 1"),
    "sw_batch_size": ({"sw_batch_size": 0}, "--sw-batch-size 0 is out of range", "at least 1"),
    "slab": ({"slab": 0}, "slab 0 is out of range", "at least 1"),
}


@pytest.mark.parametrize("field", sorted(OPTION_ERRORS))
def test_bad_option_is_refused_before_the_model_or_any_scan(tmp_path, field):
    changes, said, allowed = OPTION_ERRORS[field]
    # neither the checkpoint nor the input exists: only a check made before both can name the option
    with pytest.raises(ConfigError) as caught:
        predict_many(tmp_path / "nowhere.pt", [tmp_path / "no_scan.nii.gz"], tmp_path / "out",
                     PredictOptions(progress=False, **changes), device="cpu")
    assert said in str(caught.value) and allowed in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_cuda_without_a_gpu_is_refused_in_one_line_before_the_model_or_any_scan(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["predict", "--model", str(tmp_path / "nowhere.pt"), "--input", str(tmp_path / "no_scan.nii.gz"),
                 "--output", str(tmp_path / "out"), "--device", "cuda"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "--device cuda asks for a GPU" in line and "torch.cuda.is_available() is False" in line
    assert not (tmp_path / "out").exists()


def test_labels_json_of_another_model_is_refused_before_any_case(capsys, checkpoint, scan, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels.json").write_text(json.dumps({"0": "background", "1": "liver"}))
    code, err = _predict(capsys, checkpoint, scan, out)
    line = _one_line(err)
    assert code == 2 and f"{out / 'labels.json'} holds another label map (0=background, 1=liver)" in line
    assert "--overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["labels.json"]  # nothing predicted, the file kept
    assert json.loads((out / "labels.json").read_text()) == {"0": "background", "1": "liver"}
