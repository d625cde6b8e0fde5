"""A MONAI bundle's preprocessing and inferer mapped onto radseg's own chain and sliding window.

radseg's chain is fixed: orient to RAS, crop to the body (on the raw intensities), resample,
normalise (:func:`radseg.transforms.preprocess.build_preprocess_transforms`). A bundle's
``Orientationd``, ``Spacingd``, ``CropForegroundd`` and its intensity transforms
(``ScaleIntensityRanged``, ``NormalizeIntensityd``, ``ScaleIntensityd``, kept as the bundle gives
them) fill that chain's settings; loading and typing steps need no counterpart. Any other transform,
or an argument radseg cannot honour, is refused in one line naming it: never skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from radseg.errors import DataError
from radseg.transforms.fingerprint import ResolvedPreprocess

logger = logging.getLogger(__name__)

#: steps whose work radseg's reader and chain already do (read, channel first, tensor type)
_NO_COUNTERPART_NEEDED = {"LoadImaged", "EnsureChannelFirstd", "AddChanneld", "EnsureTyped", "ToTensord",
                          "CastToTyped", "DataStatsd", "Identityd"}
#: arguments of each mapped transform radseg can honour (others are refused)
_ALLOWED = {
    "Orientationd": {"axcodes", "labels", "as_closest_canonical"},
    "Spacingd": {"pixdim", "mode", "padding_mode", "dtype", "align_corners"},
    "ScaleIntensityRanged": {"a_min", "a_max", "b_min", "b_max", "clip", "dtype"},
    "NormalizeIntensityd": {"subtrahend", "divisor", "nonzero", "channel_wise", "dtype"},
    "ScaleIntensityd": {"minv", "maxv", "channel_wise", "dtype"},
    "CropForegroundd": {"source_key", "margin", "allow_smaller", "k_divisible", "start_coord_key", "end_coord_key"},
}
#: every transform a bundle's preprocessing may name (bundle_checks builds no other)
MAPPED_TRANSFORMS = (*sorted(_NO_COUNTERPART_NEEDED), *_ALLOWED)
_INTENSITY_ARGS = {"ScaleIntensityRanged": ("a_min", "a_max", "b_min", "b_max", "clip"),
                   "NormalizeIntensityd": ("subtrahend", "divisor", "nonzero", "channel_wise"),
                   "ScaleIntensityd": ("minv", "maxv", "channel_wise")}
#: SlidingWindowInferer arguments radseg's window honours, or that only place the work
_INFERER_ARGS = {"roi_size", "sw_batch_size", "overlap", "mode", "padding_mode", "device", "sw_device", "progress",
                 "cache_roi_weight_map", "cpu_thresh", "sigma_scale", "cval", "buffer_steps", "buffer_dim"}


def transform_name(target: str) -> str:
    """``monai.transforms.Spacingd`` -> ``Spacingd``."""
    return str(target).rsplit(".", 1)[-1]


def map_preprocessing(items: list[dict[str, Any]], modality: str, source: str) -> ResolvedPreprocess:
    """radseg's preprocessing settings from a bundle's resolved preprocessing items.

    Args:
        items: the bundle's ``preprocessing`` transforms, references resolved (``_target_`` plus arguments).
        modality: "CT" or "MRI".
        source: the bundle folder, for messages.

    Raises:
        DataError: a transform or argument without a counterpart, or no Orientationd/Spacingd.
    """
    state = {"spacing": None, "oriented": False, "steps": [], "crop": None}
    for item in items:
        name = transform_name(item.get("_target_", "?"))
        if name in _NO_COUNTERPART_NEEDED:
            continue
        if name not in _ALLOWED:
            raise DataError(f"bundle {source}: preprocessing transform {name} has no counterpart in radseg's chain "
                            f"(it maps {', '.join(sorted(_ALLOWED))}); refused rather than skipped; fix: run this "
                            "bundle with MONAI (python -m monai.bundle run)")
        _check_args(name, item, source)
        _MAPPERS[name](item, state, source, modality)
    if not state["oriented"] or state["spacing"] is None:
        missing = "Orientationd" if not state["oriented"] else "Spacingd"
        raise DataError(f"bundle {source}: its preprocessing has no {missing}; radseg's predictor always orients to "
                        "RAS and resamples, so it would feed the network other voxels; fix: run it with MONAI")
    return _resolved(state, modality)


def map_inferer(item: dict[str, Any], source: str) -> dict[str, Any]:
    """roi_size, sw_batch_size, overlap and blend mode from a bundle's ``SlidingWindowInferer``."""
    name = transform_name(item.get("_target_", "?"))
    if name != "SlidingWindowInferer":
        raise DataError(f"bundle {source}: inferer {name} has no counterpart in radseg's predictor (it maps "
                        "SlidingWindowInferer); fix: run this bundle with MONAI")
    unknown = sorted(set(item) - _INFERER_ARGS - {"_target_"})
    if unknown or float(item.get("sigma_scale", 0.125)) != 0.125 or float(item.get("cval", 0.0)) != 0.0:
        raise DataError(f"bundle {source}: SlidingWindowInferer arguments {unknown or ['sigma_scale/cval']} have "
                        "no counterpart in radseg's sliding window; fix: run this bundle with MONAI")
    if item.get("padding_mode", "constant") != "constant":
        logger.warning("bundle %s: SlidingWindowInferer pads windows larger than the scan with %s; radseg pads "
                       "with zeros (this matters only along axes where the scan is smaller than the window)",
                       source, item["padding_mode"])
    roi_size = item["roi_size"]
    roi_size = [int(roi_size)] * 3 if isinstance(roi_size, (int, float)) else [int(s) for s in roi_size]
    return {"roi_size": roi_size, "sw_batch_size": int(item.get("sw_batch_size", 1)),
            "overlap": float(item.get("overlap", 0.25)), "blend_mode": str(item.get("mode", "constant"))}


