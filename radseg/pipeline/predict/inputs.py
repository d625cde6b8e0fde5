"""Which scans a ``radseg predict`` call covers: files, DICOM series folders, folders of both.

A NIfTI/NRRD/MHA file is one case named by its file name. A folder is searched recursively; each
image file in it is a case, and each DICOM series in it is a case named by its series description
and SeriesInstanceUID (a study folder with three series gives three cases). Cases come back sorted
by name, so every process of a ``torchrun`` job sees the same list.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from radseg.errors import DataError
from radseg.transforms.dicom import list_dicom_series, series_description
from radseg.transforms.io import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

#: single-file image formats (a lone .dcm file is read as a one-slice DICOM by SimpleITK, but in
#: folders .dcm files are grouped into series instead)
FILE_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s != ".dcm")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class PredictCase:
    """One scan to predict.

    Attributes:
        name: the output name (file stem, or series description + UID for DICOM).
        path: the image file or the DICOM folder.
        series_uid: the SeriesInstanceUID for DICOM input, else None.
        files: the slices of a DICOM series (sorted along the normal), as found.
    """

    name: str
    path: Path
    series_uid: str | None = None
    files: tuple[str, ...] = ()

    @property
    def is_dicom(self) -> bool:
        """True for a DICOM series."""
        return self.series_uid is not None


def find_cases(inputs: Sequence[str | Path], exclude: str | Path | None = None) -> list[PredictCase]:
    """Every case under the given paths, sorted by name, names made unique.

    Args:
        inputs: files, DICOM series folders, or folders holding either (searched recursively).
        exclude: a folder not to search (the output folder, when it lies inside an input).

    Returns:
        The cases.

    Raises:
        DataError: a path does not exist, or holds no scan at all.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    cases: list[PredictCase] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"input {path} does not exist; expected a NIfTI/NRRD/MHA file, a DICOM series "
                            "folder or a folder of them; fix the path")
        pixelless: list[Path] = []
        found = [_file_case(path)] if path.is_file() else list(_folder_cases(path, excluded, pixelless))
        for folder in pixelless:
            logger.warning("folder %s holds DICOM files but no image series with pixel data; skipped", folder)
        if not found and pixelless:
            raise DataError(f"input {path} holds DICOM files but no image series with pixel data (in "
                            f"{pixelless[0]}: structured reports, segmentations or other non-image objects?); "
                            "expected a CT/MR image series; fix: point to the folder with the image slices")
        if not found:
            raise DataError(f"input {path} holds no scan (no {', '.join(FILE_SUFFIXES)} file and no DICOM "
                            "series); fix: point to the folder with the images")
        cases.extend(found)
    return _unique(sorted(cases, key=lambda case: (case.name, str(case.path))))


def output_stem(path: Path) -> str:
    """The name of a case read from a file: its name without the image suffix."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return _safe(name[: -len(suffix)])
    return _safe(path.stem)


def _file_case(path: Path) -> PredictCase:
    return PredictCase(name=output_stem(path), path=path)


def _folder_cases(root: Path, excluded: Path | None, pixelless: list[Path]) -> Iterable[PredictCase]:
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if excluded is not None and here.resolve() == excluded:
            subfolders[:] = []
            continue
        subfolders.sort()
        image_files = sorted(f for f in files if f.lower().endswith(FILE_SUFFIXES) and not f.startswith("."))
        yield from (_file_case(here / f) for f in image_files)
        others = sorted(f for f in files if f not in image_files and not f.startswith("."))
        if others:  # DICOM series, perhaps
            series = list_dicom_series(here)
            if not series and _is_dicom(here / others[0]):
                pixelless.append(here)
            yield from _series_cases(here, series)


def _is_dicom(path: Path) -> bool:
    try:
        pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError):
        return False
    return True


def _series_cases(folder: Path, series: dict[str, list[str]]) -> Iterable[PredictCase]:
    for uid, files in sorted(series.items()):
        description = series_description(files[0]) or "series"
        yield PredictCase(name=_safe(f"{description}_{uid}" if uid else description), path=folder,
                          series_uid=uid, files=tuple(files))


def _safe(name: str) -> str:
    """A file-system-safe name: letters, digits, dot, dash and underscore."""
    return _UNSAFE.sub("_", name).strip("._") or "case"


def _unique(cases: list[PredictCase]) -> list[PredictCase]:
    """Rename cases whose names clash by the folder they came from (deterministically)."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.name] = counts.get(case.name, 0) + 1
    seen: set[str] = set()
    unique = []
    for case in cases:
        name = case.name
        if counts[name] > 1:
            name = _safe(f"{case.path.parent.name if not case.is_dicom else case.path.name}_{name}")
        base, index = name, 2
        while name in seen:
            name, index = f"{base}_{index}", index + 1
        seen.add(name)
        unique.append(PredictCase(name=name, path=case.path, series_uid=case.series_uid, files=case.files))
    if len(unique) != len({c.name for c in cases}):
        logger.info("some cases share a file name; their outputs are named after their folders")
    return unique
