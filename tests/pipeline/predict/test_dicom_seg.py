"""DICOM-SEG writer: frames land on the right source slices (by position), read back with pydicom."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import radseg
from radseg.errors import DataError
from radseg.pipeline.predict.dicom_seg import write_dicom_seg
from radseg.transforms.io import read_image
from tests.conftest import real_data


def _sources(series_dir: Path) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID (from the file meta, which anonymisers keep) -> header, for each slice."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series_dir.iterdir())]
    return {str(h.file_meta.MediaStorageSOPInstanceUID): h for h in headers}


def _frames(seg: pydicom.Dataset) -> list[tuple[str, int, list[float], np.ndarray]]:
    """(referenced SOPInstanceUID, segment number, ImagePositionPatient, mask) of every frame."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    frames = []
    for item, mask in zip(seg.PerFrameFunctionalGroupsSequence, pixels):
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        identification = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        frames.append((str(source), int(identification[0].ReferencedSegmentNumber), position, mask))
    return frames


def _slice_index(label: sitk.Image, header: pydicom.Dataset) -> int:
    index = label.TransformPhysicalPointToIndex([float(v) for v in header.ImagePositionPatient])
    assert index[:2] == (0, 0)
    return index[2]


@pytest.fixture(scope="module")
def ct3slice(tmp_path_factory) -> dict:
    folder = real_data("dcmqi_ct3slice")
    label = sitk.ReadImage(str(folder / "liver_seg.nrrd"))
    path = write_dicom_seg(label, folder / "ct-3slice", {1: "liver"},
                           tmp_path_factory.mktemp("seg") / "liver.dcm")
    return {"folder": folder, "label": label, "seg": pydicom.dcmread(path), "path": path}


def test_ct3slice_frames_reference_their_slices_and_decode_to_the_nrrd(ct3slice):
    sources = _sources(ct3slice["folder"] / "ct-3slice")
    label = sitk.GetArrayFromImage(ct3slice["label"])  # (z, y, x)
    frames = _frames(ct3slice["seg"])
    assert sorted(uid for uid, *_ in frames) == sorted(sources)  # each slice holds liver: 3 frames
    for uid, number, position, mask in frames:
        header = sources[uid]
        assert number == 1
        assert np.allclose(position, [float(v) for v in header.ImagePositionPatient])
        np.testing.assert_array_equal(mask, label[_slice_index(ct3slice["label"], header)])


def test_ct3slice_matches_dcmqi_seg_and_references_the_series(ct3slice):
    ours, theirs = ct3slice["seg"], pydicom.dcmread(ct3slice["folder"] / "liver.dcm")
    reference = {uid: mask for uid, _, _, mask in _frames(theirs)}
    for uid, _, _, mask in _frames(ours):
        np.testing.assert_array_equal(mask, reference[uid])
    source = next(iter(_sources(ct3slice["folder"] / "ct-3slice").values()))
    assert ours.StudyInstanceUID == source.StudyInstanceUID == theirs.StudyInstanceUID
    assert ours.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = ours.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert len(referenced.ReferencedInstanceSequence) == 3
    assert ours.SeriesInstanceUID != source.SeriesInstanceUID


def test_ct3slice_segment_carries_label_and_algorithm(ct3slice):
    segment = ct3slice["seg"].SegmentSequence[0]
    assert segment.SegmentLabel == "liver"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("radseg", radseg.__version__)
    assert ct3slice["seg"].SegmentationType == "BINARY"
    assert not list(ct3slice["path"].parent.glob(".*.tmp"))  # written atomically


def test_empty_frames_skipped_and_label_values_renumbered(tmp_path):
    folder = real_data("dcmqi_ct3slice")
    series = folder / "ct-3slice"
    grid = read_image(series)
    array = np.zeros(sitk.GetArrayViewFromImage(grid).shape, dtype=np.uint8)
    array[2, 100:120, 200:230] = 7  # tumour on the last z slice only; liver (value 3) nowhere
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(grid)
    seg = pydicom.dcmread(write_dicom_seg(label, series, {3: "liver", 7: "tumour"}, tmp_path / "s.dcm"))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]
    assert seg.SegmentSequence[1].SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == \
        "Morphologically Abnormal Structure"
    ((uid, number, _, mask),) = _frames(seg)
    assert number == 2
    assert _slice_index(label, _sources(series)[uid]) == 2
    np.testing.assert_array_equal(mask, array[2] == 7)


def test_label_off_the_series_grid_is_refused_and_nothing_is_written(tmp_path):
    folder = real_data("dcmqi_ct3slice")
    label = sitk.ReadImage(str(folder / "liver_seg.nrrd"))
    shifted = sitk.Image(label)
    shifted.SetOrigin(np.add(label.GetOrigin(), (0, 0, 2.0)).tolist())
    path = tmp_path / "seg.dcm"
    path.write_bytes(b"earlier")
    with pytest.raises(DataError, match=r"not on the grid .*origin \(-235.2, -226.8, -126.7\) vs "
                                        r"\(-235.2, -226.8, -128.7\)"):
        write_dicom_seg(shifted, folder / "ct-3slice", {1: "liver"}, path)
    with pytest.raises(DataError, match=r"shape \(512, 512, 2\) vs \(512, 512, 3\)"):
        write_dicom_seg(label[:, :, :2], folder / "ct-3slice", {1: "liver"}, path)
    with pytest.raises(DataError, match=r"label values \[1\] have no name"):
        write_dicom_seg(label, folder / "ct-3slice", {2: "spleen"}, path)
    with pytest.raises(DataError, match=r"integer class values, not float32"):
        write_dicom_seg(sitk.Cast(label, sitk.sitkFloat32), folder / "ct-3slice", {1: "liver"}, path)
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]


