"""``radseg evaluate`` end to end on tiny generated cases: outputs, missing cases and bad input."""

from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest

from radseg.cli import main
from radseg.errors import DataError
from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder
from radseg.pipeline.evaluate.outputs import OUTPUT_FILES

AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])
LABELS = {"0": "background", "1": "organ", "2": "lesion"}


def _truth(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros((24, 20, 12), np.uint8)
    label[4:18, 3:16, 2:10] = 1
    x, y = rng.integers(6, 12, 2)
    label[x:x + 3, y:y + 3, 4:7] = 2
    return label


def _save(array: np.ndarray, path, affine=AFFINE) -> None:
    nib.save(nib.Nifti1Image(array, affine), str(path))


@pytest.fixture
def folders(tmp_path):
    """Truth for cases c0..c3 (a folder with labels.json); predictions for c0..c2, perturbed."""
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir(), pred.mkdir()
    (truth / "labels.json").write_text(json.dumps(LABELS))
    for index in range(4):
        label = _truth(index)
        _save(label, truth / f"c{index}.nii.gz")
        if index < 3:
            guess = np.roll(label, index, axis=0)
            guess[20:22, 16:18, 1:3] = 2 if index == 2 else guess[20:22, 16:18, 1:3]  # a spurious lesion
            _save(guess, pred / f"c{index}.nii.gz")
            probabilities = np.stack([guess == c for c in range(3)]).astype(np.float16) * np.float16(0.8)
            np.save(pred / f"c{index}_probabilities.npy", probabilities)
    return pred, truth, tmp_path / "out"


def test_outputs_rows_missing_cases_and_lesions(folders):
    pred, truth, out = folders
    result = evaluate_folder(pred, truth, out, lesion_classes=("lesion",), progress=False, resamples=200)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 * 2 and {r["status"] for r in rows if r["case_id"] == "c3"} == {"missing"}
    perfect = [r for r in rows if r["case_id"] == "c0"]
    assert [float(r["dice"]) for r in perfect] == [1.0, 1.0] and perfect[0]["hd95_mm"] == "0"
    summary = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON, no NaN
    assert summary["missing_predictions"] == ["c3"] and summary["num_scored"] == 3
    assert summary["metrics"]["organ"]["dice"]["n"] == 3 and summary["bootstrap"]["resamples"] == 200
    assert "hd95_mm" in summary["conventions"]["prediction empty, truth not"]
    lesion = summary["lesions"]["lesion"]
    assert (lesion["true_lesions"], lesion["tp"], lesion["fp"]) == (3, 3, 1) and "froc" in lesion
    lesion_rows = list(csv.DictReader((out / "lesions.csv").open()))
    assert [r["status"] for r in lesion_rows if r["kind"] == "pred"].count("FP") == 1
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6 + 2 and "c3" in page
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # self-contained: nothing fetched
    assert "c3" in str(result)


def test_geometry_error_names_both_files_and_resample_fixes_it(folders):
    pred, truth, out = folders
    shifted = AFFINE.copy()
    shifted[0, 3] = 4.5
    _save(np.asarray(nib.load(pred / "c1.nii.gz").dataobj), pred / "c1.nii.gz", shifted)
    with pytest.raises(DataError, match=r"c1: prediction .*c1.nii.gz and truth .*c1.nii.gz .*origin \(-4.5"):
        evaluate_folder(pred, truth, out, progress=False)
    assert not out.exists()
    (pred / "c1_probabilities.npy").unlink()
    result = evaluate_folder(pred, truth, out, resample=True, progress=False, resamples=50)
    assert result.summary["resampled"] == ["c1"] and "resampled onto the truth grid" in str(result)


def test_label_values_outside_the_label_map_are_refused_and_nothing_is_written(folders):
    pred, truth, out = folders
    bad = np.asarray(nib.load(pred / "c2.nii.gz").dataobj).copy()
    bad[0, 0, 0] = 7
    _save(bad, pred / "c2.nii.gz")
    with pytest.raises(DataError, match=r"label values \{0, 1, 2, 7\} in .*c2.nii.gz exceed the 3 classes"):
        evaluate_folder(pred, truth, out, progress=False)
    assert not out.exists()


def test_nan_in_a_probability_map_is_refused(folders):
    pred, truth, out = folders
    probabilities = np.load(pred / "c0_probabilities.npy")
    probabilities[2, 1, 1, 1] = np.nan
    np.save(pred / "c0_probabilities.npy", probabilities)
    with pytest.raises(DataError, match="c0_probabilities.npy holds NaN"):
        evaluate_folder(pred, truth, out, lesion_classes=("lesion",), progress=False)
    assert not out.exists()


def test_different_shapes_are_refused(folders):
    pred, truth, out = folders
    _save(np.zeros((24, 20, 11), np.uint8), pred / "c0.nii.gz")
    with pytest.raises(DataError, match=r"c0: .*shape \[24, 20, 11\] vs \[24, 20, 12\]"):
        evaluate_folder(pred, truth, out, progress=False)


def test_unwritable_output_and_earlier_results(folders, tmp_path):
    pred, truth, out = folders
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataError, match="not writable"):
        evaluate_folder(pred, truth, blocker / "out", progress=False)
    evaluate_folder(pred, truth, out, progress=False, resamples=20, worst_cases=0)
    before = (out / "metrics.csv").read_text()
    with pytest.raises(DataError, match="pass --overwrite"):
        evaluate_folder(pred, truth, out, progress=False)
    assert (out / "metrics.csv").read_text() == before


