"""Find the cases of a dataset on disk, whatever its layout, and turn them into a MONAI datalist.

Accepted layouts: a Medical Segmentation Decathlon folder (``dataset.json`` with ``training``), an
nnU-Net v2 raw folder (``dataset.json`` with ``channel_names`` and ``file_ending``), a folder with
``images/`` and ``labels/`` matched by case name, or a CSV file with ``image`` and ``label`` columns.
"""

from __future__ import annotations

import logging
from pathlib import Path

from radseg.errors import DataError
from radseg.keys import CASE_ID, IMAGE, LABEL
from radseg.pipeline.data.cases import (  # noqa: F401 - public here too
    ACCEPTED_LAYOUTS, IMAGE_EXTENSIONS, Case, DatasetSpec, case_name, check_unique_case_ids,
)
from radseg.pipeline.data.layouts import discover_csv, discover_folder

logger = logging.getLogger(__name__)


def discover_dataset(path: str | Path, *, check_files: bool = True) -> DatasetSpec:
    """Find every case of the dataset at ``path`` and check that its files exist.

    Args:
        path: a dataset folder (MSD, nnU-Net v2 raw, or ``images/`` + ``labels/``), its
            ``dataset.json``, or a CSV file with ``image`` and ``label`` columns.
        check_files: refuse listed files that do not exist (check-data turns this off to report
            them beside every other problem, one line per case).

    Returns:
        The dataset's cases (labelled ones in ``training``, others in ``test``) and declarations.

    Raises:
        DataError: the path is missing or empty, the layout is not recognised, ``dataset.json`` is
            invalid, files are missing (all listed at once) or case ids repeat.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist; pass a dataset folder or a CSV file")
    if path.is_file() and path.name == "dataset.json":
        path = path.parent
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"dataset path {path} is a file but not a CSV; expected {ACCEPTED_LAYOUTS}")
        spec = discover_csv(path)
    else:
        spec = discover_folder(path)
    check_unique_case_ids([c.case_id for c in spec.training + spec.test], str(spec.root))
    if check_files:
        fix = (f"fix the paths in {path} (they are relative to its folder)" if spec.layout == "csv"
               else "restore the files or remove their entries from dataset.json")
        _check_files(spec.training + spec.test, fix)
    _announce(spec)
    return spec


#: datasets (root, layout, case counts) already announced in this process
_ANNOUNCED: set[tuple] = set()


def _announce(spec: DatasetSpec) -> None:
    """Log what was found once per process: a training run discovers its dataset at every check."""
    seen = (str(spec.root), spec.layout, len(spec.training), len(spec.test))
    log = logger.debug if seen in _ANNOUNCED else logger.info
    _ANNOUNCED.add(seen)
    log("dataset %s (%s): %d training, %d test cases", spec.name, spec.layout, len(spec.training), len(spec.test))


def to_datalist(cases: list[Case]) -> list[dict]:
    """Cases as MONAI datalist dictionaries.

    Returns:
        ``{IMAGE: str (one channel) or list[str] (several), LABEL: str (when labelled), CASE_ID: str}``
        per case.
    """
    items = []
    for case in cases:
        images = [str(p) for p in case.images]
        item = {IMAGE: images[0] if len(images) == 1 else images, CASE_ID: case.case_id}
        if case.label is not None:
            item[LABEL] = str(case.label)
        items.append(item)
    return items


def _check_files(cases: list[Case], fix: str) -> None:
    missing = []
    for case in cases:
        missing += [f"case {case.case_id}: image {p} is missing" for p in case.images if not p.exists()]
        if case.label is not None and not case.label.exists():
            missing.append(f"case {case.case_id}: label {case.label} is missing")
    if missing:
        raise DataError(f"{len(missing)} listed file(s) are missing; {fix}:\n" + "\n".join(missing))
