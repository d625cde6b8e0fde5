"""Binary classification metrics with confidence intervals over patients (the 2D slice branch).

Slices of one patient are not independent, so every confidence interval resamples *patients*
(with replacement) and recomputes the statistic: pooled over the chosen patients' slices
("per slice"), or averaged over patients after scoring each patient on its own ("per patient").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from scipy.stats import rankdata

Arrays = tuple[np.ndarray, np.ndarray]
#: the metrics reported at a threshold
METRICS = ("accuracy", "sensitivity", "specificity", "auc")


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN with one class."""
    labels = np.asarray(labels).astype(bool)
    positive, negative = int(labels.sum()), int((~labels).sum())
    if positive == 0 or negative == 0:
        return math.nan
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - positive * (positive + 1) / 2) / (positive * negative))


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """``tn``, ``fp``, ``fn``, ``tp`` of ``scores >= threshold`` against ``labels``."""
    truth = np.asarray(labels).astype(bool)
    called = np.asarray(scores) >= threshold
    return {"tn": int((~truth & ~called).sum()), "fp": int((~truth & called).sum()),
            "fn": int((truth & ~called).sum()), "tp": int((truth & called).sum())}


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, sensitivity, specificity (NaN when undefined) at ``threshold``, and ROC AUC."""
    c = confusion(labels, scores, threshold)
    total = sum(c.values())
    return {
        "accuracy": (c["tp"] + c["tn"]) / total if total else math.nan,
        "sensitivity": c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else math.nan,
        "specificity": c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else math.nan,
        "auc": roc_auc(labels, scores),
    }


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (0.5 when one class is absent).

    Candidates are midpoints between consecutive distinct scores, so the threshold separates the
    scores it was chosen on rather than sitting on one of them.
    """
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        return 0.5
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-6]])
    called = scores[None, :] >= candidates[:, None]
    sensitivity = (called & labels).sum(1) / labels.sum()
    specificity = (~called & ~labels).sum(1) / (~labels).sum()
    return float(np.clip(candidates[int(np.argmax(sensitivity + specificity))], 0.0, 1.0))


def bootstrap_ci(patients: Mapping[str, Arrays], statistic: Callable[[list[Arrays]], dict[str, float]],
                 samples: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each value of ``statistic`` over resamples of patients.

    Args:
        patients: patient -> ``(labels, scores)`` of its slices.
        statistic: from a list of per-patient arrays (one resample, with replacement) to named
            numbers; NaNs (undefined on a resample) are skipped.
        samples: number of resamples; 0 gives NaN intervals.
        seed: the resampling seed.
    """
    groups = list(patients.values())
    rng = np.random.default_rng(seed)
    draws = [statistic([groups[i] for i in rng.integers(len(groups), size=len(groups))])
             for _ in range(samples if groups else 0)]
    names = list(draws[0]) if draws else list(statistic(groups)) if groups else []
    intervals = {}
    for name in names:
        values = np.array([d[name] for d in draws], dtype=np.float64)
        values = values[~np.isnan(values)]
        intervals[name] = tuple(float(v) for v in np.percentile(values, [2.5, 97.5])) if len(values) else (math.nan, math.nan)
    return intervals


@dataclass
class ClassificationReport:
    """Per-slice (pooled) and per-patient (mean over patients) metrics with 95% CIs over patients."""

    threshold: float
    num_patients: int
    num_slices: int
    per_slice: dict[str, float]
    per_slice_ci: dict[str, tuple[float, float]]
    per_patient: dict[str, float]
    per_patient_ci: dict[str, tuple[float, float]]
    confusion: dict[str, int]
    patient_auc: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain containers (for checkpoints and JSON)."""
        return {"threshold": self.threshold, "num_patients": self.num_patients, "num_slices": self.num_slices,
                "per_slice": dict(self.per_slice), "per_slice_ci": {k: list(v) for k, v in self.per_slice_ci.items()},
                "per_patient": dict(self.per_patient),
                "per_patient_ci": {k: list(v) for k, v in self.per_patient_ci.items()},
                "confusion": dict(self.confusion), "patient_auc": dict(self.patient_auc)}

    def __str__(self) -> str:
        rows = [f"{self.num_patients} patients, {self.num_slices} slices, threshold {self.threshold:.3f}",
                f"{'metric':<12}{'per slice':>10}{'95% CI':>18}{'per patient':>13}{'95% CI':>18}"]
        for name in METRICS:
            rows.append(f"{name:<12}{self.per_slice[name]:>10.3f}{_ci(self.per_slice_ci[name]):>18}"
                        f"{self.per_patient[name]:>13.3f}{_ci(self.per_patient_ci[name]):>18}")
        c = self.confusion
        rows.append(f"confusion (slices): TN {c['tn']}  FP {c['fp']}  FN {c['fn']}  TP {c['tp']}")
        return "\n".join(rows)


def classification_report(patients: Mapping[str, Arrays], threshold: float, *, samples: int = 1000,
                          seed: int = 0) -> ClassificationReport:
    """Score slice probabilities grouped by patient.

    Args:
        patients: patient -> ``(labels (N,), scores (N,))`` of its slices (labels 0/1).
        threshold: the decision threshold (chosen on validation, never on these cases).
        samples: bootstrap resamples of patients for the CIs.
        seed: the bootstrap seed.
    """
    labels = np.concatenate([g[0] for g in patients.values()])
    scores = np.concatenate([g[1] for g in patients.values()])
    per_patient_values = {p: binary_metrics(y, s, threshold) for p, (y, s) in patients.items()}
    # per-patient metrics are computed once; a resample of patients resamples them
    scored = {p: (np.array([m[n] for n in METRICS]), np.zeros(0)) for p, m in per_patient_values.items()}
    return ClassificationReport(
        threshold=float(threshold), num_patients=len(patients), num_slices=len(labels),
        per_slice=binary_metrics(labels, scores, threshold),
        per_slice_ci=bootstrap_ci(patients, lambda groups: _pooled(groups, threshold), samples, seed),
        per_patient={n: _nanmean([m[n] for m in per_patient_values.values()]) for n in METRICS},
        per_patient_ci=bootstrap_ci(scored, _mean_of, samples, seed),
        confusion=confusion(labels, scores, threshold),
        patient_auc={p: m["auc"] for p, m in per_patient_values.items()},
    )


def _pooled(groups: list[Arrays], threshold: float) -> dict[str, float]:
    return binary_metrics(np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups]), threshold)


def _mean_of(groups: list[Arrays]) -> dict[str, float]:
    table = np.stack([g[0] for g in groups])
    return {name: _nanmean(list(table[:, i])) for i, name in enumerate(METRICS)}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _ci(interval: tuple[float, float]) -> str:
    return "n/a" if math.isnan(interval[0]) else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
