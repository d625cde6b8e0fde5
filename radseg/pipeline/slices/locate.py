"""The liver locator: the z-range a slice classifier marks as liver, so the 3D model runs only there.

Contract for ``radseg predict --locate-with SLICE_RUN/best.pt`` (wired by the predict stage):

1. preprocess the scan for the 3D model as usual, giving ``image`` ``(C, X, Y, Z)`` on the RAS grid;
2. ``z_range = locate_z_range(slice_model, image, margin_mm, image_preprocess=<3D run's preprocess>)``;
3. ``None`` means the slice model found no liver: run the full volume and say so (a warning is
   logged here too); otherwise run the 3D model through :func:`predict_in_z_range`, which
   returns a full-size output (background outside the range), then invert onto the input grid as
   for a full run, so the written mask has the input's full geometry.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch

from radseg.pipeline.slices.infer import SliceModel, load_slice_model, slice_probabilities
from radseg.transforms.slices import slice_stack, slice_z_mm

logger = logging.getLogger(__name__)


def liver_run(probabilities: np.ndarray, threshold: float) -> tuple[int, int] | None:
    """The slices ``[start, stop)`` of the most convincing run of slices at or above ``threshold``.

    Runs separated by fewer below-threshold slices than they are long are merged first; the run
    with the largest summed probability wins, so a lone false-positive slice far from the liver
    does not stretch the range. None when no slice reaches the threshold.
    """
    above = np.flatnonzero(np.asarray(probabilities) >= threshold)
    if not len(above):
        return None
    runs = [[int(above[0]), int(above[0]) + 1]]
    for index in above[1:]:
        gap = int(index) - runs[-1][1]
        if gap <= max(1, (runs[-1][1] - runs[-1][0]) // 2):
            runs[-1][1] = int(index) + 1
        else:
            runs.append([int(index), int(index) + 1])
    best = max(runs, key=lambda r: float(np.sum(probabilities[r[0]:r[1]])))
    return best[0], best[1]


def locate_z_range(model: SliceModel | str, image: torch.Tensor, margin_mm: float = 20.0, *,
                   image_preprocess: dict | None = None, device: str = "auto") -> tuple[int, int] | None:
    """The z index range ``[z_start, z_stop)`` of ``image`` that holds the liver, plus a margin.

    Args:
        model: a :class:`SliceModel` or a slice run's ``best.pt``.
        image: ``(C, X, Y, Z)`` MetaTensor on a preprocessed RAS grid (the 3D run's), z superior;
            its affine gives the slice spacing. A plain tensor is read as 1 mm slices.
        margin_mm: added below and above the located slices (clamped to the volume).
        image_preprocess: the resolved preprocessing ``image`` went through (a 3D checkpoint's
            ``preprocess``); when its CT normalisation differs from the slice model's, the
            intensities are mapped onto the slice model's first. None: they are taken as equal.
        device: for a checkpoint path: "auto", "cpu" or "cuda".

    Returns:
        ``(z_start, z_stop)`` with ``0 <= z_start < z_stop <= Z``, or None when no slice reaches
        the model's threshold (the caller then runs the full volume and says so).
    """
    slice_model = model if isinstance(model, SliceModel) else load_slice_model(model, device)
    plain = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    plain = renormalise(plain.float(), image_preprocess, slice_model.preprocess)
    stack = slice_stack(plain, slice_model.cfg.train.roi_size)
    probabilities = slice_probabilities(slice_model.network, stack, slice_model.context, slice_model.sequence,
                                        device=slice_model.device, amp=slice_model.amp)
    found = liver_run(probabilities, slice_model.threshold)
    if found is None:
        logger.warning("the slice model found no liver slice (threshold %.3f); run the full volume instead",
                       slice_model.threshold)
        return None
    spacing = _z_spacing(image)
    extra = int(math.ceil(margin_mm / spacing))
    z_start, z_stop = max(0, found[0] - extra), min(int(image.shape[-1]), found[1] + extra)
    logger.info("liver located in slices %d-%d of %d (%.0f mm margin)", z_start, z_stop - 1, image.shape[-1], margin_mm)
    return z_start, z_stop


def renormalise(image: torch.Tensor, source: dict | None, target: dict) -> torch.Tensor:
    """CT intensities normalised by ``source`` settings, re-expressed as ``target`` would give them.

    Both CT schemes are a clipped linear map of HU (see :mod:`radseg.transforms.preprocess`), so
    the map is inverted to HU and applied again; HU clipped by the source window stay clipped.
    MRI (per-volume z-score either way) and ``source=None`` pass through.
    """
    if source is None or source.get("modality") != "CT" or target.get("modality") != "CT":
        return image
    (a_s, b_s), (a_t, b_t) = _linear_map(source), _linear_map(target)
    if (a_s, b_s, tuple(source["ct_window"])) == (a_t, b_t, tuple(target["ct_window"])):
        return image
    hu = (image - b_s) / a_s
    low, high = target["ct_window"]
    return a_t * hu.clamp(low, high) + b_t


def _linear_map(settings: dict) -> tuple[float, float]:
    """``(a, b)`` with normalised = a * clip(HU) + b, for a resolved CT preprocessing dict."""
    low, high = settings["ct_window"]
    if settings.get("ct_normalization") == "zscore":
        return 1.0 / settings["std"], -settings["mean"] / settings["std"]
    return 1.0 / (high - low), -low / (high - low)


def predict_in_z_range(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                       z_range: tuple[int, int] | None, outside: float | list[float] | None = None) -> torch.Tensor:
    """Run a 3D predictor on the slab ``z_range`` only; return an output of the full size.

    Args:
        predict: maps ``(B, C, X, Y, z)`` to ``(B, K, X, Y, z)`` (e.g. the sliding-window predictor).
        image: ``(B, C, X, Y, Z)``.
        z_range: ``(z_start, z_stop)`` from :func:`locate_z_range`; None runs the full volume.
        outside: per-class values written outside the slab (one float for every class, or K of
            them); None = background probability 1, other classes 0.

    Returns:
        ``(B, K, X, Y, Z)``: the prediction inside the slab, ``outside`` elsewhere.
    """
    if z_range is None:
        return predict(image)
    z_start, z_stop = z_range
    inside = predict(image[..., z_start:z_stop])
    full = inside.new_zeros((*inside.shape[:-1], image.shape[-1]))
    if outside is None:
        full[:, 0] = 1.0
    else:
        full[:] = torch.as_tensor(outside, dtype=full.dtype, device=full.device).reshape(
            (1, -1, 1, 1, 1) if not isinstance(outside, float) else ())
    full[..., z_start:z_stop] = inside
    return full


def _z_spacing(image: torch.Tensor) -> float:
    affine = getattr(image, "affine", None)
    if affine is None:
        return 1.0
    z = slice_z_mm(affine, image.shape[1:4] if image.ndim == 4 else image.shape[-3:])
    return float(abs(z[1] - z[0])) if len(z) > 1 else 1.0
