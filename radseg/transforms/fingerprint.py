"""The dataset fingerprint (nnU-Net's idea): spacing, shape and CT intensity statistics.

Computed once over the training cases and stored beside the results as ``fingerprint.json``;
:func:`resolve_preprocess` turns the config's "auto" settings into numbers from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union

import numpy as np

from radseg import keys
from radseg.atomic import write_text_atomic
from radseg.configs.schema import PreprocessConfig
from radseg.errors import ConfigError, DataError
from radseg.transforms.intensity_samples import foreground_samples
from radseg.transforms.io import read_header
from radseg.transforms.object_stats import label_objects, median_foreground_box, summarize_objects
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)

#: foreground voxels sampled per case for the intensity statistics (nnU-Net samples similarly)
SAMPLES_PER_CASE = 10_000
#: coarse axis / finest axis ratio above which the coarse axis is resampled less (nnU-Net: 3)
ANISOTROPY_THRESHOLD = 3.0
FINGERPRINT_VERSION = 1


@dataclass
class Fingerprint:
    """What the training cases look like. Spacings and shapes are in RAS axis order (x, y, z).

    The top-level intensity fields (pooled over channels: CT channels share the Hounsfield scale)
    are None for MRI (z-scored per volume and per channel) and for CT without labels;
    ``channel_stats`` describes each channel's foreground whatever the modality.
    """

    modality: str
    case_ids: list[str]
    spacings: list[list[float]]
    shapes: list[list[int]]
    median_spacing: list[float]
    median_shape: list[float]
    #: median spacing with nnU-Net's anisotropy rule applied to the coarse axis
    target_spacing: list[float]
    percentile_00_5: Union[float, None] = None
    percentile_99_5: Union[float, None] = None
    mean: Union[float, None] = None
    std: Union[float, None] = None
    num_foreground_samples: int = 0
    version: int = FINGERPRINT_VERSION
    #: image channels (MSD's multi-modal cases: MR sequences on a 4th axis, or one file each)
    num_channels: int = 1
    #: foreground intensity statistics of each channel (any modality, labelled cases only):
    #: ``{"mean", "std", "percentile_00_5", "percentile_99_5"}`` per channel
    channel_stats: Union[list[dict[str, float]], None] = None
    #: per-class object statistics (:func:`radseg.transforms.object_stats.summarize_objects`);
    #: None unless computed with ``objects=True``
    classes: Union[dict[str, dict[str, Any]], None] = None
    #: median box (mm, RAS) around all foreground classes; None unless ``objects=True``
    foreground_box_mm: Union[list[float], None] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def measured_on(self, datalist: Sequence[dict], modality: str) -> bool:
        """Whether :func:`compute_fingerprint` measured exactly these cases, in this order, as ``modality``.

        Raises:
            DataError: ``modality`` is neither CT nor MRI (as :func:`compute_fingerprint` would).
        """
        ids = [case_id(case, index) for index, case in enumerate(datalist)]
        return self.modality == _canonical_modality(modality) and list(self.case_ids) == ids

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"fingerprint has unknown keys {unknown}; expected {sorted(known)}; "
                            "fix: delete fingerprint.json so it is computed again")
        return cls(**data)


@dataclass(frozen=True)
class ResolvedPreprocess:
    """The preprocessing settings with every "auto" replaced by a number."""

    modality: str
    target_spacing: tuple[float, float, float]
    ct_window: Union[tuple[float, float], None] = None
    ct_normalization: str = "zscore"
    mean: Union[float, None] = None
    std: Union[float, None] = None
    crop_foreground: bool = True
    body_threshold_hu: float = -500.0
    crop_margin: int = 4
    #: MONAI intensity transforms ``((name, kwargs), ...)`` replacing the modality's normalisation:
    #: set only for a model read from a MONAI bundle (:mod:`radseg.pipeline.predict.bundle`)
    intensity_steps: Union[tuple, None] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (keys the cache and travels with checkpoints)."""
        data = asdict(self)
        if data["intensity_steps"] is None:  # absent, so the cache keys of every earlier run still hold
            del data["intensity_steps"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedPreprocess:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["target_spacing"] = tuple(data["target_spacing"])
        if data.get("ct_window") is not None:
            data["ct_window"] = tuple(data["ct_window"])
        return cls(**data)


def compute_fingerprint(datalist: Sequence[dict], modality: str, *, seed: int = 0,
                        samples_per_case: int = SAMPLES_PER_CASE, progress: bool = True,
                        objects: bool = False) -> Fingerprint:
    """Measure the training cases: spacing and shape from headers, CT foreground intensities.

    Args:
        datalist: dicts with ``keys.IMAGE`` (path, or list of paths for channels), optionally
            ``keys.LABEL`` and ``keys.CASE_ID``.
        modality: "CT" or "MRI"; intensity statistics are gathered for CT only.
        seed: seed of the foreground voxel sampling.
        samples_per_case: foreground voxels sampled per case (all of them when fewer).
        progress: show a progress bar over cases.
        objects: also measure each label's objects per class (sizes, counts, boxes; reads every
            label in full), as a planner needs.

    Returns:
        The fingerprint.

    Raises:
        DataError: an empty datalist, an unreadable case, or an image and label on different grids.
    """
    if not datalist:
        raise DataError("cannot compute a fingerprint of 0 training cases; expected at least one; "
                        "fix: check the dataset path and its training list")
    modality = _canonical_modality(modality)
    rng = np.random.default_rng(seed)
    spacings, shapes, case_ids, samples, label_stats, num_channels = [], [], [], [], [], 1
    for index, case in enumerate(progress_bar(datalist, desc="fingerprint", unit="case", disable=not progress)):
        image_paths = _channel_paths(case[keys.IMAGE])
        spacing, shape, num_channels = _ras_spacing_and_shape(image_paths)
        spacings.append(spacing)
        shapes.append(shape)
        case_ids.append(case_id(case, index))
        if case.get(keys.LABEL):
            samples.append(foreground_samples(image_paths, case[keys.LABEL], rng, samples_per_case))
        if objects and case.get(keys.LABEL):
            label_stats.append(label_objects(case[keys.LABEL]))
    fingerprint = _assemble(modality, case_ids, spacings, shapes, samples)
    fingerprint.num_channels = num_channels
    if objects:
        fingerprint.classes = summarize_objects(label_stats)
        fingerprint.foreground_box_mm = median_foreground_box(label_stats)
    return fingerprint


def case_id(case: dict, index: int) -> str:
    """The id a fingerprint records for the ``index``-th case of a datalist."""
    return str(case.get(keys.CASE_ID, index))


def save_fingerprint(fingerprint: Fingerprint, path: Union[str, Path]) -> Path:
    """Write the fingerprint as JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(fingerprint.to_dict(), indent=2))


def load_fingerprint(path: Union[str, Path]) -> Fingerprint:
    """Read a fingerprint written by :func:`save_fingerprint`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read fingerprint {path}: {err}; fix: delete it so it is computed "
                        "again") from err
    return Fingerprint.from_dict(data)


