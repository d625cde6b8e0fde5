"""The files ``radseg evaluate`` writes: metrics.csv, lesions.csv, summary.json and report.html."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path

import SimpleITK as sitk

from radseg.atomic import write_text_atomic
from radseg.pipeline.core.quicklook import quicklook_png
from radseg.pipeline.evaluate.inputs import EvaluationInputs
from radseg.pipeline.evaluate.lesions import FROC_RATES, MATCHING_RULE, detection, froc
from radseg.pipeline.evaluate.loading import load_case
from radseg.pipeline.evaluate.metrics import CASE_METRICS, METRIC_DEFINITIONS, empty_conventions
from radseg.pipeline.evaluate.report import render_report
from radseg.pipeline.evaluate.summary import summarise
from radseg.transforms.io import read_image

logger = logging.getLogger(__name__)

OUTPUT_FILES = ("metrics.csv", "lesions.csv", "summary.json", "report.html")
_BOX = ("box_min_x_mm", "box_min_y_mm", "box_min_z_mm", "box_max_x_mm", "box_max_y_mm", "box_max_z_mm")


def write_outputs(output: Path, inputs: EvaluationInputs, results: list, tolerances: dict[int, float],
                  lesion_ids: tuple[int, ...], *, min_overlap: float, resamples: int, seed: int,
                  worst_cases: int, pred_dir: Path, truth: Path,
                  worst_case_distances: bool = False) -> tuple[dict, list[Path]]:
    """Build every table, the summary and the report in memory, then write them (each atomically).

    Returns:
        The summary (as in ``summary.json``, NaN as None) and the paths written.
    """
    names = {index: name for index, name in inputs.labels.items() if index}
    rows = metric_rows(results, names, tolerances)
    summary = build_summary(rows, results, inputs, names, tolerances, lesion_ids, min_overlap, resamples, seed,
                            worst_case_distances)
    summary.update(pred=str(pred_dir), truth=str(truth))
    worst = _worst_pictures(rows, inputs, set(summary["resampled"]), worst_cases, len(inputs.labels))
    texts = {"metrics.csv": _csv(rows, ["case_id", "class_index", "class", "status", "resampled", "tolerance_mm",
                                        *CASE_METRICS]),
             "summary.json": json.dumps(_no_nan(summary), indent=2) + "\n",
             "report.html": render_report(summary, rows, worst,
                                          "review/index.html" if (output / "review" / "index.html").is_file() else None)}
    if lesion_ids:
        texts["lesions.csv"] = _csv(lesion_rows(results, names), ["case_id", "class", "kind", "lesion", "status",
                                    "matches", "voxels", "volume_ml", "dice", "score", *_BOX])
    output.mkdir(parents=True, exist_ok=True)
    files = [write_text_atomic(output / name, texts[name]) for name in OUTPUT_FILES if name in texts]
    return _no_nan(summary), files


def metric_rows(results: list, names: dict[int, str], tolerances: dict[int, float]) -> list[dict]:
    """One row per case and class; a missing prediction gives rows with status 'missing' and NaN values."""
    rows = []
    for result in results:
        for index, name in names.items():
            scores = result.scores[index] if result.scores is not None else dict.fromkeys(CASE_METRICS, math.nan)
            rows.append({"case_id": result.case_id, "class_index": index, "class": name,
                         "status": "scored" if result.scores is not None else "missing",
                         "resampled": result.resampled, "tolerance_mm": tolerances[index], **scores})
    return rows


def lesion_rows(results: list, names: dict[int, str]) -> list[dict]:
    """One row per true and predicted lesion, with its match, Dice, volume and world box."""
    rows = []
    for result in results:
        for index, lesions in result.lesions.items():
            for lesion in lesions:
                rows.append({"case_id": result.case_id, "class": names[index], "kind": lesion.kind,
                             "lesion": lesion.index, "status": lesion.status,
                             "matches": ";".join(str(m) for m in lesion.matches), "voxels": lesion.voxels,
                             "volume_ml": lesion.volume_ml, "dice": lesion.dice, "score": lesion.score,
                             **dict(zip(_BOX, [*lesion.box_mm[0], *lesion.box_mm[1]]))})
    return rows


def build_summary(rows: list[dict], results: list, inputs: EvaluationInputs, names: dict[int, str],
                  tolerances: dict[int, float], lesion_ids: tuple[int, ...], min_overlap: float,
                  resamples: int, seed: int, worst_case_distances: bool = False) -> dict:
    """The content of ``summary.json`` (each metric's summary has ``n`` and ``n_undefined``)."""
    metrics = {name: {metric: summarise([r[metric] for r in rows if r["class"] == name and r["status"] == "scored"],
                                        resamples=resamples, seed=seed).as_dict()
                      for metric in CASE_METRICS} for name in names.values()}
    summary = {
        "truth_set": inputs.truth_set, "num_cases": len(results),
        "num_scored": sum(1 for r in results if r.scores is not None),
        "missing_predictions": inputs.missing, "extra_predictions": inputs.extra_predictions,
        "resampled": [r.case_id for r in results if r.resampled],
        "labels": {str(k): v for k, v in inputs.labels.items()},
        "tolerance_mm": {names[k]: v for k, v in tolerances.items()},
        "definitions": METRIC_DEFINITIONS,
        "conventions": empty_conventions(worst_case_distances),
        "worst_case_distances": worst_case_distances,
        "bootstrap": {"method": "percentile bootstrap of the mean over cases", "resamples": resamples,
                      "seed": seed, "level": 0.95},
        "metrics": metrics,
    }
    if lesion_ids:
        summary["lesion_rule"] = MATCHING_RULE.format(min_overlap=min_overlap)
        summary["lesions"] = {names[cls]: _lesion_summary(results, cls) for cls in lesion_ids}
        unchecked = [r.case_id for r in results if r.has_probabilities and not r.probability_grid_checked]
        if unchecked:
            summary["probability_grid_unchecked"] = unchecked  # .npy maps: no affine, only the shape was checked
        without = [r.case_id for r in results if r.scores is not None and not r.has_probabilities]
        if without:
            summary["froc_note"] = (f"needs a probability map (<case>_probabilities.npz, .npy or .nii.gz) for every "
                                    f"scored case; missing for "
                                    f"{', '.join(without[:5])}{' and more' if len(without) > 5 else ''}")
    return summary


def _lesion_summary(results: list, cls: int) -> dict:
    scored = [r for r in results if r.scores is not None]
    everything = [lesion for r in scored for lesion in r.lesions.get(cls, [])]
    counts = detection(everything)
    true_dice = [lesion.dice for lesion in everything if lesion.kind == "true"]
    summary = {"true_lesions": counts.true_positives + counts.false_negatives, "predicted_lesions": counts.predictions,
               "tp": counts.true_positives, "fn": counts.false_negatives, "fp": counts.false_positives,
               "sensitivity": counts.sensitivity, "precision": counts.precision, "f1": counts.f1,
               "mean_lesion_dice": sum(true_dice) / len(true_dice) if true_dice else math.nan}
    if scored and all(r.has_probabilities for r in scored):
        summary["froc"] = {str(rate): value for rate, value in froc({r.case_id: r.lesions.get(cls, []) for r in scored},
                                                                  FROC_RATES).items()}
    return summary


def _worst_pictures(rows: list[dict], inputs: EvaluationInputs, resampled: set[str], count: int,
                    num_classes: int) -> list[dict]:
    """The ``count`` lowest-Dice cases of each class, with a quick-look PNG each."""
    pairs = {pair.case_id: pair for pair in inputs.pairs}
    worst = []
    for name in dict.fromkeys(r["class"] for r in rows):
        scored = [r for r in rows if r["class"] == name and r["status"] == "scored" and not math.isnan(r["dice"])]
        for row in sorted(scored, key=lambda r: r["dice"])[:count]:
            pair = pairs[row["case_id"]]
            case = load_case(pair, num_classes, resample=row["case_id"] in resampled)
            image = _scan(pair.image, case.truth.shape)
            png = quicklook_png(image, [case.truth == row["class_index"], case.pred == row["class_index"]],
                                spacing=case.spacing, title=f"{row['case_id']} · {name}")
            worst.append({**row, "png": png})
    return worst


def _scan(path: Path | None, shape: tuple[int, ...]):
    """The scan's voxels when it is on the truth's grid (first channel), else None (outlines on black)."""
    if path is None:
        return None
    try:
        array = sitk.GetArrayFromImage(read_image(path)).T
    except Exception as err:  # the picture is a courtesy: a scan that cannot be read only loses its grey
        logger.warning("no scan in the quick look of %s: %s", path, err)
        return None
    array = array[..., 0] if array.ndim == 4 else array
    return array if array.shape == tuple(shape) else None


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return buffer.getvalue()


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def _no_nan(value):
    """NaN as None (JSON null), recursively: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value
