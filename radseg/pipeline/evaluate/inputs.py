"""What ``radseg evaluate`` scores: prediction files paired with truth cases, the label map, options.

Prediction folder: one label map per case, named ``<case id>`` plus ``.nii.gz`` / ``.nii`` /
``.nrrd`` / ``.mha`` / ``.mhd``; optionally beside it a probability map with one channel per class,
background first, on the prediction's grid, either ``<case id>_probabilities.nii.gz`` (or ``.nii``):
a float32 NIfTI ``(X, Y, Z, C)`` (or ``(X, Y, Z, 1, C)``), checked against the label map's affine, or
``<case id>_probabilities.npz`` (key ``probabilities``, or its only array) / ``.npy``: a float16 or
float32 array ``(C, X, Y, Z)`` (channel first, as MONAI holds it; NIfTI has no float16) in the
label map's voxel order.

Truth: a folder of label files named the same way (label map from ``--labels``, its
``labels.json``, or the ``dataset.json`` of the dataset it sits in, as ``labelsTs/`` sits in an MSD
or nnU-Net dataset; else ``{0: background, 1: foreground}``), or a dataset that
:func:`radseg.pipeline.data.datalist.discover_dataset` reads (MSD, nnU-Net v2, images/labels
folder, CSV), whose label map comes from its ``dataset.json`` / ``labels.json`` unless ``--labels``
is given. From a dataset, the truth set is its labelled test cases when every prediction is one of
them (the held-out cases ``radseg predict`` was run on), otherwise all its labelled cases.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from radseg.errors import DataError
from radseg.pipeline.data.cases import IMAGE_EXTENSIONS, case_name
from radseg.pipeline.data.datalist import discover_dataset

logger = logging.getLogger(__name__)

PROBABILITY_SUFFIX = "_probabilities"
PROBABILITY_EXTENSIONS = (".nii.gz", ".nii", ".npz", ".npy")
DEFAULT_TOLERANCE_MM = 2.0


@dataclass
class CasePair:
    """One case to score: its truth, its prediction (None when missing) and what goes with them."""

    case_id: str
    truth: Path
    pred: Path | None
    image: Path | None = None  # the scan, for quick-look pictures (datasets only)
    probabilities: Path | None = None


@dataclass
class EvaluationInputs:
    """The cases, the label map and where they came from."""

    pairs: list[CasePair]
    labels: dict[int, str]  # background (0) included
    truth_set: str  # a sentence saying which truth cases were taken
    extra_predictions: list[str]  # predictions with no truth case (not scored)

    @property
    def missing(self) -> list[str]:
        """Truth cases without a prediction file."""
        return [pair.case_id for pair in self.pairs if pair.pred is None]


def gather_inputs(pred_dir: str | Path, truth: str | Path, labels: str | dict | None = None) -> EvaluationInputs:
    """Pair the prediction files with the truth cases and settle the label map.

    Args:
        pred_dir: the folder of predicted label maps (and optional probability maps).
        truth: a folder of label files, or a dataset folder / ``dataset.json`` / CSV file.
        labels: the label map: ``{index: name}``, a JSON file like ``{"0": "background", "1":
            "liver"}``, or ``"1=liver,2=tumour"`` (background 0 implied); None: from the truth.

    Returns:
        The pairs (missing predictions included, with ``pred=None``), labels and notes.

    Raises:
        DataError: a folder is missing or holds no label maps, the label map is malformed, or no
            prediction matches any truth case.
    """
    predictions = prediction_files(pred_dir)
    truth_path = Path(truth).expanduser()
    if not truth_path.exists():
        raise DataError(f"truth {truth_path} does not exist; pass a folder of label files or a dataset")
    if truth_path.is_dir() and not _is_dataset(truth_path):
        cases = {cid: (path, None) for cid, path in _label_files(truth_path).items()}
        found_labels, note = _labels_json(truth_path), f"every label file in {truth_path}"
    else:
        cases, found_labels, note = _dataset_cases(truth_path, set(predictions))
    label_map = parse_labels(labels) if labels is not None else found_labels
    pairs = [CasePair(cid, path, predictions.get(cid, (None, None))[0], image, predictions.get(cid, (None, None))[1])
             for cid, (path, image) in sorted(cases.items())]
    if not any(pair.pred for pair in pairs):
        raise DataError(f"no prediction in {pred_dir} has the name of a truth case in {truth_path} "
                        f"(predictions: {_sample(predictions)}; truth: {_sample(cases)}); name each prediction "
                        "<case id>.nii.gz after its truth case")
    extra = sorted(set(predictions) - set(cases))
    return EvaluationInputs(pairs, label_map, note, extra)


def prediction_files(pred_dir: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """``{case id: (label map, probability map or None)}`` of a prediction folder."""
    folder = Path(pred_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"prediction folder {folder} does not exist; pass the --output folder of radseg predict")
    files = _label_files(folder, keep_probabilities=True)
    maps = {cid: path for cid, path in files.items() if not cid.endswith(PROBABILITY_SUFFIX)}
    probabilities = {}
    for path in sorted(folder.glob(f"*{PROBABILITY_SUFFIX}.*")):
        stem = next((path.name[: -len(ext)] for ext in PROBABILITY_EXTENSIONS if path.name.endswith(ext)), None)
        if stem and stem.endswith(PROBABILITY_SUFFIX):
            case_id = stem[: -len(PROBABILITY_SUFFIX)]
            if case_id in probabilities:
                raise DataError(f"case {case_id} has two probability maps in {folder} ({probabilities[case_id].name}, "
                                f"{path.name}); keep one")
            probabilities[case_id] = path
    orphans = sorted(set(probabilities) - set(maps))
    if orphans:
        logger.warning("probability maps without a label map are ignored: %s", ", ".join(orphans))
    if not maps:
        raise DataError(f"prediction folder {folder} holds no label maps ({', '.join(IMAGE_EXTENSIONS)}); "
                        "pass the --output folder of radseg predict")
    return {cid: (path, probabilities.get(cid)) for cid, path in maps.items()}


def parse_labels(labels: str | dict) -> dict[int, str]:
    """A label map from a dict, a JSON file, or ``"1=liver,2=tumour"`` (background 0 implied)."""
    if isinstance(labels, dict):
        raw = labels
    elif Path(labels).suffix == ".json" or Path(labels).is_file():
        raw = _read_json(Path(labels))
    else:
        try:
            raw = {0: "background", **{int(k): v.strip() for k, v in (item.split("=", 1) for item in labels.split(","))}}
        except ValueError as err:
            raise DataError(f"--labels {labels!r} must be a JSON file or like '1=liver,2=tumour'") from err
    try:
        label_map = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError) as err:
        raise DataError(f"labels must map class numbers to names like {{\"1\": \"liver\"}}, not {raw!r}") from err
    if sorted(label_map) != list(range(len(label_map))):
        raise DataError(f"label numbers must be 0..N-1 without gaps, not {sorted(label_map)}; fix --labels")
    return label_map


def _is_dataset(folder: Path) -> bool:
    return (folder / "dataset.json").is_file() or (folder / "images").is_dir()


def _dataset_cases(path: Path, predicted: set[str]) -> tuple[dict, dict[int, str], str]:
    spec = discover_dataset(path)
    test = [case for case in spec.test if case.label is not None]
    if test and predicted <= {case.case_id for case in test}:
        chosen, note = test, f"the {len(test)} labelled test cases of dataset {spec.name} ({spec.root})"
    elif predicted and predicted <= {case.case_id for case in spec.training}:  # out-of-fold predictions
        chosen = spec.training
        note = f"the {len(chosen)} labelled training cases of dataset {spec.name} ({spec.root})"
    else:
        chosen = spec.training + test
        note = f"all {len(chosen)} labelled cases of dataset {spec.name} ({spec.root})"
    cases = {case.case_id: (case.label, case.images[0] if case.images else None) for case in chosen}
    return cases, dict(spec.labels), note


def _label_files(folder: Path, keep_probabilities: bool = False) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        name = None if path.name.startswith(".") or not path.is_file() else case_name(path)
        if name is not None:
            found.setdefault(name, []).append(path)
    repeated = {name: paths for name, paths in found.items() if len(paths) > 1}
    if repeated:
        raise DataError(f"case names repeat in {folder} (keep one file per case): "
                        + "; ".join(f"{n}: {', '.join(p.name for p in ps)}" for n, ps in repeated.items()))
    if not found and not keep_probabilities:
        raise DataError(f"truth folder {folder} holds no label files ({', '.join(IMAGE_EXTENSIONS)}) and is not a "
                        "dataset (no dataset.json or images/); pass a folder of label maps or a dataset")
    return {name: paths[0] for name, paths in found.items()}


def _labels_json(folder: Path) -> dict[int, str]:
    path = folder / "labels.json"
    if path.is_file():
        return parse_labels(_read_json(path))
    if (folder.parent / "dataset.json").is_file():  # labelsTs/ or labelsTr/ of an MSD or nnU-Net dataset
        try:
            labels = dict(discover_dataset(folder.parent).labels)
        except DataError as err:
            logger.warning("the label map of %s's dataset is unreadable (%s); using background/foreground", folder, err)
        else:
            logger.info("label map from %s: %s", folder.parent / "dataset.json",
                        ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
            return labels
    return {0: "background", 1: "foreground"}


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the label map {path} ({err}); expected JSON like {{\"0\": \"background\"}}") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold a JSON object like {{\"0\": \"background\"}}, not {type(raw).__name__}")
    return raw


def _sample(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def class_indices(names: list[str] | tuple[str, ...], labels: dict[int, str], what: str) -> tuple[int, ...]:
    """Foreground class indices from names or numbers (``["tumour"]`` or ``["2"]``)."""
    by_name = {name: index for index, name in labels.items() if index}
    indices = []
    for name in names:
        if name in by_name:
            indices.append(by_name[name])
        elif name.isdigit() and 0 < int(name) < len(labels):
            indices.append(int(name))
        else:
            raise DataError(f"{what} {name!r} is not a foreground class of the label map "
                            f"({', '.join(f'{i}={n}' for i, n in by_name.items())}); use one of those names")
    return tuple(dict.fromkeys(indices))


def class_tolerances(tolerance: float | str | dict | None, labels: dict[int, str]) -> dict[int, float]:
    """Surface-Dice tolerance (mm) per foreground class.

    Args:
        tolerance: one number for every class, ``{name or index: mm}``, or a string like
            ``"2"`` or ``"liver=3,tumour=1"`` (classes not named get the default); None: the default
            :data:`DEFAULT_TOLERANCE_MM`.
        labels: the label map.
    """
    tolerances = {index: DEFAULT_TOLERANCE_MM for index in labels if index}
    if tolerance is None:
        return tolerances
    if isinstance(tolerance, str) and "=" not in tolerance:
        tolerance = _float(tolerance)
    if isinstance(tolerance, (int, float)):
        return {index: _positive(float(tolerance)) for index in tolerances}
    items = tolerance.items() if isinstance(tolerance, dict) else (i.split("=", 1) for i in tolerance.split(","))
    for name, value in items:
        (index,) = class_indices([str(name).strip()], labels, "--tolerance-mm class")
        tolerances[index] = _positive(_float(value))
    return tolerances


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"--tolerance-mm needs millimetres like 2 or liver=3,tumour=1, not {value!r}") from err


def _positive(value: float) -> float:
    if not value >= 0:
        raise DataError(f"--tolerance-mm must be >= 0 mm, not {value}")
    return value
