"""The cross-validated result: every fold's validation cases, predicted by that fold's model, scored.

Once every fold of a cross-validation run is trained, each validation case is predicted on its own
grid by the same path as ``radseg predict`` (not the resampled validation grid training scores on),
without clean-ups, into ``RUN/cv/raw/``. The clean-ups that raise the out-of-fold Dice are chosen
(:mod:`radseg.pipeline.evaluate.postprocess_choice`, kept in ``RUN/cv/postprocess.json``, and applied
by ``radseg predict --model RUN``), applied into ``RUN/cv/pred/``, and ``radseg evaluate`` scores that
folder against the truth into ``RUN/cv/``: per case and class, means with bootstrap CIs, the report.
That table is the number a paper quotes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radseg.atomic import write_text_atomic
from radseg.errors import DataError
from radseg.pipeline.core.masks import bounding_box
from radseg.pipeline.evaluate.postprocess_choice import OutOfFoldCase, PostprocessChoice, choose_postprocess
from radseg.pipeline.predict import outputs
from radseg.pipeline.predict.postprocess import PostprocessConfig, postprocess
from radseg.pipeline.core import cv_folder as cv

logger = logging.getLogger(__name__)

RAW_DIR = "raw"
PRED_DIR = "pred"


@dataclass
class OutOfFoldResult:
    """The out-of-fold evaluation and the clean-ups chosen on it."""

    folder: Path
    evaluation: object  # radseg.pipeline.evaluate.evaluate_folder.EvaluationResult
    choice: PostprocessChoice

    def __str__(self) -> str:
        kept = [t["clean_up"] for t in self.choice.trials if t["kept"]] or ["none"]
        return (f"out-of-fold (cross-validated) scores, {self.folder}:\n{self.evaluation}\n"
                f"clean-ups kept on the out-of-fold predictions: {'; '.join(kept)} (mean Dice "
                f"{self.choice.raw_dice:.4f} raw -> {self.choice.final_dice:.4f})")




def score_out_of_fold(run_dir: str | Path, data: str | Path, *, device: str = "auto",
                      progress: bool = True) -> OutOfFoldResult:
    """Predict each fold's validation cases with that fold's model, choose clean-ups, score.

    Raises:
        DataError: a fold has no checkpoint, or the dataset has several channels (predict reads one).
    """
    from radseg.pipeline.data.datalist import discover_dataset
    from radseg.pipeline.data.splits import load_or_create_splits
    from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder

    run_dir = Path(run_dir)
    state = cv.read_cv_state(run_dir)
    spec = discover_dataset(data)
    if len(spec.channel_names) > 1:
        raise DataError(f"out-of-fold scoring predicts with radseg predict, which reads one channel; {data} has "
                        f"{len(spec.channel_names)} ({', '.join(spec.channel_names)}); the folds are trained, "
                        "score their validation cases yourself")
    ids = [case.case_id for case in spec.training]
    splits = load_or_create_splits(run_dir / cv.CV_SPLITS, ids, state["num_folds"],
                                   cv.state_config(state).data.split_seed)
    by_id = {case.case_id: case for case in spec.training}
    folder = run_dir / cv.CV_OUTPUTS
    raw = folder / RAW_DIR
    raw.mkdir(parents=True, exist_ok=True)
    outputs.write_labels_json(raw, dict(spec.labels), overwrite=True)
    planned = None
    for fold in state["folds"]:
        planned = _predict_fold(run_dir, fold, [by_id[i] for i in splits[fold]["val"]], raw, device, progress)
    names = [str(spec.labels.get(i, i)) for i in range(len(spec.labels))]
    cases = _load_cases(raw, by_id, [i for f in state["folds"] for i in splits[f]["val"]])
    choice = choose_postprocess(cases, len(spec.labels), planned, names)
    write_text_atomic(folder / cv.POSTPROCESS_FILE, json.dumps(choice.to_dict(), indent=2) + "\n")
    _write_cleaned(raw, folder / PRED_DIR, [c.name for c in cases], len(spec.labels), choice.chosen, spec.labels)
    evaluation = evaluate_folder(folder / PRED_DIR, data, folder, labels=dict(spec.labels), overwrite=True,
                                 progress=progress)
    return OutOfFoldResult(folder, evaluation, choice)


def _predict_fold(run_dir: Path, fold: int, cases: list, raw: Path, device: str, progress: bool) -> PostprocessConfig:
    """The fold's validation cases, predicted without clean-ups; returns the fold's planned clean-ups."""
    from radseg.pipeline.predict.inputs import find_cases
    from radseg.pipeline.predict.model import load_predict_model
    from radseg.pipeline.predict.options import PredictOptions
    from radseg.pipeline.predict.predict import predict_case

    model = load_predict_model(cv.fold_dir(run_dir, fold), device)
    options = PredictOptions(postprocess=PostprocessConfig(), overwrite=True, progress=False)
    logger.info("out-of-fold: predicting fold %d's %d validation case(s) with its model", fold, len(cases))
    for case in cases:
        found = find_cases([case.images[0]])[0]
        predict_case(model, dataclasses.replace(found, name=case.case_id), raw, options)
    return PostprocessConfig.planned(model.cfg.inference, model.num_classes)


def _load_cases(raw: Path, by_id: dict, names: list[str]) -> list[OutOfFoldCase]:
    """Raw predictions and truths, cut to the box around both (clean-ups never reach beyond it)."""
    cases = []
    for name in names:
        pred_image = sitk.ReadImage(str(raw / f"{name}.nii.gz"))
        pred = sitk.GetArrayFromImage(pred_image)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(by_id[name].label))).astype(np.uint8)
        if truth.shape != pred.shape:
            raise DataError(f"case {name}: the truth's grid {truth.shape[::-1]} differs from its image's "
                            f"{pred.shape[::-1]}; fix the label file")
        box = bounding_box((pred > 0) | (truth > 0), margin=1) or tuple(slice(0, 1) for _ in pred.shape)
        spacing = pred_image.GetSpacing()
        cases.append(OutOfFoldCase(name, pred[box].copy(), truth[box].copy(), float(np.prod(spacing)) / 1000.0,
                                   tuple(spacing[::-1])))
    return cases


def _write_cleaned(raw: Path, pred_dir: Path, names: list[str], num_classes: int, chosen: PostprocessConfig,
                   labels: dict) -> None:
    from radseg.pipeline.predict.prepare import Grid

    pred_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_labels_json(pred_dir, dict(labels), overwrite=True)
    for name in names:
        image = sitk.ReadImage(str(raw / f"{name}.nii.gz"))
        spacing = image.GetSpacing()
        mask = postprocess(sitk.GetArrayFromImage(image), num_classes, float(np.prod(spacing)) / 1000.0, chosen,
                           spacing=spacing[::-1], case=name)
        outputs.write_mask(mask, Grid.of(image), pred_dir / f"{name}.nii.gz")
