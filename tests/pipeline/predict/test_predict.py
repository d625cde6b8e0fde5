"""radseg predict: round trips onto the input's grid, real DICOM geometry, batches that survive."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import real_data
from predict_helpers import DIRECTIONS, oracle_model, phantom_scan, write_checkpoint
from radseg.cli import main
from radseg.errors import DataError
from radseg.pipeline.evaluate.inputs import parse_labels
from radseg.pipeline.predict.inputs import find_cases
from radseg.pipeline.predict.predict import PredictOptions, predict_case, predict_many

QUIET = PredictOptions(progress=False)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("geometry", sorted(DIRECTIONS))
def test_oracle_round_trip_lands_on_the_input_grid(geometry, tmp_path):
    image, label = phantom_scan(DIRECTIONS[geometry])
    source = _write(image, tmp_path / f"{geometry}.nii.gz")
    (case,) = find_cases([source])
    result = predict_case(oracle_model(), case, tmp_path / "out" if (tmp_path / "out").mkdir() is None else None,
                          QUIET)
    written, given = nib.load(result.mask), nib.load(source)
    assert written.shape == given.shape
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-4)
    assert written.get_data_dtype() == np.uint8
    predicted, truth = np.asarray(written.dataobj), np.asarray(nib.load(_write(label, tmp_path / "l.nii.gz")).dataobj)
    for value in (1, 2):
        assert _dice(predicted == value, truth == value) >= 0.98, (geometry, value)
    assert set(result.seconds) == {"read", "preprocess", "network", "to_grid", "postprocess", "write"}


def test_probabilities_and_volumes_follow_the_labels(tmp_path):
    image, label = phantom_scan(DIRECTIONS["LPS"])
    source = _write(image, tmp_path / "scan.nrrd")
    out = tmp_path / "out"
    summary = predict_many(oracle_model(), [source], out, PredictOptions(progress=False, probabilities=True))
    assert str(summary).startswith("1 done, 0 skipped")
    saved = np.load(out / "scan_probabilities.npz")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "scan.nii.gz")))
    assert saved["probabilities"].dtype == np.float16
    np.testing.assert_array_equal(saved["probabilities"].argmax(0), labels.transpose(2, 1, 0))  # (X, Y, Z)
    rows = (out / "volumes.csv").read_text().splitlines()
    assert rows[0] == "case,organ_ml,lesion_ml"
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    assert rows[1] == f"scan,{(labels == 1).sum() * voxel_ml:.3f},{(labels == 2).sum() * voxel_ml:.3f}"


DICOM_SERIES = ["totalseg_ct/example_ct_dicom", "dcmqi_ct3slice/ct-3slice", "torchio_mr_dicom/dicom"]


@pytest.mark.parametrize("series", DICOM_SERIES)
def test_dicom_series_mask_has_the_reference_affine_and_shape(series, tmp_path):
    folder = real_data(*series.split("/"))
    reference = nib.as_closest_canonical(nib.load(str(folder) + ".reference.nii.gz"))
    summary = predict_many(oracle_model(), [folder], tmp_path, PredictOptions(progress=False, check_modality=False))
    (result,) = summary.results
    assert result.status == "done", result.message
    written = nib.as_closest_canonical(nib.load(result.mask))
    assert written.shape == reference.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-3)
    # content, not only geometry: the oracle labels voxels above ~150 (HU or MR units) as foreground,
    # so the mask must overlap the reference's bright voxels in place, and worse when flipped
    bright, predicted = np.asarray(reference.dataobj) > 150, np.asarray(written.dataobj) > 0
    in_place = _dice(bright, predicted)
    assert in_place >= 0.85
    assert in_place > max(_dice(bright[::-1], predicted), _dice(bright[:, ::-1], predicted))


def test_study_folder_gives_one_case_per_series_named_by_description_and_uid(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    for series in ("totalseg_ct/example_ct_dicom", "dcmqi_ct3slice/ct-3slice"):
        for index, file in enumerate(sorted(real_data(*series.split("/")).iterdir())):
            os.symlink(file, study / f"{series.split('/')[0]}_{index:03d}")
    names = [case.name for case in find_cases([tmp_path])]
    # the TotalSegmentator slices carry an empty SeriesInstanceUID; dcmqi's carry no description
    assert names[0] == "CT_Body_3.0"
    assert names[1].startswith("series_1.2.392.200103.20080913.113635.1.2009"), names


def test_unreadable_file_in_a_batch_does_not_stop_the_others(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20))
    _write(image, inputs / "a_good.nii.gz")
    (inputs / "b_broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    _write(image, inputs / "c_good.mha")
    summary = predict_many(oracle_model(), [inputs], tmp_path / "out", QUIET)
    assert [r.status for r in summary.results] == ["done", "failed", "done"]
    assert "b_broken" in summary.results[1].name and "\n" not in summary.results[1].message
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["a_good.nii.gz", "c_good.nii.gz"]


def _cli(*args: str) -> int:
    return main(["predict", *args])


def test_predict_logs_its_device_once(tmp_path, caplog):
    checkpoint = write_checkpoint(tmp_path / "best.pt")
    image, _ = phantom_scan(DIRECTIONS["LPS"], shape=(40, 36, 20))
    source = _write(image, tmp_path / "scan.nii.gz")
    caplog.set_level("INFO")
    predict_many(checkpoint, [source], tmp_path / "out", QUIET, device="cpu")
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("device: ")] == [
        f"device: cpu ({__import__('torch').get_num_threads()} threads)"]


def test_cli_predicts_skips_what_exists_and_overwrites_on_request(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "best.pt")
    image, _ = phantom_scan(DIRECTIONS["oblique"], shape=(40, 36, 20))
    source = _write(image, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    args = ["--model", str(checkpoint), "--input", str(source), "--output", str(out), "--device", "cpu",
            "--overlap", "0", "--sw-batch-size", "1", "--largest-component", "--fill-holes",
            "--min-component-ml", "0.5"]
    assert _cli(*args) == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    record = json.loads((out / "scan.json").read_text())
    assert record["shape"] == list(image.GetSize()) and set(record["volumes_ml"]) == {"organ", "lesion"}
    assert _cli(*args) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out
    assert _cli(*args, "--overwrite") == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out


def test_label_map_is_written_beside_the_masks_as_a_dataset_labels_json(tmp_path):
    image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20))
    source = _write(image, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    predict_many(oracle_model(), [source], out, QUIET)
    assert json.loads((out / "labels.json").read_text()) == {"0": "background", "1": "organ", "2": "lesion"}
    # as `radseg evaluate --labels` and a plain-folder dataset read a labels.json
    assert parse_labels(str(out / "labels.json")) == {0: "background", 1: "organ", 2: "lesion"}
    assert [row.split(",")[0] for row in (out / "volumes.csv").read_text().splitlines()] == ["case", "scan"]


def test_labels_json_of_another_model_is_kept_unless_overwrite(tmp_path):
    image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20))
    source = _write(image, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels.json").write_text('{"0": "background", "1": "liver", "2": "tumour"}')
    with pytest.raises(DataError, match="holds another label map"):
        predict_many(oracle_model(), [source], out, QUIET)
    assert sorted(p.name for p in out.iterdir()) == ["labels.json"]
    predict_many(oracle_model(), [source], out, PredictOptions(progress=False, overwrite=True))
    assert json.loads((out / "labels.json").read_text()) == {"0": "background", "1": "organ", "2": "lesion"}
    assert (out / "scan.nii.gz").is_file()


_KILLABLE = """
import sys, time
sys.path.insert(0, {helpers!r})
from predict_helpers import oracle_model
from radseg.pipeline.predict import predict as p
original = p.predict_case
def slow(*args, **kwargs):
    result = original(*args, **kwargs)
    time.sleep(30)  # the kill lands here, after the first case, or inside the next one
    return result
