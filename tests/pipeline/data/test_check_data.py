"""check-data: a clean phantom passes; every planted defect gives exactly one line naming its case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from radseg.cli import main
from radseg.errors import DataError
from radseg.pipeline.data.check_data import check_dataset


@pytest.fixture()
def data_copy(phantom_dataset, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_dataset, tmp_path / "data"))


def _image(root: Path, case: str) -> Path:
    return root / "imagesTr" / f"{case}.nii.gz"


def _label(root: Path, case: str) -> Path:
    return root / "labelsTr" / f"{case}.nii.gz"


def _rewrite(path: Path, change) -> None:
    """Load a NIfTI, change its array (and maybe affine), save it in place."""
    image = nib.load(path)
    array, affine = change(np.asarray(image.dataobj).copy(), image.affine.copy())
    nib.save(nib.Nifti1Image(array, affine), path)


def _truncate(root, case):
    path = _image(root, case)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _make_2d(root, case):
    _rewrite(_image(root, case), lambda a, aff: (a[:, :, a.shape[2] // 2], aff))


def _nans(root, case):
    def change(array, affine):
        array = array.astype(np.float32)
        array[5:8, 5:8, 2] = np.nan
        return array, affine

    _rewrite(_image(root, case), change)


def _value_7(root, case):
    def change(array, affine):
        array[3, 3, 3] = 7
        return array, affine

    _rewrite(_label(root, case), change)


def _other_shape(root, case):
    _rewrite(_label(root, case), lambda a, aff: (a[:-3], aff))


def _other_spacing(root, case):
    _rewrite(_label(root, case), lambda a, aff: (a, aff @ np.diag([1.0, 1.0, 1.5, 1.0])))


def _missing(root, case):
    _image(root, case).unlink()


def _empty_label(root, case):
    _rewrite(_label(root, case), lambda a, aff: (np.zeros_like(a), aff))


DEFECTS = {
    # name: (plant, severity, words the line must hold)
    "truncated": (_truncate, "ERROR", "cannot read"),
    "2d": (_make_2d, "ERROR", "not 3D"),
    "nan": (_nans, "ERROR", "9 voxels are NaN or infinite"),
    "value_7": (_value_7, "ERROR", "label values {0, 1, 2, 7} in case phantom_001 exceed the 3 classes "
                "declared in dataset.json (0, 1, 2)"),
    "other_shape": (_other_shape, "ERROR", "not on the image's grid: shape"),
    "other_spacing": (_other_spacing, "ERROR", "spacing"),
    "missing": (_missing, "ERROR", "file is missing"),
    "empty_label": (_empty_label, "WARNING", "label is empty"),
}


def test_phantom_passes(phantom_dataset):
    report = check_dataset(phantom_dataset)
    assert report.ok and report.lines() == []
    assert report.summary() == "checked 6 cases: 0 errors, 0 warnings"


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_gives_one_line_naming_the_case(data_copy, defect):
    plant, severity, words = DEFECTS[defect]
    plant(data_copy, "phantom_001")
    report = check_dataset(data_copy)
    assert len(report.lines()) == 1, report.lines()
    (line,) = report.lines()
    assert line.startswith(f"{severity} case phantom_001 (")
    assert words in line and "; fix: " in line
    assert report.ok is (severity == "WARNING")


def test_every_problem_is_reported_at_once(data_copy):
    planted = {"phantom_000": "missing", "phantom_001": "value_7", "phantom_002": "nan", "phantom_003": "other_spacing"}
    for case, defect in planted.items():
        DEFECTS[defect][0](data_copy, case)
    report = check_dataset(data_copy)
    assert not report.ok
    assert sorted(p.case_id for p in report.problems) == sorted(planted)
    assert report.summary() == "checked 6 cases: 4 errors, 0 warnings"


def test_the_error_names_the_file_relative_to_the_dataset(data_copy):
    _other_shape(data_copy, "phantom_002")
    (line,) = check_dataset(data_copy).lines()
    assert line.startswith("ERROR case phantom_002 (labelsTr/phantom_002.nii.gz): ")


def test_duplicate_image_is_a_warning(data_copy):
    shutil.copyfile(_image(data_copy, "phantom_000"), _image(data_copy, "phantom_003"))
    shutil.copyfile(_label(data_copy, "phantom_000"), _label(data_copy, "phantom_003"))
    report = check_dataset(data_copy)
    assert report.ok
    (line,) = report.lines()
    assert line.startswith("WARNING case phantom_003") and "same voxels as the image of case phantom_000" in line


def test_declared_channel_count_must_match(data_copy):
    meta = json.loads((data_copy / "dataset.json").read_text())
    meta["modality"] = {"0": "CT", "1": "PET"}
    (data_copy / "dataset.json").write_text(json.dumps(meta))
    report = check_dataset(data_copy)
    assert len(report.errors) == 6 and "1 image channels but dataset.json declares 2" in report.lines()[0]


def test_an_undiscoverable_dataset_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        check_dataset(tmp_path / "empty")


def test_dicom_series_folders(tmp_path):
    from conftest import real_data

    series = real_data("dcmqi_ct3slice", "ct-3slice")
    root = tmp_path / "dicom"
    shutil.copytree(series, root / "images" / "ct")
    report = check_dataset(root)
    assert report.ok, report.lines()
    mixed = root / "images" / "ct"
    for file in real_data("totalseg_ct", "example_ct_dicom").iterdir():
        shutil.copy(file, mixed / file.name)
    (line,) = check_dataset(root).lines()
    assert line.startswith("ERROR case ct (images/ct): DICOM folder holds 2 series (")


def test_cli_exit_codes(phantom_dataset, data_copy, tmp_path, capsys):
    assert main(["check-data", str(phantom_dataset)]) == 0
    assert "0 errors" in capsys.readouterr().out
    _value_7(data_copy, "phantom_001")
    assert main(["check-data", str(data_copy)]) == 1
    out = capsys.readouterr().out
    assert "ERROR case phantom_001" in out and "1 error" in out
    (tmp_path / "empty").mkdir()
    assert main(["check-data", str(tmp_path / "empty")]) == 2