def test_series_without_pixel_data_is_refused(tmp_path):
    folder = real_data("dcmqi_ct3slice")
    series = tmp_path / "series"
    shutil.copytree(folder / "ct-3slice", series)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    label = sitk.ReadImage(str(folder / "liver_seg.nrrd"))
    with pytest.raises(DataError, match=r"DICOM files without pixel data \(e.g. 0[123].dcm: CT\)"):
        write_dicom_seg(label, series, {1: "liver"}, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_unevenly_spaced_series_is_refused(tmp_path):
    series = tmp_path / "series"
    shutil.copytree(real_data("dcmqi_ct3slice", "ct-3slice"), series)
    label = sitk.ReadImage(str(real_data("dcmqi_ct3slice", "liver_seg.nrrd")))
    moved = pydicom.dcmread(series / "01.dcm")  # top slice 0.5 mm further up: gaps 1.0 and 1.5 mm
    moved.ImagePositionPatient[2] += 0.5
    moved.save_as(series / "01.dcm")
    with pytest.raises(DataError, match=r"is not a regular grid: uneven slice positions"):
        write_dicom_seg(label, series, {1: "liver"}, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_totalseg_j2k_series_frames_match_the_nifti_in_physical_space(tmp_path):
    folder = real_data("totalseg_ct")
    series = folder / "example_ct_dicom"
    nifti = sitk.ReadImage(str(folder / "example_seg_dicom.nii.gz"))  # stored LAS
    grid = read_image(series)
    label = sitk.Resample(nifti, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    names = json.loads((folder / "class_map_total_and_total_mr.json").read_text())["total"]
    present = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(label)) if v]
    assert 5 in present and len(present) > 5
    seg = pydicom.dcmread(write_dicom_seg(label, series, {v: names[str(v)] for v in present},
                                          tmp_path / "seg.dcm"))
    nifti_array = sitk.GetArrayFromImage(nifti)
    sources = _sources(series)
    frames = _frames(seg)
    rows, columns = np.mgrid[0:seg.Rows, 0:seg.Columns]
    slices = {uid: nifti_array[_nifti_slice(nifti, header, rows, columns)] for uid, header in sources.items()}
    for uid, number, position, mask in frames:
        assert np.allclose(position, [float(v) for v in sources[uid].ImagePositionPatient])
        np.testing.assert_array_equal(mask, slices[uid] == present[number - 1])
    liver_frames = {uid for uid, number, *_ in frames if present[number - 1] == 5}
    assert len(liver_frames) == int(np.any(nifti_array == 5, axis=(1, 2)).sum())


def test_flipped_mr_series_frames_match_the_label_in_physical_space(tmp_path):
    series = real_data("torchio_mr_dicom", "dicom")  # unusual in-plane flip
    grid = read_image(series)
    array = np.zeros(sitk.GetArrayViewFromImage(grid).shape, dtype=np.uint8)  # (z, y, x)
    array[3:9, 10:40, 5:20] = 1  # off-centre blocks: a flip or transpose would move them
    array[10:12, 60:70, 50:80] = 2
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(grid)
    seg = pydicom.dcmread(write_dicom_seg(label, series, {1: "a", 2: "b"}, tmp_path / "seg.dcm"))
    sources = _sources(series)
    rows, columns = np.mgrid[0:seg.Rows, 0:seg.Columns]
    frames = _frames(seg)
    assert len(frames) == 6 + 2
    for uid, number, _, mask in frames:
        expected = array[_nifti_slice(label, sources[uid], rows, columns)] == number
        np.testing.assert_array_equal(mask, expected)


def _nifti_slice(nifti: sitk.Image, header: pydicom.Dataset, rows, columns) -> tuple:
    """Index arrays into the NIfTI (z, y, x) array for each pixel of a DICOM slice, by world position."""
    orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
    spacing = np.asarray(header.PixelSpacing, dtype=float)  # (row gap, column gap)
    world = (np.asarray(header.ImagePositionPatient, dtype=float)
             + columns[..., None] * spacing[1] * orientation[:3]
             + rows[..., None] * spacing[0] * orientation[3:])
    direction = np.asarray(nifti.GetDirection()).reshape(3, 3)
    index = (world - nifti.GetOrigin()) @ direction / np.asarray(nifti.GetSpacing())
    index = np.round(index).astype(int)
    return index[..., 2], index[..., 1], index[..., 0]


def test_highdicom_info_lines_are_quietened_while_writing(tmp_path, caplog):
    folder = real_data("dcmqi_ct3slice")
    label = sitk.ReadImage(str(folder / "liver_seg.nrrd"))
    with caplog.at_level(logging.INFO):
        write_dicom_seg(label, folder / "ct-3slice", {1: "liver"}, tmp_path / "liver.dcm")
    assert any(r.name == "radseg.pipeline.predict.dicom_seg" for r in caplog.records)  # our own line stays
    chatty = [r.getMessage() for r in caplog.records if r.name.startswith("highdicom") and r.levelno < logging.WARNING]
    assert chatty == []  # highdicom logs ~10 "copy attributes of module ..." INFO lines per SEG
    assert logging.getLogger("highdicom").level == logging.NOTSET  # restored afterwards
