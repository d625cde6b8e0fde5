"""DICOM series: finding them in a folder, and their geometry from slice headers alone.

Used by :func:`radseg.transforms.io.read_header` to describe a series cheaply and to flag the
geometries that break a plain 3D read: missing slices (uneven positions) and tilted gantries.
Such a series is refused (by check-data and by the reader) rather than read onto a regular grid
with its slices shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import pydicom
import SimpleITK as sitk

from radseg.errors import DataError

_GEOMETRY_TAGS = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]
#: relative tolerance on slice gaps before a series counts as unevenly spaced
_GAP_TOLERANCE = 0.01
#: fraction of a gap any slice may lie off its place on the regular grid
_DRIFT_TOLERANCE = 0.05
#: sine of the angle between the stacking direction and the slice normal that counts as tilt
_TILT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of a DICOM series in SimpleITK's conventions (LPS, index order x, y, z)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...]
    slices_even: bool
    gantry_tilt: bool


def list_dicom_series(folder: Union[str, Path]) -> dict[str, list[str]]:
    """The DICOM series in a folder (not its subfolders).

    Args:
        folder: a folder of DICOM files.

    Returns:
        SeriesInstanceUID -> its files, sorted along the slice normal (GDCM's order). A series
        without a SeriesInstanceUID is listed under "".
    """
    folder = str(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)) for uid in uids}


def series_files(folder: Path, series_uid: str | None,
                 series: dict[str, list[str]] | None = None) -> list[str]:
    """The files of the chosen (or only) DICOM series in a folder, sorted along the normal.

    Raises:
        DataError: no DICOM in the folder, an unknown ``series_uid``, or several series and no
            ``series_uid``.
    """
    series = list_dicom_series(folder) if series is None else series
    if not series:
        raise DataError(f"folder {folder} holds {_what_folder_holds(folder)}; expected one DICOM "
                        "series; fix: point to the folder that holds the .dcm slices, or to a NIfTI file")
    if series_uid is not None:
        if series_uid not in series:
            raise DataError(f"series {series_uid!r} is not in {folder}; it holds: "
                            f"{_describe_series(series)}; fix: choose one of these UIDs")
        return series[series_uid]
    if len(series) > 1:
        raise DataError(f"folder {folder} holds {len(series)} DICOM series: "
                        f"{_describe_series(series)}; expected one; fix: move each series into its "
                        "own folder or pass series_uid=")
    return next(iter(series.values()))


def _what_folder_holds(folder: Path) -> str:
    """What a folder without any image series holds: no files, no DICOM, or DICOM without pixels."""
    files = [p for p in folder.iterdir() if p.is_file()]
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError):
            continue
        kind = header.get("Modality") or header.get("SOPClassUID", "unknown kind")
        return (f"DICOM files without pixel data (e.g. {path.name}: {kind}), so no image series "
                "to read")
    return "no DICOM files" if files else "no files"


def _describe_series(series: dict[str, list[str]]) -> str:
    parts = []
    for uid, files in series.items():
        description = series_description(files[0])
        parts.append(f"{uid or '<no SeriesInstanceUID>'} ({len(files)} files, {description!r})")
    return "; ".join(parts)


def series_description(path: str) -> str:
    """SeriesDescription of one DICOM file, or "" when absent or unreadable."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesDescription"])
    except (OSError, pydicom.errors.InvalidDicomError):
        return ""
    return str(header.get("SeriesDescription", ""))


