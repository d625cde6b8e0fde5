import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from radseg.errors import DataError
from radseg.keys import CASE_ID, IMAGE, LABEL
from radseg.pipeline.data.datalist import Case, discover_dataset, to_datalist


def _nifti(path: Path, seed: int = 0, label: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 3, (6, 5, 4)).astype(np.uint8) if label else rng.normal(size=(6, 5, 4)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _nnunet(root: Path, cases=("la_001", "la_002"), channels=2, **meta) -> Path:
    for i, case in enumerate(cases):
        for channel in range(channels):
            _nifti(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz", seed=i)
        _nifti(root / "labelsTr" / f"{case}.nii.gz", seed=i, label=True)
    content = {
        "channel_names": {"0": "T2", "1": "ADC"} if channels == 2 else {"0": "CT"},
        "labels": {"background": 0, "prostate": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "Dataset001_Prostate",
    }
    (root / "dataset.json").write_text(json.dumps({**content, **meta}))
    return root


def test_msd_phantom(phantom_dataset):
    spec = discover_dataset(phantom_dataset)
    assert (spec.layout, spec.name, spec.modality, spec.channel_names) == ("msd", "radseg-phantom", "CT", ["CT"])
    assert spec.labels == {0: "background", 1: "liver", 2: "tumour"} and spec.num_classes == 3
    assert [c.case_id for c in spec.training] == ["phantom_000", "phantom_001", "phantom_002", "phantom_003"]
    assert [c.case_id for c in spec.test] == ["phantom_004", "phantom_005"]
    assert spec.test[0].label == phantom_dataset / "labelsTs" / "phantom_004.nii.gz"
    assert discover_dataset(phantom_dataset / "dataset.json").training == spec.training
    item = to_datalist(spec.training)[0]
    assert item == {
        IMAGE: str(phantom_dataset / "imagesTr" / "phantom_000.nii.gz"),
        LABEL: str(phantom_dataset / "labelsTr" / "phantom_000.nii.gz"),
        CASE_ID: "phantom_000",
    }


def test_nnunet_two_channels(tmp_path):
    root = _nnunet(tmp_path / "Dataset001_Prostate")
    _nifti(root / "imagesTs" / "la_009_0000.nii.gz")
    _nifti(root / "imagesTs" / "la_009_0001.nii.gz")
    spec = discover_dataset(root)
    assert (spec.layout, spec.modality, spec.channel_names) == ("nnunet", "MRI", ["T2", "ADC"])
    assert spec.labels == {0: "background", 1: "prostate"}
    assert [c.case_id for c in spec.training] == ["la_001", "la_002"]
    assert spec.test == [Case("la_009", [root / "imagesTs" / "la_009_0000.nii.gz", root / "imagesTs" / "la_009_0001.nii.gz"])]
    item = to_datalist(spec.training)[1]
    assert item[IMAGE] == [str(root / "imagesTr" / f"la_002_{c:04d}.nii.gz") for c in (0, 1)]
    assert item[LABEL] == str(root / "labelsTr" / "la_002.nii.gz") and item[CASE_ID] == "la_002"
    assert LABEL not in to_datalist(spec.test)[0]


def test_images_and_labels_folders(tmp_path):
    _nifti(tmp_path / "images" / "a.nii.gz")
    _nifti(tmp_path / "labels" / "a.nii.gz", label=True)
    (tmp_path / "images" / "b.nrrd").write_bytes(b"")
    (tmp_path / "labels" / "b.mha").write_bytes(b"")
    (tmp_path / "images" / "c.mhd").write_bytes(b"")
    (tmp_path / "images" / "c.raw").write_bytes(b"")  # the .mhd's pixel data, not a case
    (tmp_path / "images" / "d_dicom").mkdir()
    (tmp_path / "images" / "d_dicom" / "IM0001.dcm").write_bytes(b"")
    (tmp_path / "labels" / "d_dicom.nii").write_bytes(b"")
    spec = discover_dataset(tmp_path)
    assert (spec.layout, spec.modality, spec.labels) == ("folders", "unknown", {0: "background", 1: "foreground"})
    assert [(c.case_id, c.label.name) for c in spec.training] == [("a", "a.nii.gz"), ("b", "b.mha"), ("d_dicom", "d_dicom.nii")]
    assert spec.training[2].images == [tmp_path / "images" / "d_dicom"]
    assert spec.test == [Case("c", [tmp_path / "images" / "c.mhd"], None)]
    (tmp_path / "labels.json").write_text(json.dumps({"0": "background", "1": "liver", "2": "tumour"}))
    assert discover_dataset(tmp_path).num_classes == 3


def test_csv_with_and_without_case_ids(tmp_path):
    _nifti(tmp_path / "scans" / "x.nii.gz")
    _nifti(tmp_path / "scans" / "x_seg.nii.gz", label=True)
    _nifti(tmp_path / "scans" / "y.nii")
    (tmp_path / "list.csv").write_text("image,label\nscans/x.nii.gz,scans/x_seg.nii.gz\nscans/y.nii,\n")
    spec = discover_dataset(tmp_path / "list.csv")
    assert (spec.layout, spec.root) == ("csv", tmp_path)
    assert [(c.case_id, c.label) for c in spec.training] == [("x", tmp_path / "scans" / "x_seg.nii.gz")]
    assert [c.case_id for c in spec.test] == ["y"]
    (tmp_path / "ids.csv").write_text("case_id,image,label\npatient7,scans/x.nii.gz,scans/x_seg.nii.gz\n")
    assert discover_dataset(tmp_path / "ids.csv").training[0].case_id == "patient7"


@pytest.mark.parametrize(
    "modality, expected", [({"0": "MR"}, "MRI"), ({"0": "MRI"}, "MRI"), ({"0": "FLAIR", "1": "T1w"}, "MRI"), ({"0": "PET"}, "unknown")]
)
def test_modality_from_dataset_json(tmp_path, modality, expected):
    _nifti(tmp_path / "imagesTr" / "s1.nii.gz")
    _nifti(tmp_path / "labelsTr" / "s1.nii.gz", label=True)
    entry = {"image": "./imagesTr/s1.nii.gz", "label": "./labelsTr/s1.nii.gz"}
    meta = {"labels": {"0": "background"}, "modality": modality, "training": [entry]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert discover_dataset(tmp_path).modality == expected


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_missing_empty_and_unrecognised(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass a dataset folder or a CSV file"):
        discover_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty; expected an MSD folder"):
        discover_dataset(tmp_path / "empty")
    _write(tmp_path / "odd" / "imagesTr" / "x.nii.gz", "")
    with pytest.raises(DataError, match=r"no recognised layout; it has imagesTr/ but no dataset.json; expected .*nnU-Net v2"):
        discover_dataset(tmp_path / "odd")
    with pytest.raises(DataError, match="is a file but not a CSV"):
        discover_dataset(_write(tmp_path / "notes.txt", "hi"))


def test_dataset_json_errors(tmp_path):
    _write(tmp_path / "bad" / "dataset.json", "{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        discover_dataset(tmp_path / "bad")
    _write(tmp_path / "msd" / "dataset.json", json.dumps({"labels": {"0": "background"}}))
    with pytest.raises(DataError, match="lacks the key.s. training that an MSD dataset.json needs"):
        discover_dataset(tmp_path / "msd")
    _write(tmp_path / "nolabel" / "dataset.json",
           json.dumps({"labels": {"0": "background"}, "training": [{"image": "./imagesTr/a.nii.gz"}]}))
    with pytest.raises(DataError, match=r"training\[0\] must be .* give every training case its label"):
        discover_dataset(tmp_path / "nolabel")
    root = _nnunet(tmp_path / "nn")
    meta = json.loads((root / "dataset.json").read_text())
    del meta["numTraining"]
    _write(root / "dataset.json", json.dumps(meta))
    with pytest.raises(DataError, match="lacks the key.s. numTraining that an nnU-Net v2 dataset.json needs"):
        discover_dataset(root)


def test_every_missing_file_is_listed(tmp_path):
    _nifti(tmp_path / "imagesTr" / "ok.nii.gz")
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in ("ok", "gone")]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "fg"}, "training": training}))
    with pytest.raises(DataError) as err:
        discover_dataset(tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0] == "3 listed file(s) are missing; restore the files or remove their entries from dataset.json:"
    assert lines[1:] == [
        f"case ok: label {tmp_path / 'labelsTr' / 'ok.nii.gz'} is missing",
        f"case gone: image {tmp_path / 'imagesTr' / 'gone.nii.gz'} is missing",
        f"case gone: label {tmp_path / 'labelsTr' / 'gone.nii.gz'} is missing",
    ]


def test_nnunet_errors(tmp_path):
    root = _nnunet(tmp_path / "a")
    (root / "imagesTr" / "la_002_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"need 2 channel file.s. each; add the files:\ncase la_002: missing channel file.s. la_002_0001.nii.gz"):
        discover_dataset(root)
    root = _nnunet(tmp_path / "b")
    (root / "labelsTr" / "la_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"without labels \(add them to labelsTr/\):\ncase la_001: label .*la_001.nii.gz is missing"):
        discover_dataset(root)
    root = _nnunet(tmp_path / "c", numTraining=5)
    with pytest.raises(DataError, match="declares numTraining 5 but imagesTr/ holds 2 cases"):
        discover_dataset(root)
    root = _nnunet(tmp_path / "d", labels={"background": 0, "whole": [1, 2]})
    with pytest.raises(DataError, match="region-based labels are not supported"):
        discover_dataset(root)


def test_folder_and_csv_errors(tmp_path):
    _nifti(tmp_path / "f" / "images" / "a.nii.gz")
    _nifti(tmp_path / "f" / "labels" / "zz.nii.gz", label=True)
    with pytest.raises(DataError, match=r"label files without an image .*:\ncase zz: "):
        discover_dataset(tmp_path / "f")
    _nifti(tmp_path / "f" / "images" / "zz.nii")
    _nifti(tmp_path / "f" / "images" / "zz.nii.gz")
    with pytest.raises(DataError, match=r"case names repeat in .*images .keep one file per case.:\ncase zz: zz.nii, zz.nii.gz"):
        discover_dataset(tmp_path / "f")
    _nifti(tmp_path / "c" / "x.nii.gz")
    csv = _write(tmp_path / "c" / "dup.csv", "case_id,image\np1,x.nii.gz\np1,x.nii.gz\np2,x.nii.gz\n")
    with pytest.raises(DataError, match="case ids repeat in .*: p1; give every case a unique name"):
        discover_dataset(csv)
    with pytest.raises(DataError, match=r"needs an 'image' column .*; it has \['path', 'seg'\]"):
        discover_dataset(_write(tmp_path / "c" / "cols.csv", "path,seg\nx.nii.gz,\n"))
    with pytest.raises(DataError, match="1 listed file.s. are missing; fix the paths in .*\ncase y: image .*y.nii.gz is missing"):
        discover_dataset(_write(tmp_path / "c" / "gone.csv", "image\ny.nii.gz\n"))
    with pytest.raises(DataError, match="rows 3 have no image path"):
        discover_dataset(_write(tmp_path / "c" / "blank.csv", "image,label\nx.nii.gz,\n,x.nii.gz\n"))


def test_a_training_runs_checks_announce_the_dataset_once(phantom_dataset, caplog):
    """fit discovers the dataset for the folds, for check-data and for its datasets: one INFO line."""
    import logging

    from radseg.configs import load_config
    from radseg.pipeline.core.distributed import DistInfo
    from radseg.pipeline.train.run_checks import check_data

    cfg = load_config("demo", ["data.num_folds=2"])
    with caplog.at_level(logging.INFO, logger="radseg.pipeline.data.datalist"):
        check_data(cfg, phantom_dataset, DistInfo())
        discover_dataset(phantom_dataset)  # prepare_data's own discovery
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset ")]
    assert lines == ["dataset radseg-phantom (msd): 4 training, 2 test cases"]


def test_a_stray_file_in_an_nnunet_images_folder_is_named_and_skipped(tmp_path, caplog):
    root = _nnunet(tmp_path / "Dataset001_Prostate")
    (root / "imagesTr" / "notes.txt").write_text("scanner protocol")
    spec = discover_dataset(root)  # a NameError (no logger) before
    assert [c.case_id for c in spec.training] == ["la_001", "la_002"]
    assert "ignoring" in caplog.text and "notes.txt: not named CASE_XXXX.nii.gz" in caplog.text
