"""DICOM-SEG for a label map that lies on a DICOM series' grid (highdicom).

Each frame of the SEG references the source slice it was cut from. The slice is found by its
ImagePositionPatient on the label's grid, never by file or array order, so a series stored
head-first, feet-first or shuffled in its folder gets the right frames. Segments are numbered
1..N in the order of the label values named in ``label_names`` (every named class gets a segment,
present or not, so segment k means the same class in every case); frames without any segment
are left out.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from pathlib import Path
from typing import Iterator

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

import radseg
from radseg.atomic import atomic_path
from radseg.errors import DataError
from radseg.transforms import dicom as _dicom

logger = logging.getLogger(__name__)

#: how far (in voxels) a slice position may sit off the label's grid and still be that slice
_INDEX_TOLERANCE = 0.05
#: series number of the SEG: the source's plus this, so viewers list it after the source
_SERIES_NUMBER_OFFSET = 1000
_ABNORMAL = {"Tumor", "Neoplasm", "Lesion"}
_ALIASES = {"Tumour": "Tumor"}


def write_dicom_seg(label: sitk.Image, series_dir: str | Path, label_names: dict[int, str],
                    path: str | Path, *, series_uid: str | None = None,
                    series_description: str = "radseg segmentation") -> Path:
    """Write a DICOM-SEG (BINARY) of ``label`` that references the DICOM series it was made on.

    Args:
        label: integer label map on the series' physical grid, as
            :func:`radseg.transforms.io.read_image` returns the series (same shape, spacing,
            origin and direction).
        series_dir: the folder holding the source series.
        label_names: label value -> class name, e.g. ``{1: "liver", 2: "tumour"}``; value 0 is
            background and gets no segment.
        path: the .dcm file to write (replaced atomically if it exists).
        series_uid: which series of ``series_dir`` when it holds several.
        series_description: SeriesDescription of the SEG.

    Returns:
        ``path``.

    Raises:
        DataError: the folder holds no image series (e.g. DICOM without pixel data), the series
            is not a regular grid (tilted, uneven), the label is not on the series' grid, or the
            label holds values without a name.
    """
    series_dir, path = Path(series_dir), Path(path)
    files = _dicom.series_files(series_dir, series_uid)
    geometry = _dicom.read_geometry(series_dir, files)
    _dicom.refuse_irregular(series_dir, geometry)  # as the reader does: no regular grid, no label
    sources = _read_sources(series_dir, files)
    _check_grid(label, series_dir, geometry, sources)
    values = sorted(v for v in label_names if v != 0)
    frames = _segment_numbers(sitk.GetArrayViewFromImage(label), values, label_names)
    # frame k of the pixel array goes with source k: sort the sources onto the label's z axis
    sources = [sources[i] for i in np.argsort(_slice_indices(label, sources, series_dir))]
    with warnings.catch_warnings(), _quiet_highdicom():  # a source's one-word PatientName is its own business
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(sources, frames, values, label_names, series_description)
        with atomic_path(path) as tmp:
            seg.save_as(str(tmp))
    # the name, not the path: radseg predict writes it in a staging folder, then moves it
    logger.info("DICOM-SEG %s of %s: %d segments, %d of %d slices hold a segment", path.name, series_dir,
                len(values), int(seg.NumberOfFrames), len(sources))
    return path


@contextlib.contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom at WARNING while the SEG is built: its INFO lines (one per frame and segment) flood the log."""
    highdicom_logger = logging.getLogger("highdicom")
    level = highdicom_logger.level
    highdicom_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        highdicom_logger.setLevel(level)


def _segmentation(sources: list[pydicom.Dataset], frames: np.ndarray, values: list[int],
                  label_names: dict[int, str], series_description: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_describe(n, label_names[v]) for n, v in enumerate(values, start=1)],
        series_instance_uid=hd.UID(), series_number=_series_number(sources[0]),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="radseg",
        manufacturer_model_name="radseg", software_versions=radseg.__version__,
        device_serial_number="none", series_description=series_description,
        content_label="RADSEG", omit_empty_frames=bool(frames.any()),  # a SEG needs >= 1 frame
        specific_character_set="ISO_IR 192")  # UTF-8: holds any source's names


def _read_sources(series_dir: Path, files: list[str]) -> list[pydicom.Dataset]:
    """The source slices' headers; pixel data stays on disk (deferred, never decoded).

    Files without pixel data never get here: the series listing (GDCM) leaves them out, and a
    folder of only such files is refused by :func:`radseg.transforms.dicom.series_files`.
    """
    sources = [pydicom.dcmread(f, defer_size=1024) for f in files]
    _fill_missing_uids(sources, files, series_dir)
    return sources


