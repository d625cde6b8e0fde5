"""radseg's deterministic preprocessing written as MONAI bundle config items (``_target_`` plus arguments).

The same steps, in the same order and with the same parameters, as
:func:`radseg.transforms.preprocess.build_inference_transforms`: load, channel first, orient to RAS,
crop to the body (on the raw intensities), resample, normalise. ``radseg export`` writes them into
a bundle's ``inference.json`` and ``preprocessing.json``; ``radseg predict`` recognises them when
it reads back a bundle radseg exported.
"""

from __future__ import annotations

from typing import Any

from radseg import keys
from radseg.transforms.fingerprint import ResolvedPreprocess
from radseg.transforms.preprocess import crop_threshold, intensity_steps


def preprocessing_items(resolved: ResolvedPreprocess) -> list[dict[str, Any]]:
    """The deterministic preprocessing as MONAI bundle items (``_target_`` plus arguments).

    ``$`` values are MONAI bundle expressions (``$numpy.float32``, the crop's ``select_fn``).
    """
    image = keys.IMAGE
    items = [
        {"_target_": "LoadImaged", "keys": image, "image_only": True, "dtype": "$numpy.float32"},
        {"_target_": "EnsureChannelFirstd", "keys": image},
        {"_target_": "Orientationd", "keys": image, "axcodes": "RAS", "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
    ]
    if resolved.crop_foreground:
        threshold = crop_threshold(resolved)
        # radseg's AboveThreshold keeps the whole scan when no voxel passes; the lambda does that too
        select = f"$lambda x: (x > {threshold!r}) if bool((x > {threshold!r}).any()) else (x == x)"
        items.append({"_target_": "CropForegroundd", "keys": image, "source_key": image, "select_fn": select,
                      "margin": int(resolved.crop_margin), "allow_smaller": True})
    items.append({"_target_": "Spacingd", "keys": image, "pixdim": [float(s) for s in resolved.target_spacing],
                  "mode": "bilinear", "padding_mode": "border", "dtype": "$numpy.float32"})
    items += [{"_target_": name, "keys": image, **_plain(kwargs)} for name, kwargs in intensity_steps(resolved)]
    items.append({"_target_": "EnsureTyped", "keys": image, "dtype": "$torch.float32"})
    return items


def _plain(kwargs: dict) -> dict:
    """JSON-ready values (numpy and tuples to float and lists)."""
    return {k: [float(x) for x in v] if isinstance(v, (list, tuple)) else
            (v if isinstance(v, (bool, str)) or v is None else float(v)) for k, v in kwargs.items()}
