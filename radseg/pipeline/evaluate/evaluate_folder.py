"""``radseg evaluate``: score a folder of predictions against the truth, per case, class and lesion.

Writes ``metrics.csv`` (one row per case and class), ``lesions.csv`` (one row per lesion, with
``--lesion-classes``), ``summary.json`` and ``report.html``, each atomically and only once every case
has been scored, so a failure leaves no half-written output.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


from radseg.errors import DataError
from radseg.pipeline.evaluate import outputs
from radseg.pipeline.evaluate.inputs import EvaluationInputs, class_indices, class_tolerances, gather_inputs
from radseg.pipeline.evaluate.lesions import Lesion, match_lesions
from radseg.pipeline.evaluate.loading import check_geometry, load_case
from radseg.pipeline.evaluate.metrics import score_case
from radseg.pipeline.evaluate.summary import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """One case's scores: ``{class index: {metric: value}}`` and ``{class index: [Lesion]}``."""

    case_id: str
    scores: dict[int, dict[str, float]] | None  # None: prediction missing
    lesions: dict[int, list[Lesion]] = field(default_factory=dict)
    resampled: bool = False
    has_probabilities: bool = False
    probability_grid_checked: bool = True  # False: the map had no affine (.npy), only its shape was checked


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folder` wrote, and the summary it holds."""

    output: Path
    summary: dict
    files: list[Path]

    def __str__(self) -> str:
        lines = [f"{'class':<14}{'n':>4}{'Dice':>8}{'undef':>6}{'95% CI':>16}{'HD95 mm':>9}{'undef':>6}"
                 f"{'NSD':>7}{'undef':>6}"]
        for name, metrics in self.summary["metrics"].items():
            d, h, s = metrics["dice"], metrics["hd95_mm"], metrics["surface_dice"]
            lines.append(f"{name:<14}{d['n']:>4}{_f(d['mean']):>8}{d['n_undefined']:>6}"
                         f"{_f(d['ci_low']) + '-' + _f(d['ci_high']):>16}{_f(h['mean']):>9}{h['n_undefined']:>6}"
                         f"{_f(s['mean']):>7}{s['n_undefined']:>6}")
        lines.append("undef: cases where the metric is undefined (an empty mask), left out of the mean"
                     + ("" if self.summary.get("worst_case_distances") else
                        "; --worst-case-distances gives HD95/ASSD of a missed or spurious structure the volume's "
                        "diagonal instead"))
        for name, lesion in self.summary.get("lesions", {}).items():
            lines.append(f"{name} lesions: {lesion['tp']} TP, {lesion['fn']} FN, {lesion['fp']} FP; sensitivity "
                         f"{_f(lesion['sensitivity'])}, precision {_f(lesion['precision'])}")
        if self.summary["missing_predictions"]:
            lines.append(f"missing predictions (not scored): {', '.join(self.summary['missing_predictions'])}")
        if self.summary["resampled"]:
            lines.append(f"resampled onto the truth grid (nearest neighbour): {', '.join(self.summary['resampled'])}")
        lines.append(f"wrote {', '.join(p.name for p in self.files)} to {self.output}")
        return "\n".join(lines)


def evaluate_folder(pred: str | Path, truth: str | Path, output: str | Path, *, labels: str | dict | None = None,
                    lesion_classes: tuple[str, ...] = (), tolerance_mm: float | str | dict | None = None,
                    resample: bool = False, overwrite: bool = False, min_overlap: float = 0.1,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, worst_cases: int = 3,
                    worst_case_distances: bool = False, progress: bool = True) -> EvaluationResult:
    """Score every prediction against its truth and write the tables, summary and report.

    Args:
        pred: folder of predicted label maps ``<case id>.nii.gz`` (and optional
            ``<case id>_probabilities.nii.gz``, see :mod:`radseg.pipeline.evaluate.inputs`).
        truth: a folder of label files or a dataset (MSD, nnU-Net v2, images/labels, CSV).
        output: the folder for ``metrics.csv``, ``lesions.csv``, ``summary.json``, ``report.html``.
        labels: the label map, overriding the truth's (dict, JSON file, or ``"1=liver,2=tumour"``).
        lesion_classes: class names (or numbers) scored as lesions too.
        tolerance_mm: surface-Dice tolerance, one number or per class (``"liver=3,tumour=1"``).
        resample: put predictions on another grid onto the truth's (nearest neighbour) instead of
            refusing them.
        overwrite: replace earlier results in ``output``.
        min_overlap: lesion matching threshold (fraction of the smaller lesion).
        resamples: bootstrap resamples for the confidence intervals.
        seed: the bootstrap's seed.
        worst_cases: cases per class shown with a quick-look image in the report.
        worst_case_distances: where exactly one of prediction and truth is empty, give HD95 and
            ASSD the diagonal of the volume's physical extent (mm) instead of leaving them undefined
            (NaN, out of the mean; counted in ``n_undefined``).
        progress: show a progress bar over cases.

    Returns:
        The summary and the files written.

    Raises:
        DataError: bad input (see the messages); nothing is written then.
    """
    start = time.perf_counter()
    inputs = gather_inputs(pred, truth, labels)
    lesion_ids = class_indices(list(lesion_classes), inputs.labels, "--lesion-classes")
    tolerances = class_tolerances(tolerance_mm, inputs.labels)
    output = Path(output).expanduser()
    _check_output(output, overwrite)
    if inputs.missing:
        logger.warning("%d truth case(s) have no prediction (scored as missing): %s", len(inputs.missing),
                       ", ".join(inputs.missing))
    differing = check_geometry(inputs.pairs, resample)
    if differing:
        logger.warning("resampling %d prediction(s) onto the truth grid (nearest neighbour): %s",
                       len(differing), ", ".join(differing))
    results = _score_all(inputs, tolerances, lesion_ids, set(differing), min_overlap, progress, worst_case_distances)
    summary, files = outputs.write_outputs(output, inputs, results, tolerances, lesion_ids,
                                  min_overlap=min_overlap, resamples=resamples, seed=seed,
                                  worst_cases=worst_cases, pred_dir=Path(pred), truth=Path(truth),
                                  worst_case_distances=worst_case_distances)
    logger.info("evaluated %d cases in %.1f s", len(results), time.perf_counter() - start)
    return EvaluationResult(output, summary, files)


def _score_all(inputs: EvaluationInputs, tolerances: dict[int, float], lesion_ids: tuple[int, ...],
               differing: set[str], min_overlap: float, progress: bool,
               worst_case_distances: bool = False) -> list[CaseResult]:
    """Score every case; bad label values of all cases are reported together at the end."""
    classes = {index: name for index, name in inputs.labels.items() if index}
    results, problems = [], []
    for pair in progress_bar(inputs.pairs, desc="evaluate", unit="case", disable=not progress):
        if pair.pred is None:
            results.append(CaseResult(pair.case_id, None))
            continue
        try:
            case = load_case(pair, len(inputs.labels), resample=pair.case_id in differing,
                             probability_classes=lesion_ids)
        except DataError as err:
            problems.append(str(err))
            continue
        scores = score_case(case.pred, case.truth, case.spacing, classes, tolerances,
                            worst_case_distances=worst_case_distances)
        result = CaseResult(pair.case_id, scores, resampled=pair.case_id in differing,
                            has_probabilities=bool(case.probabilities),
                            probability_grid_checked=case.probability_grid_checked)
        for cls in lesion_ids:
            result.lesions[cls] = match_lesions(case.pred == cls, case.truth == cls, case.affine,
                                                min_overlap=min_overlap, probability=case.probabilities.get(cls))
        results.append(result)
    if len(problems) == 1:  # one line, as every user error
        raise DataError(f"{problems[0]} (nothing was written)")
    if problems:
        raise DataError(f"{len(problems)} case(s) cannot be scored (nothing was written):\n" + "\n".join(problems))
    return results


def _check_output(output: Path, overwrite: bool) -> None:
    """Refuse earlier results (without ``overwrite``) and an unwritable folder, before any scoring."""
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output} is a file; expected a folder for the results; choose another path")
    earlier = [name for name in outputs.OUTPUT_FILES if (output / name).exists()]
    if earlier and not overwrite:
        raise DataError(f"--output {output} already holds {', '.join(earlier)} from an earlier evaluation; "
                        "pass --overwrite to replace them or choose another folder")
    existing = output
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise DataError(f"cannot write results to --output {output}: {existing} is not writable "
                        f"({err.strerror or err}); choose another folder") from err


def _f(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"