def slice_geometry(files: Sequence[str]) -> SliceGeometry:
    """Spacing, origin, direction and sanity flags of a series from its slice headers.

    Args:
        files: the slices of one series (any order).

    Returns:
        The geometry SimpleITK places the voxels with (so header and image agree): origin at the
        first slice, z along the slice normal, z spacing the distance from the first slice to
        the last over the number of gaps. ``slices_even`` and ``gantry_tilt`` say when that
        regular grid is not where the slices really are.

    Raises:
        KeyError, ValueError, OSError: a slice lacks geometry tags or cannot be read.
    """
    headers = [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_GEOMETRY_TAGS) for f in files]
    orientation = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    positions = np.asarray([h.ImagePositionPatient for h in headers], dtype=np.float64)
    order = np.argsort(positions @ normal)
    positions = positions[order]
    gaps = np.diff(positions @ normal)
    # ITK's ImageSeriesReader: |last - first| / (n - 1), whatever the gaps in between
    z_spacing = float(np.linalg.norm(positions[-1] - positions[0]) / len(gaps)) if len(gaps) else 1.0
    pixel_spacing = [float(v) for v in headers[0].PixelSpacing]  # (row gap, column gap) = (y, x)
    return SliceGeometry(
        spacing=(pixel_spacing[1], pixel_spacing[0], z_spacing),
        origin=tuple(float(v) for v in positions[0]),
        direction=tuple(tuple(float(v) for v in r) for r in np.stack([row, column, normal], axis=1)),
        slices_even=_even(gaps),
        gantry_tilt=_tilted(positions, normal),
    )


def _even(gaps: np.ndarray) -> bool:
    """Every gap within 1% of the median, and no slice off its regular place by 5% of a gap."""
    if len(gaps) < 2:
        return True
    median = np.median(gaps)
    step = gaps.sum() / len(gaps)
    drift = np.abs(np.cumsum(gaps) - step * np.arange(1, len(gaps) + 1)).max()
    return bool(median > 0 and np.all(np.abs(gaps - median) <= _GAP_TOLERANCE * median)
                and drift <= _DRIFT_TOLERANCE * step)


def irregular_reason(geometry: object) -> str:
    """Why a series' slices are not on a regular grid ("" when they are), for errors.

    Args:
        geometry: a :class:`SliceGeometry` or an ``ImageHeader`` (both carry ``slices_even`` and
            ``gantry_tilt``; a file's header has neither and is regular).
    """
    reasons = []
    if getattr(geometry, "gantry_tilt", False):
        reasons.append("gantry tilt: the slices are not stacked along their normal, so a 3D grid "
                       "would shift each slice sideways")
    if not getattr(geometry, "slices_even", True):
        reasons.append("uneven slice positions (missing slices, or a series of several spacings), "
                       "so a regular grid would put slices at the wrong height")
    return "; ".join(reasons)


#: how to get a regular series, as dcm2niix does it
IRREGULAR_FIX = ("convert the series with dcm2niix, which writes a copy resampled onto a regular grid "
                 "(*_Tilt_1.nii for a tilted gantry, *_Eq_1.nii for uneven slices), and use that file; "
                 "or restore the missing slices")


def _tilted(positions: np.ndarray, normal: np.ndarray) -> bool:
    if len(positions) < 2:
        return False
    stack = positions[-1] - positions[0]
    length = np.linalg.norm(stack)
    if length == 0:
        return False
    return bool(np.linalg.norm(np.cross(stack / length, normal)) > _TILT_TOLERANCE)


def read_geometry(folder: Path, files: list[str]) -> SliceGeometry:
    """:func:`slice_geometry`, with unreadable slice headers as a DataError naming the folder."""
    try:
        return slice_geometry(files)
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise DataError(f"cannot read the DICOM slice positions in {folder}: {err}; expected "
                        "ImagePositionPatient/ImageOrientationPatient/PixelSpacing on every slice; "
                        "fix: re-export the series") from err


def refuse_irregular(folder: Path, geometry: SliceGeometry) -> None:
    """Raise a DataError with the reason and the fix when the slices are not a regular grid."""
    reason = irregular_reason(geometry)
    if reason:
        raise DataError(f"DICOM series {folder} is not a regular grid: {reason}; expected slices evenly "
                        f"stacked along their normal; fix: {IRREGULAR_FIX}")
