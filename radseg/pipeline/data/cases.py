"""The vocabulary of a dataset on disk: a :class:`Case`, a :class:`DatasetSpec`, case names."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from radseg.errors import DataError

#: file endings of the image formats read by radseg (a DICOM series is a folder instead)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
ACCEPTED_LAYOUTS = (
    "an MSD folder (dataset.json with 'training'), an nnU-Net v2 raw folder (dataset.json with "
    "'channel_names' and 'file_ending'), a folder with images/ (and labels/), or a CSV file with "
    "image,label columns"
)


@dataclass
class Case:
    """One case (patient scan): its channel images and its label map, if any."""

    case_id: str
    images: list[Path]  # one per channel; a DICOM series is a folder Path
    label: Path | None = None
    #: the patient this scan belongs to, when the dataset says (a CSV patient_id column)
    patient_id: str | None = None


@dataclass
class DatasetSpec:
    """What :func:`discover_dataset` found: the cases and what the dataset declares about them."""

    root: Path
    layout: str  # "msd" | "nnunet" | "folders" | "csv"
    name: str
    modality: str  # "CT", "MRI" or "unknown"
    channel_names: list[str]
    labels: dict[int, str]  # {0: "background", 1: "liver", 2: "tumour"}
    training: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.labels)


def case_name(path: Path) -> str | None:
    """The case name of an image file (its name without a known extension), a folder's name, or None."""
    if path.is_dir():
        return path.name
    lower = path.name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return path.name[: -len(ext)]
    return None


def check_unique_case_ids(case_ids: list[str], where: str) -> None:
    """Refuse repeated case ids (a split or a cache keyed by id would mix two cases).

    Args:
        case_ids: every case id of a dataset or a split.
        where: what holds them, for the message (a dataset folder, a splits file).

    Raises:
        DataError: some ids repeat (all of them named).
    """
    repeated = sorted(cid for cid, count in Counter(case_ids).items() if count > 1)
    if repeated:
        raise DataError(
            f"case ids repeat in {where}: {', '.join(repeated)}; give every case a unique name (or a case_id column)"
        )