def resolve_preprocess(preprocess_cfg: PreprocessConfig, fingerprint: Union[Fingerprint, None],
                       modality: str) -> ResolvedPreprocess:
    """Replace the config's "auto" values with numbers from the fingerprint.

    Args:
        preprocess_cfg: ``cfg.preprocess``.
        fingerprint: the training set's fingerprint, or None when none was computed.
        modality: "CT" or "MRI" (the dataset's, when ``data.modality`` is "auto").

    Returns:
        The resolved settings.

    Raises:
        ConfigError: "auto" (or CT z-scoring) is asked for but there is no fingerprint or it
            lacks what is needed, or the modality is unknown.
    """
    modality = _canonical_modality(modality, ConfigError)
    cfg = preprocess_cfg
    if cfg.target_spacing == "auto":
        target_spacing = tuple(_need(fingerprint, "target_spacing", "preprocess.target_spacing"))
    else:
        target_spacing = tuple(float(s) for s in cfg.target_spacing)
    window, mean, std = None, None, None
    if modality == "CT":
        window, mean, std = _resolve_ct(cfg, fingerprint)
    return ResolvedPreprocess(
        modality=modality, target_spacing=target_spacing, ct_window=window,
        ct_normalization=cfg.ct_normalization, mean=mean, std=std,
        crop_foreground=cfg.crop_foreground, body_threshold_hu=float(cfg.body_threshold_hu),
        crop_margin=int(cfg.crop_margin))


