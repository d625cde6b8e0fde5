"""radseg predict's optional outputs: a DICOM-SEG that lands on the source frames, a quick-look PNG."""

from __future__ import annotations

import numpy as np
import pydicom
import SimpleITK as sitk

from conftest import real_data
from predict_helpers import oracle_model
from radseg.pipeline.predict.extra_outputs import dicom_seg_writer, quicklook_writer
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