def _fill_missing_uids(sources: list[pydicom.Dataset], files: list[str], series_dir: Path) -> None:
    """Fill UIDs that anonymisers blank, in memory only (the source files are never written).

    SOP class and instance UIDs come from each file's meta header, where they are kept; blank
    study and series UIDs get UIDs derived from the slices' SOP instance UIDs (the same on every
    run), and a warning, since no viewer can link the SEG to a series that has none.
    """
    for path, ds in zip(files, sources):
        for tag, meta in (("SOPClassUID", "MediaStorageSOPClassUID"),
                          ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not ds.get(tag):
                value = ds.file_meta.get(meta) if hasattr(ds, "file_meta") else None
                if not value:
                    raise DataError(f"DICOM slice {path} has no {tag}; a DICOM-SEG references its "
                                    "source slices by it; fix: re-export the series with its UIDs")
                setattr(ds, tag, value)
    instances = sorted(str(ds.SOPInstanceUID) for ds in sources)
    for tag in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not all(ds.get(tag) for ds in sources):
            uid = pydicom.uid.generate_uid(entropy_srcs=["radseg", tag, *instances])
            logger.warning("DICOM series in %s has no %s (anonymised?); the DICOM-SEG uses %s, "
                           "which no viewer can link to the source series", series_dir, tag, uid)
            for ds in sources:
                setattr(ds, tag, uid)


def _check_grid(label: sitk.Image, series_dir: Path, geometry: _dicom.SliceGeometry,
                sources: list[pydicom.Dataset]) -> None:
    """Raise if ``label``'s shape, spacing, origin or direction differ from the series'."""
    expected = {
        "shape": (int(sources[0].Columns), int(sources[0].Rows), len(sources)),
        "spacing": geometry.spacing, "origin": geometry.origin,
        "direction": tuple(np.ravel(geometry.direction)),
    }
    got = {"shape": label.GetSize(), "spacing": label.GetSpacing(), "origin": label.GetOrigin(),
           "direction": label.GetDirection()}
    tolerance = {"spacing": 1e-3 * min(geometry.spacing), "origin": 1e-2 * min(geometry.spacing),
                 "direction": 1e-4}
    differ = [name for name in expected if len(got[name]) != len(expected[name]) or not np.allclose(
        got[name], expected[name], rtol=0, atol=tolerance.get(name, 0))]
    if differ:
        details = "; ".join(f"{name} {_fmt(got[name])} vs {_fmt(expected[name])}" for name in differ)
        raise DataError(f"label is not on the grid of the DICOM series in {series_dir}: {details} "
                        "(label vs series); expected the series' own grid; fix: resample the label "
                        "onto the series (nearest neighbour) before writing a DICOM-SEG")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _segment_numbers(array: np.ndarray, values: list[int], label_names: dict[int, str]) -> np.ndarray:
    """(z, y, x) label values -> segment numbers 1..N (uint8/uint16), 0 stays background."""
    if array.dtype.kind not in "ui":
        raise DataError(f"label must hold integer class values, not {array.dtype}; fix: pass the "
                        "uint8 label map (argmax), not probabilities")
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:  # O(n), unlike np.unique's sort
        present = np.flatnonzero(np.bincount(array.ravel()))
    else:
        present = np.unique(array)
    unnamed = sorted(int(v) for v in present if v != 0 and int(v) not in label_names)
    if unnamed or present.min() < 0:
        raise DataError(f"label values {unnamed or sorted(present.tolist())} have no name in "
                        f"label_names (named: {sorted(label_names)}); expected every non-zero value "
                        "named; fix: pass the checkpoint's label names")
    lut = np.zeros(int(present.max()) + 1, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for number, value in enumerate(values, start=1):
        if value < len(lut):
            lut[value] = number
    return lut[array]


def _slice_indices(label: sitk.Image, sources: list[pydicom.Dataset], series_dir: Path) -> np.ndarray:
    """For each source slice, the z index of the label's grid that its position falls on."""
    indices = []
    for ds in sources:
        point = [float(v) for v in ds.ImagePositionPatient]
        index = np.asarray(label.TransformPhysicalPointToContinuousIndex(point))
        nearest = np.round(index)
        if np.any(np.abs(index - nearest) > _INDEX_TOLERANCE) or nearest[0] != 0 or nearest[1] != 0:
            raise DataError(
                f"slice {ds.SOPInstanceUID} in {series_dir} at {point} falls at index "
                f"{_fmt(index)} of the label's grid, not on a slice of it (unevenly spaced or tilted "
                "series?); expected one label slice per source slice; fix: keep the NIfTI mask for "
                "this series, a DICOM-SEG cannot reference it slice by slice")
        indices.append(int(nearest[2]))
    if sorted(indices) != list(range(label.GetSize()[2])):
        raise DataError(f"the slices of {series_dir} do not cover the label's {label.GetSize()[2]} "
                        f"slices once each (they fall on {sorted(indices)}); fix: remove duplicate "
                        "slices from the folder")
    return np.asarray(indices)


def _describe(number: int, name: str) -> hd.seg.SegmentDescription:
    property_type = _property_type(name)
    if property_type is None:
        category, property_type = codes.SCT.Tissue, codes.SCT.Tissue
    elif property_type.meaning in _ABNORMAL:
        category = codes.SCT.MorphologicallyAbnormalStructure
    else:
        category = codes.SCT.AnatomicalStructure
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64], segmented_property_category=category,
        segmented_property_type=property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="radseg", version=radseg.__version__, family=codes.cid7162.ArtificialIntelligence))


def _property_type(name: str):
    """The SNOMED CT code whose name matches ``name`` ("liver" -> Liver), or None."""
    words = [w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    for key in ("".join(words), words[0] if words else ""):
        try:
            return getattr(codes.SCT, _ALIASES.get(key, key))
        except AttributeError:
            continue
    return None


def _series_number(source: pydicom.Dataset) -> int:
    number = source.get("SeriesNumber")
    return (int(number) if number not in (None, "") else 0) + _SERIES_NUMBER_OFFSET
