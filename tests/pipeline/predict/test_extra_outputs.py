"""radseg predict's optional outputs: a DICOM-SEG that lands on the source frames, a quick-look PNG."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import SimpleITK as sitk

from conftest import real_data
from predict_helpers import DIRECTIONS, oracle_model, phantom_scan
from radseg.pipeline.predict import extra_outputs
from radseg.pipeline.predict.extra_outputs import dicom_seg_writer, quicklook_writer
from radseg.pipeline.predict.inputs import find_cases
from radseg.pipeline.predict.predict import PredictOptions, predict_many


def test_dicom_input_gets_a_seg_on_the_right_frames_and_a_quicklook(tmp_path):
    folder = real_data("dcmqi_ct3slice", "ct-3slice")
    options = PredictOptions(progress=False, check_modality=False, extra_writers=(dicom_seg_writer, quicklook_writer))
    (result,) = predict_many(oracle_model(), [folder], tmp_path, options).results
    assert result.status == "done", result.message
    (seg_path,) = tmp_path.glob("*_seg.dcm")
    (png,) = tmp_path.glob("*_quicklook.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(result.mask)))  # (Z, Y, X) on the series' grid
    sources = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in folder.iterdir()}
    origin_z = sitk.ReadImage(str(result.mask)).GetOrigin()[2]
    spacing_z = sitk.ReadImage(str(result.mask)).GetSpacing()[2]
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG"
    pixels = seg.pixel_array.reshape(-1, *mask.shape[1:])
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        z = int(round((float(sources[uid].ImagePositionPatient[2]) - origin_z) / spacing_z))
        np.testing.assert_array_equal(frame.astype(bool), mask[z] == number)


def test_file_input_gets_no_seg(tmp_path):
    image = sitk.GetImageFromArray(np.full((8, 40, 40), 100, dtype=np.int16))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    options = PredictOptions(progress=False, check_modality=False, extra_writers=(dicom_seg_writer,))
    (result,) = predict_many(oracle_model(), [tmp_path / "scan.nii.gz"], tmp_path / "out", options).results
    assert result.status == "done", result.message
    assert not list((tmp_path / "out").glob("*_seg.dcm"))


def test_failing_dicom_seg_leaves_nothing_of_its_case_and_the_others_complete(tmp_path, monkeypatch):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for file in real_data("dcmqi_ct3slice", "ct-3slice").iterdir():
        os.symlink(file, inputs / file.name)
    image, _ = phantom_scan(DIRECTIONS["RAS"], shape=(40, 36, 20))
    sitk.WriteImage(image, str(inputs / "plain.nii.gz"))
    (dicom_case,) = [case for case in find_cases([inputs]) if case.is_dicom]
    earlier = out / f"{dicom_case.name}.nii.gz"  # an earlier run's mask, never recorded as done
    earlier.write_bytes(b"earlier run")

    def broken(*args, **kwargs):
        raise AttributeError("'Dataset' object has no attribute 'PixelSpacing'")  # as highdicom may fail

    monkeypatch.setattr(extra_outputs, "write_dicom_seg", broken)
    options = PredictOptions(progress=False, check_modality=False, extra_writers=(dicom_seg_writer,))
    results = {r.name: r for r in predict_many(oracle_model(), [inputs], out, options).results}
    assert results["plain"].status == "done"
    assert results[dicom_case.name].status == "failed"
    assert "dicom_seg_writer failed on case" in results[dicom_case.name].message
    assert "AttributeError" in results[dicom_case.name].message
    assert earlier.read_bytes() == b"earlier run"  # neither replaced nor removed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [earlier.name, "labels.json", "plain.json", "plain.nii.gz", "volumes.csv"])  # no staging left
    assert [row.split(",")[0] for row in (out / "volumes.csv").read_text().splitlines()] == ["case", "plain"]


def test_the_quicklook_draws_the_scan_itself_not_a_freed_buffer(tmp_path, monkeypatch):
    """The scan handed to the picture must still be the scan while it is drawn: a view of a SimpleITK
    image nothing keeps alive shows whatever reused its memory (grey blocks in the picture)."""
    image, _ = phantom_scan(DIRECTIONS["LPS"])
    source = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image, str(source))
    expected = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(source))), (2, 1, 0))
    drawn = []

    def check(path, scan, masks, **kwargs):
        import gc

        gc.collect()
        reuse = [np.full(scan.shape, 7, dtype=scan.dtype) for _ in range(4)]  # memory a freed buffer would give up
        drawn.append(np.array_equal(scan, expected))
        del reuse

    monkeypatch.setattr(extra_outputs, "save_quicklook", check)
    options = PredictOptions(progress=False, check_modality=False, extra_writers=(quicklook_writer,))
    (result,) = predict_many(oracle_model(), [source], tmp_path / "out", options).results
    assert result.status == "done", result.message
    assert drawn == [True]