def _check_args(name: str, item: dict, source: str) -> None:
    unknown = sorted(set(item) - _ALLOWED[name] - {"_target_", "keys", "allow_missing_keys", "meta_keys",
                                                     "meta_key_postfix", "lazy"})
    if unknown:
        raise DataError(f"bundle {source}: {name} arguments {unknown} have no counterpart in radseg's chain; "
                        "refused rather than ignored; fix: run this bundle with MONAI")


def _orientation(item: dict, state: dict, source: str, modality: str) -> None:
    axcodes = str(item.get("axcodes", "")).upper()
    if axcodes != "RAS" or item.get("as_closest_canonical"):
        raise DataError(f"bundle {source}: Orientationd(axcodes={item.get('axcodes')!r}) differs from radseg's RAS; "
                        "fix: run this bundle with MONAI")
    state["oriented"] = True


def _spacing(item: dict, state: dict, source: str, modality: str) -> None:
    pixdim = item["pixdim"]
    pixdim = [float(pixdim)] * 3 if isinstance(pixdim, (int, float)) else [float(p) for p in pixdim]
    mode = str(item.get("mode", "bilinear"))
    if len(pixdim) != 3 or mode != "bilinear" or str(item.get("padding_mode", "border")) != "border":
        raise DataError(f"bundle {source}: Spacingd(pixdim={pixdim}, mode={mode!r}, padding_mode="
                        f"{item.get('padding_mode', 'border')!r}) differs from radseg's bilinear resampling with "
                        "border padding to 3 spacings; fix: run this bundle with MONAI")
    state["spacing"] = tuple(pixdim)


def _intensity(item: dict, state: dict, source: str, modality: str) -> None:
    name = transform_name(item["_target_"])
    if name == "ScaleIntensityRanged" and not item.get("clip", False):
        raise DataError(f"bundle {source}: ScaleIntensityRanged(clip=False) has no counterpart: radseg clips its "
                        "intensity window; fix: run this bundle with MONAI")
    kwargs = {arg: _plain(item[arg]) for arg in _INTENSITY_ARGS[name] if arg in item}
    state["steps"].append((name, kwargs))


def _crop(item: dict, state: dict, source: str, modality: str) -> None:
    """radseg crops on the raw intensities before resampling: the bundle's rule, carried back to raw values."""
    if "select_fn" in item or item.get("source_key", "image") != item.get("keys", "image") or item.get("k_divisible", 1) != 1:
        raise DataError(f"bundle {source}: CropForegroundd with its own select_fn, source_key or k_divisible has "
                        "no counterpart (radseg keeps voxels above one intensity); fix: run this bundle with MONAI")
    threshold = _raw_threshold(state["steps"], source)
    if modality != "CT" and threshold != 0.0:
        raise DataError(f"bundle {source}: CropForegroundd after the intensity window of an MRI model has no "
                        "counterpart (radseg crops MRI to its non-zero voxels); fix: run this bundle with MONAI")
    margin = item.get("margin", 0)
    if not isinstance(margin, int):
        raise DataError(f"bundle {source}: CropForegroundd(margin={margin}) per axis has no counterpart; fix: "
                        "run this bundle with MONAI")
    state["crop"] = (threshold, margin)
    logger.info("bundle %s: CropForegroundd runs before resampling in radseg (intensity > %g, margin %d voxels)",
                source, threshold, margin)


def _raw_threshold(steps: list, source: str) -> float:
    """The raw intensity above which a voxel is > 0 after ``steps`` (CropForegroundd's default rule)."""
    if not steps:
        return 0.0
    if len(steps) > 1 or steps[0][0] != "ScaleIntensityRanged":
        raise DataError(f"bundle {source}: CropForegroundd after {', '.join(s for s, _ in steps)} has no counterpart "
                        "(radseg crops on raw intensities); fix: run this bundle with MONAI")
    p = steps[0][1]
    if p["b_min"] >= 0:  # clipped at b_min: > 0 exactly where raw > a_min (b_min == 0), or everywhere
        return float(p["a_min"]) if p["b_min"] == 0 else float("-inf")
    return float(p["a_min"] + (0.0 - p["b_min"]) * (p["a_max"] - p["a_min"]) / (p["b_max"] - p["b_min"]))


def _resolved(state: dict, modality: str) -> ResolvedPreprocess:
    window = next(((p["a_min"], p["a_max"]) for n, p in state["steps"] if n == "ScaleIntensityRanged"), None)
    crop = state["crop"]
    return ResolvedPreprocess(
        modality=modality, target_spacing=state["spacing"], ct_window=window, ct_normalization="window",
        crop_foreground=crop is not None and crop[0] != float("-inf"),
        body_threshold_hu=crop[0] if crop is not None and modality == "CT" else -500.0,
        crop_margin=crop[1] if crop is not None else 0, intensity_steps=tuple(state["steps"]),
    )


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


_MAPPERS = {"Orientationd": _orientation, "Spacingd": _spacing, "ScaleIntensityRanged": _intensity,
            "NormalizeIntensityd": _intensity, "ScaleIntensityd": _intensity, "CropForegroundd": _crop}
