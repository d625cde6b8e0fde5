"""Slice stacks of whole cases from the one data layer, and their per-slice labels.

Cases go through the same discovery, reader, orientation, spacing, normalisation and cache as the
3D branch (:func:`radseg.transforms.preprocess.build_preprocess_transforms` and
:func:`radseg.pipeline.data.cache.build_dataset`); :class:`radseg.transforms.slices.SliceStackd`
is appended to that chain, so the cache holds the resized slice stacks.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import Compose

from radseg import keys
from radseg.configs.schema import RadsegConfig, SlicesConfig
from radseg.errors import ConfigError, RadsegError
from radseg.transforms.preprocess import build_preprocess_transforms
from radseg.transforms.slices import SliceStackd
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)

_LIVER_NAME = re.compile(r"liver", re.IGNORECASE)
_LESION_NAME = re.compile(r"tumou?r|lesion|cancer|metasta", re.IGNORECASE)


@dataclass
class SliceCase:
    """One case as a slice stack.

    Attributes:
        case_id: the case.
        image: ``(Z, C, H, W)`` resized axial slices, z from inferior to superior.
        z_mm: ``(Z,)`` world z of each slice (RAS mm).
        liver, lesion: ``(Z,)`` uint8 slice labels, None for unlabelled cases.
    """

    case_id: str
    image: torch.Tensor
    z_mm: np.ndarray
    liver: np.ndarray | None = None
    lesion: np.ndarray | None = None

    def target(self, name: str) -> np.ndarray:
        """The labels of ``slices.target`` ("liver" or "lesion")."""
        return self.liver if name == "liver" else self.lesion


def resolve_label_values(labels: dict[int, str], slices_cfg: SlicesConfig) -> tuple[list[int], list[int]]:
    """The label values of liver and of lesion, from the config or from the dataset's label names.

    Liver counts its lesions too (a tumour inside the liver is still liver), as in LiTS.

    Args:
        labels: the dataset's ``{value: name}``.
        slices_cfg: ``cfg.slices`` (``liver_labels``, ``lesion_labels``, ``target``).

    Returns:
        ``(liver_values, lesion_values)``.

    Raises:
        ConfigError: no liver label (or, for a lesion classifier, no lesion label), naming the
            names and values looked for and the dataset's labels.
    """
    lesion = slices_cfg.lesion_labels
    if lesion is None:
        lesion = [v for v, name in labels.items() if v and _LESION_NAME.search(str(name))]
    liver = slices_cfg.liver_labels
    if liver is None:
        liver = [v for v, name in labels.items() if v and _LIVER_NAME.search(str(name))] + list(lesion)
    declared = ", ".join(f"{v}: {n}" for v, n in sorted(labels.items()))
    if not liver:
        raise ConfigError(f"a liver slice classifier needs a liver label, but the dataset declares only {{{declared}}}; "
                          "expected a label named 'liver' (e.g. \"1\": \"liver\" in dataset.json) or set "
                          "slices.liver_labels to its value(s), e.g. --set slices.liver_labels=[5]")
    if slices_cfg.target == "lesion" and not lesion:
        raise ConfigError(f"slices.target=lesion needs a lesion label, but the dataset declares only {{{declared}}}; "
                          "expected a label named tumour/tumor/lesion/cancer or set slices.lesion_labels")
    return sorted(set(int(v) for v in liver)), sorted(set(int(v) for v in lesion))


def build_slice_transforms(resolved: Any, cfg: RadsegConfig, label_values: tuple[list[int], list[int]] | None,
                           image_dtype: str = "float32") -> Compose:
    """The one preprocessing chain, then :class:`SliceStackd` (all deterministic, so all cached).

    Args:
        resolved: the resolved preprocessing.
        cfg: the run config (``train.roi_size`` is the in-plane size; ``slices`` the label settings).
        label_values: ``(liver, lesion)`` values to label slices with; None for unlabelled input.
        image_dtype: dtype of the cached stacks.
    """
    chain = build_preprocess_transforms(resolved, with_label=label_values is not None, image_dtype=image_dtype)
    liver, lesion = label_values if label_values is not None else (None, None)
    step = SliceStackd(cfg.train.roi_size, liver, lesion, cfg.slices.min_liver_area_mm2,
                       cfg.slices.min_lesion_area_mm2, cfg.slices.context_slices)
    return Compose(list(chain.transforms) + [step])


@contextlib.contextmanager
def user_errors():
    """Re-raise the radseg error inside MONAI's "applying transform ..." wrapper, so the user sees it."""
    try:
        yield
    except RuntimeError as err:
        cause = err
        while cause is not None and not isinstance(cause, RadsegError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def load_slice_cases(dataset: Sequence[dict], *, progress: bool = True, desc: str = "slices") -> list[SliceCase]:
    """Every case of a (cached) dataset built with :func:`build_slice_transforms`, as slice stacks."""
    cases = []
    with user_errors():
        for index in progress_bar(range(len(dataset)), desc=desc, unit="case", disable=not progress, leave=False):
            cases.append(to_slice_case(dataset[index]))
    return cases


def to_slice_case(item: dict) -> SliceCase:
    """A :class:`SliceCase` from one output dict of :func:`build_slice_transforms`."""
    image = item[keys.IMAGE]
    image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    liver, lesion = item.get(keys.SLICE_LIVER), item.get(keys.SLICE_LESION)
    return SliceCase(str(item.get(keys.CASE_ID, "")), image, np.asarray(item[keys.SLICE_Z_MM], dtype=np.float64),
                     None if liver is None else np.asarray(liver, np.uint8),
                     None if lesion is None else np.asarray(lesion, np.uint8))


def class_balance(cases: Sequence[SliceCase], title: str) -> str:
    """One line per label: positive and negative slices and the share of positives."""
    lines = [f"{title}: {len(cases)} cases, {sum(len(c.z_mm) for c in cases)} slices"]
    for name in ("liver", "lesion"):
        values = np.concatenate([c.target(name) for c in cases]) if cases else np.zeros(0)
        positive = int(values.sum())
        share = positive / len(values) if len(values) else float("nan")
        lines.append(f"  {name:<7} present in {positive} slices, absent in {len(values) - positive} ({share:.1%} positive)")
    return "\n".join(lines)
