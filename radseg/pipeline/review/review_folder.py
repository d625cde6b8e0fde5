"""``radseg review``: a folder of browser pages to review predictions, worst case first.

Every input is checked (pairs, grids) before anything is written; the pages are written into a
hidden folder beside ``output`` and renamed into place at the end, so a refusal or a failure leaves
nothing half-written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from radseg.atomic import atomic_folder, holds_files
from radseg.errors import DataError
from radseg.pipeline.review import pages
from radseg.pipeline.review.cases import ReviewInputs, check_grids, gather_review_cases
from radseg.pipeline.review.payload import case_payload
from radseg.pipeline.review.scoring import case_scores, worst_dice
from radseg.pipeline.review.volumes import MAX_DISPLAY_VOXELS, load_volumes
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class ReviewResult:
    """What :func:`review_folder` wrote."""

    output: Path
    num_cases: int
    downsampled: list[str]
    notes: list[str]

    @property
    def index(self) -> Path:
        """The index page (open it by double-click, or serve the folder)."""
        return self.output / "index.html"

    def __str__(self) -> str:
        lines = [f"wrote the review of {self.num_cases} case(s) to {self.output}; open {self.index}"]
        if self.downsampled:
            lines.append(f"shown subsampled (display only): {', '.join(self.downsampled)}")
        return "\n".join(lines + self.notes)


def review_folder(pred: str | Path, output: str | Path, *, truth: str | Path | None = None,
                  images: str | Path | None = None, labels: str | dict | None = None, overwrite: bool = False,
                  max_voxels: int = MAX_DISPLAY_VOXELS, progress: bool = True) -> ReviewResult:
    """Write the review pages of every prediction in ``pred``.

    Args:
        pred: the prediction folder (``radseg predict --output``), with optional probability maps.
        output: the folder for ``index.html``, ``case.html`` and the data scripts.
        truth: a folder of label files or a dataset; None shows predictions alone (volumes only).
        images: a folder of scans (files or DICOM series) named as the cases.
        labels: the label map, overriding the truth's (dict, JSON file, or ``"1=liver,2=tumour"``).
        overwrite: replace an earlier review in ``output``.
        max_voxels: volumes above this are shown subsampled (display only).
        progress: show a progress bar over cases.

    Returns:
        Where the pages are and which cases are shown subsampled.

    Raises:
        DataError: bad input (nothing is written then).
    """
    start = time.perf_counter()
    output = Path(output).expanduser()
    check_output(output, overwrite)
    inputs = gather_review_cases(pred, truth, images, labels)
    check_grids(inputs.cases)
    # written beside the output, then renamed onto it: the earlier review is removed only once replaced
    with atomic_folder(output, overwrite=True) as staging:
        downsampled = _write_pages(staging, inputs, max_voxels, progress)
    logger.info("wrote the review of %d case(s) in %.1f s", len(inputs.cases), time.perf_counter() - start)
    return ReviewResult(output, len(inputs.cases), downsampled, inputs.notes)


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an earlier review without ``overwrite``, and any other non-empty folder always."""
    if not holds_files(output, "--output", "the review pages"):
        return
    if not (output / pages.INDEX_DATA).is_file():
        raise DataError(f"--output {output} is a folder that holds other files, not a radseg review; "
                        "choose a new or empty folder")
    if not overwrite:
        raise DataError(f"--output {output} already holds a review; pass --overwrite to replace it or choose "
                        "another folder")


def _write_pages(folder: Path, inputs: ReviewInputs, max_voxels: int, progress: bool) -> list[str]:
    rows, downsampled, taken = [], [], set()
    for case in progress_bar(inputs.cases, desc="review", unit="case", disable=not progress):
        volumes = load_volumes(case, inputs.labels)
        scores = case_scores(volumes.pred, volumes.truth, volumes.spacing, inputs.labels)
        payload = case_payload(case.case_id, volumes, inputs.labels, scores, max_voxels)
        name = pages.page_name(case.case_id, taken)
        pages.write_case(folder, name, payload)
        if payload["step"] > 1:
            downsampled.append(f"{case.case_id} (every {payload['step']}th voxel)")
        worst, worst_class = worst_dice(scores)
        rows.append({"case_id": case.case_id, "page": name, "scores": scores, "worst_dice": worst,
                     "worst_class": worst_class,
                     "has_image": case.image is not None, "errors": payload["error_count"],
                     "step": payload["step"], "shape": payload["source_shape"]})
    pages.write_index(folder, {"rows": rows, "labels": {str(k): v for k, v in inputs.labels.items()},
                               "has_truth": any(case.truth for case in inputs.cases), "notes": inputs.notes})
    pages.copy_assets(folder)
    return downsampled

