"""Which cases ``radseg review`` shows: predictions paired with their scans and, when given, their truth.

Predictions are found as ``radseg evaluate`` finds them (:func:`radseg.pipeline.evaluate.inputs.prediction_files`),
truth cases are paired as it pairs them (:func:`radseg.pipeline.evaluate.inputs.gather_inputs`), and
scans are found as ``radseg predict`` finds them (:func:`radseg.pipeline.predict.inputs.find_cases`):
files named after the case (``<case id>.nii.gz``, or nnU-Net's ``<case id>_0000.nii.gz``) and DICOM
series named as predict names its outputs. Every grid is checked before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from radseg.errors import DataError
from radseg.pipeline.evaluate.geometry import grid_difference
from radseg.pipeline.evaluate.inputs import gather_inputs, parse_labels, prediction_files
from radseg.pipeline.predict.inputs import find_cases
from radseg.transforms.io import read_header

logger = logging.getLogger(__name__)

#: nnU-Net's channel suffix on image file names (``case_0000.nii.gz`` is channel 0 of ``case``)
_CHANNEL_SUFFIX = "_0000"


@dataclass
class ReviewCase:
    """One case to review: its prediction, and its scan, truth and probability map where present."""

    case_id: str
    pred: Path
    image: Path | None = None
    series_uid: str | None = None
    truth: Path | None = None
    probabilities: Path | None = None


@dataclass
class ReviewInputs:
    """The cases, the label map (background included) and notes for the page."""

    cases: list[ReviewCase]
    labels: dict[int, str]
    notes: list[str]


def gather_review_cases(pred: str | Path, truth: str | Path | None = None, images: str | Path | None = None,
                        labels: str | dict | None = None) -> ReviewInputs:
    """Pair every prediction with its scan and truth.

    Args:
        pred: the prediction folder (``radseg predict --output``).
        truth: a folder of label files or a dataset, or None (prediction only: volumes, no scores).
        images: a folder of scans (files or DICOM series), or None (the dataset's, when ``truth``
            is a dataset; else the masks are shown on a blank background).
        labels: the label map (see :func:`radseg.pipeline.evaluate.inputs.parse_labels`).

    Returns:
        The cases sorted by id, the label map, and notes (cases left out, and why).

    Raises:
        DataError: a folder is missing or empty, or no prediction matches a truth case.
    """
    notes = []
    if truth is None:
        found = prediction_files(pred)
        cases = [ReviewCase(cid, path, probabilities=prob) for cid, (path, prob) in sorted(found.items())]
        label_map = parse_labels(labels) if labels is not None else {0: "background", 1: "foreground"}
    else:
        inputs = gather_inputs(pred, truth, labels)
        cases = [ReviewCase(p.case_id, p.pred, image=p.image, truth=p.truth, probabilities=p.probabilities)
                 for p in inputs.pairs if p.pred is not None]
        label_map = inputs.labels
        if inputs.missing:
            notes.append(f"truth cases without a prediction (not shown): {', '.join(inputs.missing)}")
        if inputs.extra_predictions:
            notes.append(f"predictions without a truth case (not shown): {', '.join(inputs.extra_predictions)}")
    if images is not None:
        _attach_images(cases, Path(images).expanduser())
    without = [case.case_id for case in cases if case.image is None]
    if without:
        notes.append(f"no scan found (masks shown on a blank background): {', '.join(without)}")
    return ReviewInputs(cases, label_map, notes)


def _attach_images(cases: list[ReviewCase], folder: Path) -> None:
    """Give each case the scan of the same name in ``folder`` (``name`` or ``name_0000``)."""
    scans = {}
    for found in find_cases([folder]):
        name = found.name[: -len(_CHANNEL_SUFFIX)] if found.name.endswith(_CHANNEL_SUFFIX) else found.name
        scans.setdefault(name, found)
        scans[found.name] = found
    for case in cases:
        scan = scans.get(case.case_id)
        if scan is not None:
            case.image, case.series_uid = scan.path, scan.series_uid


def check_grids(cases: list[ReviewCase]) -> None:
    """Refuse cases whose scan, prediction and truth are not on one grid (headers only, every case).

    Raises:
        DataError: one line per refused case, naming its files and both grids.
    """
    problems = []
    for case in cases:
        pred = read_header(case.pred)
        others = [("truth", case.truth, None), ("image", case.image, case.series_uid)]
        for what, path, series in others:
            if path is None:
                continue
            difference = grid_difference(pred, read_header(path, series))
            if difference:
                problems.append(f"case {case.case_id}: prediction {case.pred} and {what} {path} are not on the "
                                f"same grid: {difference}")
    if len(problems) == 1:
        raise DataError(f"{problems[0]}; predict on the case's own scan (nothing was written)")
    if problems:
        raise DataError(f"{len(problems)} case(s) are not on one grid (nothing was written): " + " | ".join(problems))