def anisotropic_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """nnU-Net's target spacing: the median, but the 10th percentile on a very coarse axis.

    When the coarsest median spacing exceeds ``ANISOTROPY_THRESHOLD`` times the finest other one
    (and that axis also has that many times fewer voxels), resampling to the median would
    interpolate too much; the coarse axis takes the 10th percentile of its spacings instead, kept
    above the other axes' spacing.

    Args:
        spacings: (N, 3) spacing per case.
        shapes: (N, 3) shape per case.
    """
    target = np.median(spacings, axis=0)
    target_shape = np.median(shapes, axis=0)
    coarse = int(np.argmax(target))
    others = [axis for axis in range(len(target)) if axis != coarse]
    if not others:
        return target
    other_spacing = max(target[others])
    aniso_spacing = target[coarse] > ANISOTROPY_THRESHOLD * other_spacing
    aniso_voxels = target_shape[coarse] * ANISOTROPY_THRESHOLD < min(target_shape[others])
    if aniso_spacing and aniso_voxels:
        coarse_spacing = float(np.percentile(spacings[:, coarse], 10))
        if coarse_spacing < other_spacing:
            coarse_spacing = other_spacing + 1e-5
        target[coarse] = coarse_spacing
    return target


def _resolve_ct(cfg: PreprocessConfig, fingerprint: Union[Fingerprint, None]):
    if cfg.ct_window == "auto":
        low = _need(fingerprint, "percentile_00_5", "preprocess.ct_window")
        high = _need(fingerprint, "percentile_99_5", "preprocess.ct_window")
        window = (float(low), float(high))
    else:
        window = tuple(float(v) for v in cfg.ct_window)
    if len(window) != 2 or window[0] >= window[1]:
        raise ConfigError(f"preprocess.ct_window must be [low, high] with low < high, not {list(window)}")
    if cfg.ct_normalization != "zscore":
        return window, None, None
    mean = _need(fingerprint, "mean", "preprocess.ct_normalization=zscore")
    std = _need(fingerprint, "std", "preprocess.ct_normalization=zscore")
    return window, float(mean), max(float(std), 1e-8)


def _need(fingerprint: Union[Fingerprint, None], name: str, setting: str):
    value = None if fingerprint is None else getattr(fingerprint, name)
    if value is None:
        why = "no dataset fingerprint was given" if fingerprint is None else (
            f"the fingerprint has no {name} (no CT labels to sample foreground from?)")
        raise ConfigError(f"{setting} needs the fingerprint's {name}, but {why}; fix: compute the "
                          f"fingerprint from labelled training cases, or set {setting.split('=')[0]} "
                          "explicitly (for CT z-scoring: preprocess.ct_normalization=window)")
    return value


def _canonical_modality(modality: str, error: type = DataError) -> str:
    name = str(modality).upper()
    if name in ("CT",):
        return "CT"
    if name in ("MR", "MRI"):
        return "MRI"
    raise error(f"modality must be 'CT' or 'MRI', not {modality!r}; fix: set data.modality "
                "or the modality in dataset.json")


def _channel_paths(image: Union[str, Sequence[str]]) -> list[str]:
    return [str(image)] if isinstance(image, (str, Path)) else [str(p) for p in image]


def _ras_spacing_and_shape(paths: Sequence[str]) -> tuple[list[float], list[int], int]:
    """Spacing and shape along the RAS axes (the axes after Orientationd("RAS")), and channels."""
    headers = [read_header(path) for path in paths]
    header = headers[0]
    axes = header.ras_axes()
    channels = sum(max(1, h.num_components) for h in headers)
    return [float(header.spacing[i]) for i in axes], [int(header.shape[i]) for i in axes], channels


def _assemble(modality, case_ids, spacings, shapes, samples) -> Fingerprint:
    spacing_array, shape_array = np.asarray(spacings), np.asarray(shapes)
    stats: dict[str, Any] = {}
    per_channel = [np.concatenate(channel) for channel in zip(*samples)] if samples else []
    foreground = np.concatenate(per_channel) if per_channel else np.empty(0)
    if foreground.size and modality == "CT":
        stats = {**_intensity_stats(foreground), "num_foreground_samples": int(foreground.size)}
    elif modality == "CT":
        logger.warning("no foreground voxels found in the CT labels: no intensity statistics")
    if per_channel and all(channel.size for channel in per_channel):
        stats["channel_stats"] = [_intensity_stats(channel) for channel in per_channel]
    return Fingerprint(
        modality=modality, case_ids=case_ids, spacings=spacing_array.tolist(),
        shapes=shape_array.tolist(), median_spacing=np.median(spacing_array, axis=0).tolist(),
        median_shape=np.median(shape_array, axis=0).tolist(),
        target_spacing=anisotropic_target_spacing(spacing_array, shape_array).tolist(), **stats)


def _intensity_stats(values: np.ndarray) -> dict[str, float]:
    return {"percentile_00_5": float(np.percentile(values, 0.5)),
            "percentile_99_5": float(np.percentile(values, 99.5)),
            "mean": float(values.mean()), "std": float(values.std())}
