"""Cross-validation folds by case, or by patient when several cases share one.

The splits file has nnU-Net's ``splits_final.json`` format, a list of ``{"train": [...], "val": [...]}``,
so an nnU-Net split can be reused as is. Once written it is reused, never silently replaced.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from radseg.atomic import write_text_atomic

from radseg.errors import DataError
from radseg.pipeline.data.cases import check_unique_case_ids

logger = logging.getLogger(__name__)

Folds = list[dict[str, list[str]]]


def make_folds(
    case_ids: Sequence[str], num_folds: int, seed: int, patient_of: Callable[[str], str] | None = None
) -> Folds:
    """Split cases into ``num_folds`` folds; each case is in exactly one validation fold.

    Patients (each case its own, unless ``patient_of`` groups them) are shuffled by ``seed`` and
    dealt, largest first, to the fold with the fewest cases, so folds are nearly equal and a
    patient's cases never straddle train and validation.

    Args:
        case_ids: unique case ids.
        num_folds: at least 2 and at most the number of patients.
        seed: the same seed gives the same folds.
        patient_of: maps a case id to its patient id; None means one patient per case.

    Returns:
        ``[{"train": [...], "val": [...]}, ...]``, ids in the order of ``case_ids``.

    Raises:
        DataError: repeated case ids, or a ``num_folds`` the patients cannot fill.
    """
    case_ids = list(case_ids)
    check_unique_case_ids(case_ids, "the cases to split")
    patients = _group(case_ids, patient_of)
    if num_folds < 2 or num_folds > len(patients):
        raise DataError(
            f"num_folds must be between 2 and the number of patients ({len(patients)}), not {num_folds}; "
            "set data.num_folds accordingly or add cases"
        )
    order = np.random.default_rng(seed).permutation(len(patients))
    shuffled = [list(patients.values())[i] for i in order]
    shuffled.sort(key=len, reverse=True)  # stable: equal sizes keep the seeded order
    val_sets: list[set[str]] = [set() for _ in range(num_folds)]
    for members in shuffled:
        smallest = min(range(num_folds), key=lambda f: len(val_sets[f]))
        val_sets[smallest].update(members)
    return [
        {"train": [c for c in case_ids if c not in val], "val": [c for c in case_ids if c in val]} for val in val_sets
    ]


def load_or_create_splits(
    path: str | Path,
    case_ids: Sequence[str],
    num_folds: int,
    seed: int,
    patient_of: Callable[[str], str] | None = None,
) -> Folds:
    """The folds stored at ``path`` if they fit these cases, else new folds written there.

    Args:
        path: the splits JSON file (nnU-Net's ``splits_final.json`` format).
        case_ids, num_folds, seed, patient_of: as for :func:`make_folds`.

    Returns:
        The folds.

    Raises:
        DataError: the file exists but is unreadable, has another number of folds, covers other
            cases, or splits a patient; the message names the difference and the fix.
    """
    path = Path(path)
    case_ids = list(case_ids)
    if path.exists():
        folds = _read_splits(path)
        _check_matches(folds, path, case_ids, num_folds, patient_of)
        logger.info("reusing the %d-fold splits in %s", num_folds, path)
        return folds
    folds = make_folds(case_ids, num_folds, seed, patient_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(folds, indent=2) + "\n")
    logger.info("wrote %d-fold splits of %d cases (seed %d) to %s", num_folds, len(case_ids), seed, path)
    return folds


def _group(case_ids: list[str], patient_of: Callable[[str], str] | None) -> dict[str, list[str]]:
    patients: dict[str, list[str]] = {}
    for case_id in case_ids:
        patients.setdefault(patient_of(case_id) if patient_of else case_id, []).append(case_id)
    return patients


def _read_splits(path: Path) -> Folds:
    try:
        folds = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"splits file {path} is not valid JSON ({err}); delete it to make new splits") from err
    valid = isinstance(folds, list) and all(
        isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list) for f in folds
    )
    if not valid:
        raise DataError(
            f"splits file {path} must be a list of {{\"train\": [...], \"val\": [...]}}; delete it to make new splits"
        )
    return folds


def _check_matches(
    folds: Folds, path: Path, case_ids: list[str], num_folds: int, patient_of: Callable[[str], str] | None
) -> None:
    fix = f"delete {path} to make new splits, or pass another splits path"
    if len(folds) != num_folds:
        raise DataError(f"splits file {path} has {len(folds)} folds, expected {num_folds}; {fix}")
    wanted = set(case_ids)
    val_ids = [c for fold in folds for c in fold["val"]]
    stored = set(val_ids)
    if stored != wanted:
        extra, lacking = sorted(stored - wanted), sorted(wanted - stored)
        raise DataError(
            f"splits file {path} covers other cases: not in the dataset: {', '.join(extra) or 'none'}; "
            f"not in the splits: {', '.join(lacking) or 'none'}; {fix}"
        )
    repeated = sorted(c for c, n in Counter(val_ids).items() if n > 1)
    if repeated:
        raise DataError(f"splits file {path}: case(s) {', '.join(repeated)} are in several val folds; {fix}")
    for index, fold in enumerate(folds):
        if set(fold["train"]) != wanted - set(fold["val"]):
            raise DataError(f"splits file {path}: fold {index} train is not all cases outside its val; {fix}")
    if patient_of is not None:
        _check_patients(folds, path, patient_of, fix)


def _check_patients(folds: Folds, path: Path, patient_of: Callable[[str], str], fix: str) -> None:
    for index, fold in enumerate(folds):
        check_patient_split(fold["train"], fold["val"], patient_of, f"splits file {path}: fold {index}", fix)


def check_patient_split(train_ids: Sequence[str], val_ids: Sequence[str], patient_of: Callable[[str], str],
                        where: str = "the split", fix: str = "split by patient") -> None:
    """Refuse a split that puts one patient's cases (and so their slices) on both sides.

    Args:
        train_ids, val_ids: case ids of the two sides.
        patient_of: case id -> patient id (see :func:`patient_lookup`).
        where: what holds the split, for the message.
        fix: what to do about it, for the message.

    Raises:
        DataError: some patients are on both sides; each is named with its cases on either side.
    """
    train_patients: dict[str, list[str]] = {}
    for case_id in train_ids:
        train_patients.setdefault(patient_of(case_id), []).append(case_id)
    leaks = {}
    for case_id in val_ids:
        patient = patient_of(case_id)
        if patient in train_patients:
            leaks.setdefault(patient, (train_patients[patient], []))[1].append(case_id)
    if leaks:
        shown = "; ".join(f"{p} (train: {', '.join(t)}; val: {', '.join(v)})" for p, (t, v) in sorted(leaks.items()))
        raise DataError(f"{where} has patient(s) {', '.join(sorted(leaks))} in both train and val, so one "
                        f"patient's slices would be trained on and scored: {shown}; {fix}")


def patient_lookup(cases: Sequence[Any], pattern: str | None = None) -> Callable[[str], str]:
    """Case id -> patient id, from the first source that has one.

    1. ``pattern``: a regular expression searched in the case id; its first group that matched
       (or the whole match) is the patient (``r"^(patient\\d+)_"`` maps ``patient07_scan2`` to ``patient07``);
    2. the case's ``patient_id`` (a ``patient_id`` column of a CSV dataset);
    3. the DICOM PatientID (0010,0020) of a case whose image is a DICOM series folder;
    4. otherwise the case id itself (one patient per case).

    Args:
        cases: :class:`~radseg.pipeline.data.cases.Case` objects.
        pattern: the regular expression, or None.

    Returns:
        A function of the case id.

    Raises:
        DataError: the pattern is not a valid regular expression or does not match a case id.
    """
    mapping = {case.case_id: _patient_of_case(case, _compile(pattern)) for case in cases}
    return lambda case_id: mapping.get(case_id, case_id)


def _compile(pattern: str | None):
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise DataError(f"slices.patient_pattern {pattern!r} is not a valid regular expression ({err}); "
                        "fix it, e.g. '^(patient\\d+)_'") from err


def _patient_of_case(case: Any, regex) -> str:
    if regex is not None:
        match = regex.search(case.case_id)
        if match is None:
            raise DataError(f"slices.patient_pattern {regex.pattern!r} does not match case id {case.case_id!r}; "
                            "fix the pattern so that it finds the patient in every case id")
        return next((group for group in match.groups() if group is not None), match.group(0))
    if getattr(case, "patient_id", None):
        return str(case.patient_id)
    image = Path(case.images[0])
    if image.is_dir():
        return _dicom_patient_id(image) or case.case_id
    return case.case_id


def _dicom_patient_id(folder: Path) -> str | None:
    import pydicom

    from radseg.transforms.dicom import series_files

    first = series_files(folder, None)[0]
    value = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID")
    return str(value).strip() or None if value is not None else None
