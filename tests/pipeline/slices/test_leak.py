"""Splits by patient only: a planted leaky split is refused, wherever the patient id comes from."""

from __future__ import annotations

import json

import pytest

from radseg.configs import load_config
from radseg.errors import DataError
from radseg.pipeline.data.cases import Case
from radseg.pipeline.data.splits import check_patient_split, load_or_create_splits, make_folds, patient_lookup

from tests.conftest import real_data

CASES = [Case(f"p{p}_scan{s}", []) for p in range(1, 5) for s in range(1, 3)]  # 4 patients, 2 scans each
IDS = [c.case_id for c in CASES]


def test_planted_leaky_split_is_refused(tmp_path):
    patient_of = patient_lookup(CASES, r"^(p\d+)_")
    assert patient_of("p3_scan2") == "p3"
    leaky = [{"train": ["p1_scan1", "p2_scan1", "p2_scan2", "p3_scan1", "p3_scan2"],
              "val": ["p1_scan2", "p4_scan1", "p4_scan2"]},
             {"train": ["p1_scan2", "p4_scan1", "p4_scan2"],
              "val": ["p1_scan1", "p2_scan1", "p2_scan2", "p3_scan1", "p3_scan2"]}]
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(leaky))
    with pytest.raises(DataError, match=r"fold 0 has patient\(s\) p1 in both train and val, so one patient's slices "
                                        r"would be trained on and scored: p1 \(train: p1_scan1; val: p1_scan2\)"):
        load_or_create_splits(path, IDS, 2, 0, patient_of)
    # the same file is fine when every scan is its own patient: the patient id decides
    assert load_or_create_splits(path, IDS, 2, 0) == leaky


def test_folds_made_by_patient_never_leak():
    patient_of = patient_lookup(CASES, r"^(p\d+)_")
    for seed in range(5):
        for fold in make_folds(IDS, 2, seed, patient_of):
            check_patient_split(fold["train"], fold["val"], patient_of)


def test_patient_id_column_of_a_csv_dataset(tmp_path):
    from radseg.pipeline.data.layouts import discover_csv

    (tmp_path / "a.nii.gz").touch()
    (tmp_path / "b.nii.gz").touch()
    (tmp_path / "cases.csv").write_text("image,label,case_id,patient_id\na.nii.gz,a.nii.gz,a,P7\nb.nii.gz,b.nii.gz,b,P7\n")
    spec = discover_csv(tmp_path / "cases.csv")
    patient_of = patient_lookup(spec.training)
    assert patient_of("a") == patient_of("b") == "P7"
    with pytest.raises(DataError, match="patient.s. P7 in both train and val"):
        check_patient_split(["a"], ["b"], patient_of)


def test_dicom_patient_id_and_bad_patterns():
    import pydicom

    folder = real_data("totalseg_ct", "example_ct_dicom")
    first = sorted(folder.iterdir())[0]
    expected = str(pydicom.dcmread(first, stop_before_pixels=True).PatientID).strip()
    case = Case("series_a", [folder])
    assert patient_lookup([case])("series_a") == (expected or "series_a")
    with pytest.raises(DataError, match=r"patient_pattern '\^x' does not match case id 'p1_scan1'"):
        patient_lookup(CASES, "^x")
    with pytest.raises(DataError, match="is not a valid regular expression"):
        patient_lookup(CASES, "(")


def test_slice_training_refuses_a_leaky_splits_file(tmp_path, phantom_dataset):
    from radseg.pipeline.slices.fit import fit_slices

    ids = [f"phantom_{i:03d}" for i in range(4)]
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps([{"train": ids[:3], "val": ids[3:]}, {"train": ids[3:], "val": ids[:3]}]))
    # phantom_000 and phantom_003 are planted as one patient
    cfg = load_config("slices", ["data.num_folds=2", "train.device=cpu", f"slices.splits_file={path}",
                                 r"slices.patient_pattern=^(phantom_00)[03]$|^(phantom_\d+)$",
                                 "train.max_epochs=1", "train.iterations_per_epoch=1", "train.batch_size=2"])
    with pytest.raises(DataError, match=r"leaky.json: fold 0 has patient\(s\) phantom_00 in both train and val"):
        fit_slices(cfg, phantom_dataset, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_dataset_without_liver_labels_is_refused_before_any_work(tmp_path, phantom_dataset):
    import shutil

    from radseg.errors import ConfigError
    from radseg.pipeline.slices.fit import fit_slices

    data = tmp_path / "spleen"
    shutil.copytree(phantom_dataset, data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "spleen", "2": "kidney"}
    (data / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"needs a liver label, but the dataset declares only \{0: background, "
                                          r"1: spleen, 2: kidney\}; expected a label named 'liver'"):
        fit_slices(load_config("slices", ["train.device=cpu"]), data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