p.predict_case = slow
p.predict_many(oracle_model(), [{inputs!r}], {out!r}, p.PredictOptions(progress=False))
"""


@pytest.mark.slow
def test_killed_batch_resumes_with_the_rest(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for index in range(3):
        image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20), origin=(index, 0, 0))
        _write(image, inputs / f"case{index}.nii.gz")
    script = _KILLABLE.format(helpers=str(Path(__file__).parent), inputs=str(inputs), out=str(out))
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / "case0.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "case0.json").exists() and not (out / "case1.json").exists()
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["case0.json", "case0.nii.gz", "labels.json"]  # nothing half-written under a real name
    summary = predict_many(oracle_model(), [inputs], out, QUIET)
    assert [r.status for r in summary.results] == ["skipped", "done", "done"]
    assert "case2" in (out / "volumes.csv").read_text()
    assert not list(out.glob(".radseg-partial-*"))  # the killed case's staging folder is gone too


@pytest.mark.slow
def test_torchrun_splits_the_cases_each_exactly_once(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "best.pt")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(3):
        image, _ = phantom_scan(DIRECTIONS["LPS"], shape=(36, 32, 18), origin=(0, index, 0))
        _write(image, inputs / f"case{index}.nii.gz")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "radseg", "predict", "--model",
                             str(checkpoint), "--input", str(inputs), "--output", str(tmp_path / "out"),
                             "--device", "cpu"]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # both processes print to one pipe, so their lines may interleave: find each summary anywhere
    counts = [int(n) for n in re.findall(r"predict: (\d+) done", done.stdout)]
    assert sorted(counts) == [1, 2], done.stdout + done.stderr[-2000:]  # 3 cases over 2 processes, none twice
    assert len((tmp_path / "out" / "volumes.csv").read_text().splitlines()) == 4


def test_locator_limits_the_windows_and_the_mask_keeps_the_full_grid(tmp_path, caplog):
    image, label = phantom_scan(DIRECTIONS["LPS"])
    source = _write(image, tmp_path / "scan.nrrd")
    calls = []

    def locate(prepared, model):
        calls.append(prepared.image.shape[-1])
        return (0, 4)  # the 4 lowest preprocessed slices only

    options = PredictOptions(progress=False, locate=locate)
    with caplog.at_level("INFO", logger="radseg.pipeline.predict.inference"):
        (result,) = predict_many(oracle_model(roi=(32, 32, 4)), [source], tmp_path / "out", options).results
    assert result.status == "done", result.message
    assert calls
    written = sitk.ReadImage(str(result.mask))
    assert written.GetSize() == image.GetSize()
    np.testing.assert_allclose(written.GetDirection(), image.GetDirection())
    ran, total = map(int, re.search(r"ran (\d+) of (\d+) windows", caplog.text).groups())
    assert ran < total
    full = sitk.GetArrayFromImage(sitk.ReadImage(str(
        predict_many(oracle_model(roi=(32, 32, 4)), [source], tmp_path / "full", QUIET).results[0].mask)))
    located = sitk.GetArrayFromImage(written)
    assert 0 < (located > 0).sum() < (full > 0).sum()  # labels only near the located slab


def test_locator_that_finds_nothing_runs_the_whole_volume(tmp_path):
    image, _ = phantom_scan(DIRECTIONS["RAS"])
    source = _write(image, tmp_path / "scan.nrrd")
    options = PredictOptions(progress=False, locate=lambda prepared, model: None)
    located = predict_many(oracle_model(), [source], tmp_path / "a", options).results[0].mask
    full = predict_many(oracle_model(), [source], tmp_path / "b", QUIET).results[0].mask
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(located))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(full))))
