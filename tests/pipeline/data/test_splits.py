import json
import logging

import pytest

from radseg.errors import DataError
from radseg.pipeline.data.splits import load_or_create_splits, make_folds

CASES = [f"case_{i:02d}" for i in range(11)]


def test_folds_are_deterministic_disjoint_covering_and_balanced():
    folds = make_folds(CASES, 3, seed=4)
    assert folds == make_folds(CASES, 3, seed=4)
    assert folds != make_folds(CASES, 3, seed=5)
    vals = [fold["val"] for fold in folds]
    assert sorted(c for val in vals for c in val) == CASES
    assert sorted(len(val) for val in vals) == [3, 4, 4]
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == CASES and not set(fold["train"]) & set(fold["val"])
        assert fold["val"] == [c for c in CASES if c in fold["val"]]  # the callers' order


def test_patients_never_straddle_train_and_val():
    cases = [f"p{p}_scan{s}" for p in range(6) for s in range(p % 3 + 1)]  # 1 to 3 scans per patient

    def patient(case_id):
        return case_id.split("_")[0]

    for seed in range(5):
        folds = make_folds(cases, 3, seed, patient_of=patient)
        assert sorted(c for fold in folds for c in fold["val"]) == sorted(cases)
        for fold in folds:
            assert not {patient(c) for c in fold["train"]} & {patient(c) for c in fold["val"]}
        assert max(len(f["val"]) for f in folds) - min(len(f["val"]) for f in folds) <= 1
    with pytest.raises(DataError, match=r"num_folds must be between 2 and the number of patients \(6\), not 7"):
        make_folds(cases, 7, 0, patient_of=patient)


@pytest.mark.parametrize("num_folds", [1, 12])
def test_impossible_fold_counts(num_folds):
    with pytest.raises(DataError, match=f"between 2 and the number of patients .11., not {num_folds}; set data.num_folds"):
        make_folds(CASES, num_folds, 0)


def test_repeated_case_ids():
    with pytest.raises(DataError, match="case ids repeat in the cases to split: case_01; give every case a unique name"):
        make_folds(CASES + ["case_01"], 2, 0)


def test_splits_are_written_then_reused(tmp_path, caplog):
    path = tmp_path / "run" / "splits.json"
    folds = load_or_create_splits(path, CASES, 3, seed=1)
    assert json.loads(path.read_text()) == folds == make_folds(CASES, 3, 1)
    assert [p.name for p in path.parent.iterdir()] == ["splits.json"]
    path.write_text(json.dumps(folds[::-1]))  # edited by hand: still these cases, so it is kept
    with caplog.at_level(logging.INFO, logger="radseg.pipeline.data.splits"):
        assert load_or_create_splits(path, reversed(CASES), 3, seed=99) == folds[::-1]
    assert "reusing the 3-fold splits" in caplog.text


def test_mismatching_splits_are_refused(tmp_path):
    path = tmp_path / "splits.json"
    load_or_create_splits(path, CASES, 3, seed=1)
    with pytest.raises(DataError, match="has 3 folds, expected 5; delete .*splits.json to make new splits, or pass another"):
        load_or_create_splits(path, CASES, 5, seed=1)
    with pytest.raises(DataError, match="covers other cases: not in the dataset: case_10; not in the splits: new_case; delete"):
        load_or_create_splits(path, CASES[:-1] + ["new_case"], 3, seed=1)
    folds = json.loads(path.read_text())
    folds[0]["val"].append(folds[1]["val"][0])
    path.write_text(json.dumps(folds))
    with pytest.raises(DataError, match="are in several val folds"):
        load_or_create_splits(path, CASES, 3, seed=1)
    folds = make_folds(CASES, 3, 1)
    folds[2]["train"].pop()
    path.write_text(json.dumps(folds))
    with pytest.raises(DataError, match="fold 2 train is not all cases outside its val"):
        load_or_create_splits(path, CASES, 3, seed=1)
    path.write_text("[{]")
    with pytest.raises(DataError, match="is not valid JSON .*; delete it to make new splits"):
        load_or_create_splits(path, CASES, 3, seed=1)
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="must be a list of"):
        load_or_create_splits(path, CASES, 3, seed=1)


def test_stored_splits_that_split_a_patient_are_refused(tmp_path):
    path = tmp_path / "splits.json"
    cases = ["a_1", "a_2", "b_1", "c_1"]
    path.write_text(json.dumps([{"train": ["a_2", "c_1"], "val": ["a_1", "b_1"]}, {"train": ["a_1", "b_1"], "val": ["a_2", "c_1"]}]))
    assert load_or_create_splits(path, cases, 2, seed=0)[0]["val"] == ["a_1", "b_1"]
    with pytest.raises(DataError, match="fold 0 has patient.s. a in both train and val"):
        load_or_create_splits(path, cases, 2, seed=0, patient_of=lambda c: c.split("_")[0])
