"""Readers of the dataset layouts radseg accepts: MSD, nnU-Net v2 raw, images/labels folders, CSV.

Each reader turns one layout into a :class:`~radseg.pipeline.data.cases.DatasetSpec`;
:func:`radseg.pipeline.data.datalist.discover_dataset` picks the reader.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

from radseg.errors import DataError
from radseg.pipeline.data.cases import ACCEPTED_LAYOUTS, IMAGE_EXTENSIONS, Case, DatasetSpec, case_name

_DEFAULT_LABELS = {0: "background", 1: "foreground"}
_MRI_NAMES = {"MR", "MRI", "T1", "T1W", "T1GD", "T1C", "T2", "T2W", "FLAIR", "ADC", "DWI", "PD"}

logger = logging.getLogger(__name__)


def discover_folder(root: Path) -> DatasetSpec:
    if not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise DataError(f"dataset folder {root} is empty; expected {ACCEPTED_LAYOUTS}")
    if (root / "dataset.json").is_file():
        meta = _read_json(root / "dataset.json")
        if "channel_names" in meta or "file_ending" in meta:
            return _discover_nnunet(root, meta)
        return _discover_msd(root, meta)
    if (root / "images").is_dir():
        return _discover_images_labels(root)
    hint = "; it has imagesTr/ but no dataset.json" if (root / "imagesTr").is_dir() else ""
    raise DataError(f"dataset folder {root} has no recognised layout{hint}; expected {ACCEPTED_LAYOUTS}")


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path} is not valid JSON ({err}); fix the file") from err
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    return meta


def _require(meta: dict, keys: tuple[str, ...], path: Path, layout: str) -> None:
    missing = [k for k in keys if k not in meta]
    if missing:
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)} that an {layout} dataset.json needs; add them")


def _discover_msd(root: Path, meta: dict) -> DatasetSpec:
    json_path = root / "dataset.json"
    _require(meta, ("training", "labels"), json_path, "MSD")
    channels = _channel_names(meta.get("modality", {}), json_path) or ["image"]
    if not isinstance(meta["training"], list) or not isinstance(meta.get("test", []), list):
        raise DataError(f"{json_path}: 'training' and 'test' must be lists; fix the file")
    training, test = [], []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry or not entry.get("label"):
            raise DataError(f"{json_path}: training[{i}] must be {{'image': ..., 'label': ...}}, not {entry!r}; "
                            "give every training case its label, or list unlabelled scans under 'test'")
        training.append(_msd_case(root, entry["image"], entry["label"]))
    for entry in meta.get("test", []):
        image = entry.get("image") if isinstance(entry, dict) else entry
        label = entry.get("label") if isinstance(entry, dict) else None
        test.append(_msd_case(root, image, label or _test_label(root, image)))
    return DatasetSpec(
        root, "msd", meta.get("name", root.name), _modality(channels), channels,
        _int_labels(meta["labels"], json_path), training, test,
    )


def _msd_case(root: Path, image: object, label: str | None) -> Case:
    if not isinstance(image, str) or not image:
        raise DataError(f"{root / 'dataset.json'}: every case needs an image path, not {image!r}; fix the entry")
    image_path = root / image
    return Case(case_name(image_path) or image_path.name, [image_path], root / label if label else None)


def _test_label(root: Path, image: str) -> str | None:
    """MSD lists test images only; radseg phantoms keep their labels in labelsTs/ beside them."""
    candidate = Path("labelsTs") / Path(image).name
    return str(candidate) if (root / candidate).is_file() else None


def _discover_nnunet(root: Path, meta: dict) -> DatasetSpec:
    json_path = root / "dataset.json"
    _require(meta, ("channel_names", "labels", "file_ending", "numTraining"), json_path, "nnU-Net v2")
    channels = _channel_names(meta["channel_names"], json_path)
    ending, labels = meta["file_ending"], _nnunet_labels(meta["labels"], json_path)
    training = _nnunet_cases(root / "imagesTr", root / "labelsTr", ending, len(channels))
    test = _nnunet_cases(root / "imagesTs", root / "labelsTs", ending, len(channels))
    if len(training) != meta["numTraining"]:
        raise DataError(
            f"{json_path} declares numTraining {meta['numTraining']} but imagesTr/ holds {len(training)} cases; "
            "fix numTraining or add the missing cases"
        )
    missing = [f"case {c.case_id}: label {c.label} is missing" for c in training if not c.label.is_file()]
    if missing:
        raise DataError("nnU-Net training cases without labels (add them to labelsTr/):\n" + "\n".join(missing))
    for case in test:
        case.label = case.label if case.label.is_file() else None
    return DatasetSpec(root, "nnunet", meta.get("name", root.name), _modality(channels), channels, labels, training, test)


def _nnunet_cases(images_dir: Path, labels_dir: Path, ending: str, num_channels: int) -> list[Case]:
    if not images_dir.is_dir():
        return []
    channels: dict[str, dict[int, Path]] = defaultdict(dict)
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    for path in sorted(images_dir.iterdir()):
        match = pattern.match(path.name)
        if match:
            channels[match.group(1)][int(match.group(2))] = path
        elif not path.name.startswith("."):
            logger.warning("ignoring %s: not named CASE_XXXX%s", path, ending)
    problems = []
    for case_id, found in channels.items():
        lacking = [f"{case_id}_{i:04d}{ending}" for i in range(num_channels) if i not in found]
        if lacking:
            problems.append(f"case {case_id}: missing channel file(s) {', '.join(lacking)} in {images_dir}")
    if problems:
        raise DataError(f"nnU-Net cases need {num_channels} channel file(s) each; add the files:\n" + "\n".join(problems))
    return [
        Case(cid, [found[i] for i in range(num_channels)], labels_dir / f"{cid}{ending}") for cid, found in channels.items()
    ]


def _discover_images_labels(root: Path) -> DatasetSpec:
    images = _named_entries(root / "images")
    labels = _named_entries(root / "labels") if (root / "labels").is_dir() else {}
    if not images:
        raise DataError(f"{root / 'images'} holds no images ({', '.join(IMAGE_EXTENSIONS)} or DICOM folders)")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DataError(
            "label files without an image (add the image or remove the label):\n"
            + "\n".join(f"case {c}: {labels[c]}" for c in orphans)
        )
    cases = [Case(name, [path], labels.get(name)) for name, path in sorted(images.items())]
    return _unlabelled_to_test(root, "folders", root.name, cases, _labels_json(root))


def _named_entries(folder: Path) -> dict[str, Path]:
    entries: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        name = None if path.name.startswith(".") else case_name(path)
        if name is not None:
            entries[name].append(path)
    repeated = {n: ps for n, ps in entries.items() if len(ps) > 1}
    if repeated:
        raise DataError(
            f"case names repeat in {folder} (keep one file per case):\n"
            + "\n".join(f"case {n}: {', '.join(p.name for p in ps)}" for n, ps in repeated.items())
        )
    return {n: ps[0] for n, ps in entries.items()}


def discover_csv(path: Path) -> DatasetSpec:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "image" not in columns:
            raise DataError(f"CSV {path} needs an 'image' column (and 'label', optional 'case_id'); it has {columns}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(f"CSV {path} has no rows; add one row per case")
    empty = [str(line) for line, row in enumerate(rows, start=2) if not row.get("image")]
    if empty:
        raise DataError(f"CSV {path}: rows {', '.join(empty)} have no image path; fill them in or delete them")
    cases = []
    for row in rows:
        image = path.parent / row["image"]
        label = path.parent / row["label"] if row.get("label") else None
        cases.append(Case(row.get("case_id") or case_name(image) or image.name, [image], label,
                          patient_id=row.get("patient_id") or None))
    return _unlabelled_to_test(path.parent, "csv", path.stem, cases, _labels_json(path.parent))


def _unlabelled_to_test(root: Path, layout: str, name: str, cases: list[Case], labels: dict[int, str]) -> DatasetSpec:
    training = [c for c in cases if c.label is not None]
    test = [c for c in cases if c.label is None]
    return DatasetSpec(root, layout, name, "unknown", ["image"], labels, training, test)


def _labels_json(folder: Path) -> dict[int, str]:
    path = folder / "labels.json"
    return _int_labels(_read_json(path), path) if path.is_file() else dict(_DEFAULT_LABELS)


def _int_labels(raw: object, path: Path) -> dict[int, str]:
    """``{"0": "background", ...}`` (MSD, labels.json) as ``{0: "background", ...}``."""
    try:
        labels = {int(k): str(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: labels must map class numbers to names like {{\"0\": \"background\"}}, not {raw!r}") from err
    if sorted(labels) != list(range(len(labels))):
        raise DataError(f"{path}: label numbers must be 0..N-1 without gaps, not {sorted(labels)}")
    return labels


def _nnunet_labels(raw: object, path: Path) -> dict[int, str]:
    """nnU-Net's ``{"background": 0, "liver": 1}`` as ``{0: "background", 1: "liver"}``."""
    if not isinstance(raw, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raise DataError(
            f"{path}: labels must map names to integers like {{\"background\": 0, \"liver\": 1}}, not {raw!r} "
            "(region-based labels are not supported)"
        )
    return _int_labels({v: k for k, v in raw.items()}, path)


def _channel_names(raw: object, path: Path) -> list[str]:
    if not isinstance(raw, dict):
        raise DataError(f"{path}: channel names must be a mapping like {{\"0\": \"CT\"}}, not {raw!r}")
    try:
        return [str(raw[k]) for k in sorted(raw, key=int)]
    except ValueError as err:
        raise DataError(f"{path}: channel keys must be numbers like \"0\", not {list(raw)}") from err


def _modality(channel_names: list[str]) -> str:
    names = {n.strip().upper() for n in channel_names}
    if names and names <= {"CT"}:
        return "CT"
    if names and names <= _MRI_NAMES:
        return "MRI"
    return "unknown"