def test_cli_prints_one_line_for_bad_input_and_the_table_otherwise(folders, capsys):
    pred, truth, out = folders
    code = main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--output", str(out),
                 "--lesion-classes", "nodule"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'nodule' is not a foreground class" in err[0]
    code = main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--output", str(out),
                 "--tolerance-mm", "organ=3,lesion=1"])
    assert code == 0 and "organ" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["tolerance_mm"] == {"organ": 3.0, "lesion": 1.0}


def test_dataset_as_truth_scores_its_test_cases(phantom_dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for path in sorted((phantom_dataset / "labelsTs").glob("*.nii.gz")):
        image = nib.load(path)
        _save(np.roll(np.asarray(image.dataobj), 1, axis=1), pred / path.name, image.affine)
    result = evaluate_folder(pred, phantom_dataset, tmp_path / "out", progress=False, resamples=50, worst_cases=1)
    assert "labelled test cases" in result.summary["truth_set"] and result.summary["num_scored"] == 2
    assert 0.8 < result.summary["metrics"]["liver"]["dice"]["mean"] < 1.0


def test_label_folder_inside_a_dataset_takes_its_label_map(folders, tmp_path):
    """``--truth DATASET/labelsTs`` names the classes from the dataset's dataset.json (MSD here)."""
    pred, truth, out = folders
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (truth / "labels.json").rename(tmp_path / "moved.json")
    labels_ts = truth.rename(dataset / "labelsTs")
    (dataset / "dataset.json").write_text(json.dumps({"name": "two-class", "labels": LABELS, "training": []}))
    evaluate_folder(pred, labels_ts, out, progress=False, resamples=50)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == LABELS and set(summary["metrics"]) == {"organ", "lesion"}
    (dataset / "dataset.json").unlink()  # a bare folder: two classes only, so label 2 is refused
    with pytest.raises(DataError, match=r"exceed the 2 classes .*pass the right --labels"):
        evaluate_folder(pred, labels_ts, tmp_path / "out2", progress=False, resamples=50)


def _miss_the_lesion_of_c1(pred) -> None:
    guess = np.asarray(nib.load(pred / "c1.nii.gz").dataobj).copy()
    guess[guess == 2] = 1  # the lesion class is empty in the prediction, present in the truth
    _save(guess, pred / "c1.nii.gz")
    (pred / "c1_probabilities.npy").unlink()


def test_undefined_distances_are_counted_and_printed_and_the_worst_case_is_the_volume_diagonal(folders, tmp_path):
    pred, truth, out = folders
    _miss_the_lesion_of_c1(pred)
    result = evaluate_folder(pred, truth, out, progress=False, resamples=20, worst_cases=0)
    hd95 = result.summary["metrics"]["lesion"]["hd95_mm"]
    assert (hd95["n"], hd95["n_undefined"]) == (2, 1)
    assert result.summary["metrics"]["lesion"]["assd_mm"]["n_undefined"] == 1
    header, *lines = str(result).splitlines()
    assert header.split() == ["class", "n", "Dice", "undef", "95%", "CI", "HD95", "mm", "undef", "NSD", "undef"]
    lesion_line = next(line.split() for line in lines if line.startswith("lesion "))
    assert (lesion_line[3], lesion_line[6]) == ("0", "1")  # Dice defined everywhere; HD95 once undefined
    assert "n_undefined</th>" in (out / "report.html").read_text()
    worst = evaluate_folder(pred, truth, tmp_path / "worst", progress=False, resamples=20, worst_cases=0,
                            worst_case_distances=True)
    diagonal = float(np.sqrt((24 * 1.5) ** 2 + (20 * 1.2) ** 2 + (12 * 3.0) ** 2))  # the extent of AFFINE's grid
    rows = {(r["case_id"], r["class"]): r for r in csv.DictReader((tmp_path / "worst" / "metrics.csv").open())}
    assert float(rows[("c1", "lesion")]["hd95_mm"]) == pytest.approx(diagonal, rel=1e-5)
    assert float(rows[("c1", "lesion")]["assd_mm"]) == pytest.approx(diagonal, rel=1e-5)
    hd95 = worst.summary["metrics"]["lesion"]["hd95_mm"]
    assert (hd95["n"], hd95["n_undefined"]) == (3, 0) and worst.summary["worst_case_distances"] is True
    assert "diagonal" in worst.summary["conventions"]["prediction empty, truth not"]


def test_cli_flag_worst_case_distances(folders, capsys):
    pred, truth, out = folders
    _miss_the_lesion_of_c1(pred)
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--output", str(out),
                 "--worst-case-distances"]) == 0
    assert json.loads((out / "summary.json").read_text())["metrics"]["lesion"]["hd95_mm"]["n_undefined"] == 0


