"""Check every case of a dataset before any expensive work, and report every problem at once.

Run by ``radseg check-data DATASET`` and at the start of training. Each case is checked from its
headers first (cheap: existence, readability, dimensions, channel count, image/label grid), then
from its arrays, one case at a time (non-finite values, label values, empty labels, duplicates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from radseg.errors import DataError
from radseg.pipeline.data import datalist
from radseg.pipeline.data.data_report import EMPTY_LABEL, DataReport, Problem  # noqa: F401 - public here
from radseg.pipeline.data.voxel_stats import content_digest, count_non_finite, unique_values
from radseg.transforms.dicom import IRREGULAR_FIX, irregular_reason
from radseg.transforms.grid import grid_differences
from radseg.transforms.io import list_dicom_series, read_header, read_image
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)

@dataclass
class _Context:
    root: Path
    labels: dict[int, str]
    num_channels: int
    tolerance: float
    seen_paths: dict[str, str] = field(default_factory=dict)
    seen_hashes: dict[str, str] = field(default_factory=dict)


def check_dataset(path: str | Path, *, tolerance: float = 1e-3) -> DataReport:
    """Check every training and test case of a dataset; never stops at the first problem.

    Args:
        path: dataset root (MSD, nnU-Net, folders or CSV layout).
        tolerance: largest difference (mm, or direction cosine) allowed between the grids of a
            case's channel files; a label may store the image's voxels in another axis order
            (flipped or permuted axes), and its voxel centres may be up to this many mm or a
            twentieth of the image's smallest spacing (the larger) from the image's.

    Returns:
        The report; ``report.ok`` is False when any case has an error.

    Raises:
        DataError: the dataset cannot be discovered at all (no dataset.json, empty folder, ...).
    """
    spec = _discover_keeping_missing_files(path)
    cases = list(spec.training) + list(spec.test)
    context = _Context(Path(spec.root), dict(spec.labels), len(spec.channel_names), tolerance)
    report = DataReport(root=Path(spec.root), num_cases=len(cases))
    for case in progress_bar(cases, desc="checking cases", unit="case", leave=False):
        report.problems.extend(_check_case(case, context))
    logger.info("%s in %s", report.summary(), spec.root)
    return report


def _discover_keeping_missing_files(path: str | Path) -> Any:
    """``discover_dataset``, but missing files are left for the per-case checks (one line each).

    ``discover_dataset`` refuses a dataset with missing files in one DataError; the data check
    reports them beside every other problem instead.
    """
    return datalist.discover_dataset(path, check_files=False)


def _check_case(case: Any, ctx: _Context) -> list[Problem]:
    problems: list[Problem] = []
    headers: dict[Path, Any] = {}
    for file in [*case.images, *([case.label] if case.label is not None else [])]:
        header, found = _read_header_checked(case.case_id, Path(file), ctx)
        problems += found
        if header is not None:
            headers[Path(file)] = header
    image_headers = [headers.get(Path(f)) for f in case.images]
    if all(h is not None for h in image_headers):
        problems += _check_image_headers(case, image_headers, ctx)
    image_ok = not any(p.severity == "error" for p in problems)
    label_header = headers.get(Path(case.label)) if case.label is not None else None
    if image_ok and label_header is not None:
        problems += _check_label_grid(case.case_id, Path(case.label), label_header, image_headers[0], ctx)
    if all(h is not None for h in image_headers):
        problems += _check_image_arrays(case, ctx)
    if label_header is not None:
        problems += _check_label_array(case.case_id, Path(case.label), ctx)
    return problems


def _problem(severity: str, case_id: str, file: Path, ctx: _Context, message: str, fix: str) -> Problem:
    try:
        shown = str(Path(file).absolute().relative_to(ctx.root.absolute()))
    except ValueError:
        shown = str(file)
    return Problem(severity, case_id, shown, message, fix)


def _read_header_checked(case_id: str, file: Path, ctx: _Context) -> tuple[Any, list[Problem]]:
    """The header of one image or label path, or None with the problems that stop reading it."""
    if not file.exists():
        return None, [_problem("error", case_id, file, ctx, "file is missing",
                               "restore the file or remove the case from the dataset")]
    if file.is_dir():
        problems = _check_dicom_series_count(case_id, file, ctx)
        if problems:
            return None, problems
    try:
        header = read_header(file)
    except (DataError, RuntimeError, OSError, ValueError) as err:
        return None, [_problem("error", case_id, file, ctx, f"cannot read the header ({_first_line(err)})",
                               "re-export or re-download the file")]
    problems = _dicom_geometry_errors(case_id, file, header, ctx)
    return (None if problems else header), problems


def _check_dicom_series_count(case_id: str, folder: Path, ctx: _Context) -> list[Problem]:
    """An error unless the folder holds exactly one DICOM series."""
    series = list_dicom_series(folder)
    if len(series) == 1:
        return []
    if not series:
        return [_problem("error", case_id, folder, ctx, "folder holds no DICOM series",
                         "put the .dcm files of one series in the folder, or point to a NIfTI file")]
    uids = ", ".join(sorted(uid or "<no SeriesInstanceUID>" for uid in series))
    return [_problem("error", case_id, folder, ctx, f"DICOM folder holds {len(series)} series ({uids})",
                     "keep one series per folder: move the others into folders of their own")]


def _dicom_geometry_errors(case_id: str, file: Path, header: Any, ctx: _Context) -> list[Problem]:
    """An error for a DICOM series whose slices are not a regular grid (never read with shifted slices)."""
    reason = irregular_reason(header)
    if not reason:
        return []
    return [_problem("error", case_id, file, ctx, f"DICOM slices are not a regular grid: {reason}", IRREGULAR_FIX)]


def _check_image_headers(case: Any, headers: list[Any], ctx: _Context) -> list[Problem]:
    problems = []
    for file, header in zip(case.images, headers):
        spatial = [s for s in header.shape[:3] if s > 1]
        if len(header.shape) < 3 or len(spatial) < 3:
            problems.append(_problem("error", case.case_id, Path(file), ctx,
                                     f"image is not 3D: shape {tuple(header.shape)}",
                                     "supply the whole volume (x, y, z), not a single slice"))
    channels = sum(_channels(h) for h in headers)
    if not problems and ctx.num_channels and channels != ctx.num_channels:
        problems.append(_problem("error", case.case_id, Path(case.images[0]), ctx,
                                 f"case has {channels} image channels but dataset.json declares {ctx.num_channels}",
                                 "give every case the declared channels (one file per channel, or one 4D file)"))
    if not problems:
        for file, header in zip(case.images[1:], headers[1:]):
            problems += _check_grid(case.case_id, Path(file), header, headers[0], ctx)
    return problems


def _channels(header: Any) -> int:
    return max(1, int(header.num_components))


def _check_label_grid(case_id: str, file: Path, header: Any, reference: Any, ctx: _Context) -> list[Problem]:
    """An error when the label's voxel centres are not the image's (any array order is fine)."""
    tolerance = max(ctx.tolerance, min(reference.spacing[:3]) / 20)
    differences = grid_differences(header, reference, tolerance)
    if not differences:
        return []
    return [_problem("error", case_id, file, ctx, "not on the image's grid: " + "; ".join(differences),
                     "resample it onto the image's grid (same voxel centres: shape, spacing, origin and "
                     "direction, up to flipped or permuted axes)")]


def _check_grid(case_id: str, file: Path, header: Any, reference: Any, ctx: _Context) -> list[Problem]:
    """One problem listing every way a channel file's grid differs from the first's, or none.

    Channels are stacked array on array, so they must share the array order too.
    """
    tol = ctx.tolerance
    differences = []
    if tuple(header.shape[:3]) != tuple(reference.shape[:3]):
        differences.append(f"shape {tuple(header.shape[:3])} vs image {tuple(reference.shape[:3])}")
    for name in ("spacing", "origin", "direction"):
        mine = np.asarray(getattr(header, name), dtype=float).ravel()
        theirs = np.asarray(getattr(reference, name), dtype=float).ravel()
        if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=0.0, atol=tol):
            differences.append(f"{name} {_fmt(mine)} vs image {_fmt(theirs)}")
    if not differences:
        return []
    return [_problem("error", case_id, file, ctx, "not on the image's grid: " + "; ".join(differences),
                     "resample it onto the image's grid (same shape, spacing, origin and direction)")]


def _check_image_arrays(case: Any, ctx: _Context) -> list[Problem]:
    """Readability and finiteness of every channel; duplicates of the first channel."""
    problems = []
    for index, file in enumerate(case.images):
        array, problem = _read_array(case.case_id, Path(file), ctx)
        if problem is not None:
            problems.append(problem)
            continue
        bad = count_non_finite(file, array)
        if bad:
            problems.append(_problem("error", case.case_id, Path(file), ctx, f"{bad} voxels are NaN or infinite",
                                     "replace them (e.g. with the background value) and save again"))
        if index == 0:
            problems += _check_duplicate(case.case_id, Path(file), array, ctx)
        del array
    return problems


def _check_duplicate(case_id: str, file: Path, array: np.ndarray, ctx: _Context) -> list[Problem]:
    resolved = str(file.resolve())
    content = content_digest(array)
    other = ctx.seen_paths.get(resolved)
    if other is None:
        other = ctx.seen_hashes.get(content)
        what = "has the same voxels as the image of case"
    else:
        what = "uses the same image file as case"
    ctx.seen_paths.setdefault(resolved, case_id)
    ctx.seen_hashes.setdefault(content, case_id)
    if other is None:
        return []
    return [_problem("warning", case_id, file, ctx, f"duplicate: {what} {other}",
                     "remove one of the two cases (a duplicate can leak between train and validation folds)")]


def _check_label_array(case_id: str, file: Path, ctx: _Context) -> list[Problem]:
    array, problem = _read_array(case_id, file, ctx)
    if problem is not None:
        return [problem]
    values = unique_values(array)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        return [_problem("error", case_id, file, ctx, f"label has non-integer values {_fmt(values[:8])}",
                         "save the label as integers (nearest-neighbour resampling, no interpolation)")]
    found = {int(v) for v in values}
    declared = sorted(ctx.labels)
    if declared and not found <= set(declared):
        return [_problem("error", case_id, file, ctx,
                         f"label values {_braces(found)} in case {case_id} exceed the {len(declared)} classes "
                         f"declared in dataset.json ({', '.join(map(str, declared))})",
                         "remap the extra values or declare their classes in dataset.json's labels")]
    if found <= {0}:
        return [_problem("warning", case_id, file, ctx, EMPTY_LABEL,
                         "check the label; an empty case only teaches background")]
    return []


def _read_array(case_id: str, file: Path, ctx: _Context) -> tuple[np.ndarray | None, Problem | None]:
    try:
        return sitk.GetArrayFromImage(read_image(file)), None
    except (DataError, RuntimeError, OSError, ValueError, EOFError) as err:
        return None, _problem("error", case_id, file, ctx, f"cannot read the voxels, file truncated or damaged "
                              f"({_first_line(err)})", "re-export or re-download the file")


def _braces(values: set[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in np.asarray(values).ravel()) + ")"


def _first_line(err: BaseException) -> str:
    """The error's reason: its first line without the reader's own "expected ...; fix ..." tail."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line.split("; expected")[0].split("; fix")[0]
