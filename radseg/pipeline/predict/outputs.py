"""What ``radseg predict`` writes per case, each file atomically, and the batch's ``volumes.csv``.

Per case ``NAME``: ``NAME.nii.gz`` (uint8 labels on the scan's own grid), optionally
``NAME_probabilities.npz`` (float16 ``probabilities[c, x, y, z]`` in the mask's voxel index order, the
RAS ``affine`` of index ``(x, y, z)`` and the ``class_names``), and ``NAME.json``, written last: the record that the case is
done (source scan, model, class volumes in mL). A rerun skips a case whose record and files exist.

A case is written whole or not at all: its files go to a private hidden staging folder first
(:func:`staged_case`) and are moved into the output folder together once all of them are written,
the record last. Per folder: ``labels.json``, the model's label map ``{"0": "background", ...}`` (the
format of a plain-folder dataset's ``labels.json``), so the masks can be read without the checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from radseg.atomic import atomic_path, fsync_path, write_text_atomic
from radseg.errors import DataError
from radseg.transforms.nifti_gzip import write_nifti_gz

MASK_SUFFIX = ".nii.gz"
PROBABILITIES_SUFFIX = "_probabilities.npz"
RECORD_SUFFIX = ".json"
VOLUMES_CSV = "volumes.csv"
LABELS_JSON = "labels.json"
_STAGING_PREFIX = ".radseg-partial-"
#: gzip level of the masks: 1 is several times faster than 6 and only a little larger on label maps
#: (ISA-L's levels 0-3 correspond; its 1 is faster than zlib's 1)
COMPRESSION_LEVEL = 1


@dataclass
class CaseOutputs:
    """The files of one case in an output folder."""

    folder: Path
    name: str
    probabilities: bool = False
    extra: list[Path] = field(default_factory=list)

    @property
    def mask(self) -> Path:
        """The label map."""
        return self.folder / f"{self.name}{MASK_SUFFIX}"

    @property
    def probability_file(self) -> Path:
        """The float16 probabilities."""
        return self.folder / f"{self.name}{PROBABILITIES_SUFFIX}"

    @property
    def record(self) -> Path:
        """The per-case record, written last."""
        return self.folder / f"{self.name}{RECORD_SUFFIX}"

    def expected(self) -> list[Path]:
        """Every file this case should have when done."""
        files = [self.mask, *self.extra, self.record]
        return files + [self.probability_file] if self.probabilities else files

    def done(self) -> bool:
        """True when every expected file exists (each was written atomically, so none is partial)."""
        return all(path.is_file() for path in self.expected())


@contextlib.contextmanager
def staged_case(folder: Path, name: str) -> Iterator[Path]:
    """A private folder for one case's files, moved into ``folder`` together when the block succeeds.

    Nothing in ``folder`` changes unless the block ends without error: a failing writer (e.g. the
    DICOM-SEG) leaves neither a mask without its record nor a file of an earlier run removed. The
    files are moved with ``os.replace`` (same file system, each rename atomic), the case's record
    (``NAME.json``, the mark that the case is done) last.

    Yields:
        The staging folder (hidden, inside ``folder``); it is deleted when the block ends, and one
        a killed run left for this case is deleted when the case is predicted again.
    """
    leftover = re.compile(rf"{re.escape(_STAGING_PREFIX + name)}-\d+-\d+")
    for path in folder.glob(f"{_STAGING_PREFIX}*"):
        if leftover.fullmatch(path.name):  # one process predicts a case at a time, even under torchrun
            shutil.rmtree(path, ignore_errors=True)
    staging = folder / f"{_STAGING_PREFIX}{name}-{os.getpid()}-{threading.get_ident()}"
    staging.mkdir()
    try:
        yield staging
        record = f"{name}{RECORD_SUFFIX}"
        staged = sorted(p for p in staging.iterdir() if p.is_file())
        for path in sorted(staged, key=lambda p: p.name == record):  # the record last
            os.replace(path, folder / path.name)
        fsync_path(folder)  # the renames into it survive a power cut (POSIX)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_labels_json(folder: Path, label_names: dict[int, str], overwrite: bool = False) -> Path:
    """Write ``labels.json`` (``{"0": "background", "1": "liver", ...}``) into ``folder``, atomically.

    Args:
        folder: the output folder (must exist).
        label_names: class index -> name, background included.
        overwrite: replace a ``labels.json`` that names other classes.

    Returns:
        The path (left as it is when it already holds this label map).

    Raises:
        DataError: ``folder`` holds a ``labels.json`` of another label map and ``overwrite`` is False.
    """
    path = folder / LABELS_JSON
    wanted = {str(index): str(name) for index, name in sorted(label_names.items())}
    if path.is_file():
        try:
            present = json.loads(path.read_text())
        except (OSError, ValueError):
            present = None
        if present == wanted:
            return path
        if not overwrite:
            raise DataError(f"{path} holds another label map ({_short(present)}) than this model's "
                            f"({_short(wanted)}); the masks in {folder} would be read with the wrong class "
                            "names; fix: choose another --output, or pass --overwrite to replace it")
    return write_text_atomic(path, json.dumps(wanted, indent=2) + "\n")


def _short(labels) -> str:
    if not isinstance(labels, dict):
        return "unreadable"
    return ", ".join(f"{k}={v}" for k, v in labels.items())


def write_mask(labels: np.ndarray, grid, path: Path) -> Path:
    """Write a uint8 label map ``(Z, Y, X)`` on ``grid`` as gzipped NIfTI, atomically.

    The header carries exactly the geometry SimpleITK reads back; the stream is gzipped by ISA-L
    (:func:`radseg.transforms.nifti_gzip.write_nifti_gz`, several times faster than ITK's own).
    """
    return write_nifti_gz(grid.apply(sitk.GetImageFromArray(labels, isVector=False)), path,
                          compresslevel=COMPRESSION_LEVEL)


def write_probabilities(probabilities: np.ndarray, affine_ras: np.ndarray, class_names: list[str],
                        path: Path) -> Path:
    """Write float16 probabilities with their RAS affine, atomically (npz).

    Args:
        probabilities: ``(C, Z, Y, X)`` (SimpleITK array order); stored as ``(C, X, Y, Z)``, the
            voxel index order of the affine and of ``radseg evaluate``'s probability maps (numpy
            writes the transposed view in chunks, without a second full copy).
        affine_ras: 4x4 affine of voxel index ``(x, y, z)``.
        class_names: one per channel, background first.
        path: the ``NAME_probabilities.npz`` to write.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, probabilities=probabilities.transpose(0, 3, 2, 1), affine=affine_ras, class_names=np.asarray(class_names))
    return path


