"""Score a slice run's ``best.pt`` on labelled cases it never saw, with CIs over patients."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from radseg.errors import DataError
from radseg.pipeline.core.distributed import log_device
from radseg.pipeline.evaluate.classification import ClassificationReport, classification_report
from radseg.pipeline.slices.infer import SliceModel, load_slice_model, slice_probabilities

logger = logging.getLogger(__name__)


def evaluate_slices(model: str | Path, cases: Sequence, *, patient_pattern: str | None = None,
                    device: str = "auto", samples: int | None = None) -> ClassificationReport:
    """Per-slice and per-patient metrics of a slice classifier on labelled cases.

    The cases are preprocessed by the run's own chain and labelled with the run's label values;
    the threshold is the one chosen on validation and stored in the checkpoint.

    Args:
        model: a slice run's ``best.pt``.
        cases: labelled :class:`~radseg.pipeline.data.cases.Case` objects (held-out test cases).
        patient_pattern: as ``slices.patient_pattern`` (None: the run's own setting).
        device: "auto", "cpu" or "cuda".
        samples: bootstrap resamples (None: the run's ``slices.bootstrap_samples``).

    Raises:
        DataError: no cases, or cases without labels.
    """
    from radseg.pipeline.core.checkpoint import load_checkpoint
    from radseg.pipeline.data.splits import patient_lookup

    unlabelled = [c.case_id for c in cases if c.label is None]
    if not cases or unlabelled:
        raise DataError(f"slice evaluation needs labelled cases; got {len(cases)} case(s), unlabelled: "
                        f"{', '.join(unlabelled) or 'none'}; pass cases with label maps (e.g. imagesTs + labelsTs)")
    saved = load_checkpoint(model)
    slice_model = load_slice_model(saved, device)
    log_device(slice_model.device)
    values = (saved["label_values"]["liver"], saved["label_values"]["lesion"])
    patient_of = patient_lookup(cases, patient_pattern or slice_model.cfg.slices.patient_pattern)
    patients: dict[str, tuple[list, list]] = {}
    for case in cases:
        labels, scores = case_scores(slice_model, case, values)
        group = patients.setdefault(patient_of(case.case_id), ([], []))
        group[0].append(labels)
        group[1].append(scores)
    grouped = {p: (np.concatenate(y), np.concatenate(s)) for p, (y, s) in patients.items()}
    bootstrap = slice_model.cfg.slices.bootstrap_samples if samples is None else samples
    return classification_report(grouped, slice_model.threshold, samples=bootstrap, seed=slice_model.cfg.train.seed)


def case_scores(slice_model: SliceModel, case, label_values: tuple[list[int], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Slice labels (of the run's target) and probabilities of one labelled case, on the run's grid."""
    from radseg.pipeline.data.datalist import to_datalist
    from radseg.pipeline.slices.samples import build_slice_transforms, to_slice_case, user_errors
    from radseg.transforms.fingerprint import ResolvedPreprocess

    transform = build_slice_transforms(ResolvedPreprocess.from_dict(slice_model.preprocess), slice_model.cfg,
                                       label_values)
    with user_errors():
        stack = to_slice_case(transform(to_datalist([case])[0]))
    scores = slice_probabilities(slice_model.network, stack.image, slice_model.context, slice_model.sequence,
                                 device=slice_model.device, amp=slice_model.amp)
    return stack.target(slice_model.cfg.slices.target).astype(np.int64), scores


