"""What ``radseg predict`` writes per case, each file atomically, and the batch's ``volumes.csv``.

Per case ``NAME``: ``NAME.nii.gz`` (uint8 labels on the scan's own grid), optionally
``NAME_probabilities.npz`` (float16 ``probabilities[c, x, y, z]`` in the mask's voxel index order, the
RAS ``affine`` of index ``(x, y, z)`` and the ``class_names``), and ``NAME.json``, written last: the record that the case is
done (source scan, model, class volumes in mL). A rerun skips a case whose record and files exist.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radseg.atomic import atomic_path, write_text_atomic
from radseg.transforms.nifti_gzip import write_nifti_gz

MASK_SUFFIX = ".nii.gz"
PROBABILITIES_SUFFIX = "_probabilities.npz"
RECORD_SUFFIX = ".json"
VOLUMES_CSV = "volumes.csv"
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