def write_record(record: dict, path: Path) -> Path:
    """Write the per-case JSON record atomically (the last file of a case)."""
    return write_text_atomic(path, json.dumps(record, indent=2))


def volumes_ml(labels: np.ndarray, num_classes: int, voxel_ml: float) -> list[float]:
    """Volume in mL of each foreground class ``1..num_classes-1``."""
    # one comparison per class: np.bincount would first copy the uint8 labels to int64 (8x the memory)
    return [float(np.count_nonzero(labels == c)) * voxel_ml for c in range(1, num_classes)]


def write_volumes_csv(folder: Path) -> Path | None:
    """Gather every case record in ``folder`` into ``volumes.csv`` (mL per class per case).

    Returns:
        The CSV path, or None when the folder holds no record.
    """
    records = []
    for path in sorted(folder.glob(f"*{RECORD_SUFFIX}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "volumes_ml" in record:
            records.append(record)
    if not records:
        return None
    classes = list(dict.fromkeys(name for record in records for name in record["volumes_ml"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", *(f"{name}_ml" for name in classes)])
    for record in records:
        writer.writerow([record["case"], *(_fmt(record["volumes_ml"].get(name)) for name in classes)])
    return write_text_atomic(folder / VOLUMES_CSV, buffer.getvalue())


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"