def _npz_from_predict(pred, case: str, affine: np.ndarray) -> None:
    """The probability map as ``radseg predict --probabilities`` writes it (with its RAS affine)."""
    from radseg.pipeline.predict.outputs import write_probabilities

    probabilities = np.load(pred / f"{case}_probabilities.npy")  # (C, X, Y, Z)
    (pred / f"{case}_probabilities.npy").unlink()
    write_probabilities(probabilities.transpose(0, 3, 2, 1), affine, ["background", "organ", "lesion"],
                        pred / f"{case}_probabilities.npz")


def test_npz_probabilities_from_another_grid_are_refused_in_one_line(folders, capsys):
    pred, truth, out = folders
    _npz_from_predict(pred, "c0", AFFINE)  # the right grid: accepted
    result = evaluate_folder(pred, truth, out, lesion_classes=("lesion",), progress=False, resamples=20,
                             worst_cases=0)
    assert "froc" in result.summary["lesions"]["lesion"] and "c0" not in result.summary["probability_grid_unchecked"]
    other = AFFINE.copy()
    other[:3, 3] = (-30.0, 12.0, 4.5)  # another case's scan: the same shape, another place
    (pred / "c0_probabilities.npz").unlink()
    _npz_from_predict(pred, "c1", other)  # c1's map, as if predicted on another scan, put beside c0's mask
    (pred / "c1_probabilities.npz").rename(pred / "c0_probabilities.npz")
    code = main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--output", str(out), "--overwrite",
                 "--lesion-classes", "lesion"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert re.search(r"case c0: probability map .*c0_probabilities.npz is not on the grid of its label map "
                     r".*c0.nii.gz: map origin \(-30, 12, 4.5\) mm, spacing \(1.5, 1.2, 3\) mm vs label map "
                     r"origin \(0, 0, 0\) mm, spacing \(1.5, 1.2, 3\) mm", err[0])


def test_npy_probabilities_without_an_affine_are_scored_with_a_warning(folders, caplog):
    pred, truth, out = folders
    with caplog.at_level("WARNING", logger="radseg.pipeline.evaluate.loading"):
        result = evaluate_folder(pred, truth, out, lesion_classes=("lesion",), progress=False, resamples=20,
                                 worst_cases=0)
    assert result.summary["probability_grid_unchecked"] == ["c0", "c1", "c2"]
    assert any("case c1: probability map c1_probabilities.npy has no affine" in r.getMessage() for r in caplog.records)
