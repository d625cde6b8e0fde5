"""The quick-start demo: phantom data, check, cache, train, then ``radseg predict`` on held-out cases
and their Dice against the labels on the scans' own grids."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from radseg.atomic import write_text_atomic
from radseg.errors import DataError

logger = logging.getLogger(__name__)

#: held-out phantom cases (imagesTs/labelsTs), never seen in training or validation
DEMO_TEST_CASES = 4


def run_demo(output: str | Path = "demo-runs", cases: int = 12, *, overwrite: bool = False,
             config: str = "demo", overrides: tuple[str, ...] = (), seed: int = 0,
             slice_overrides: tuple[str, ...] = ()) -> str:
    """Run the whole demo and return its report.

    Args:
        output: folder for ``data/`` (the phantom), ``run/`` (the training run), ``predictions/``
            (masks of the held-out cases) and ``test_dice.txt``.
        cases: phantom training cases (split into folds by case).
        overwrite: replace an earlier demo in ``output``.
        config: the preset to train with.
        overrides: ``section.key=value`` settings on top of the preset.
        seed: phantom seed.
        slice_overrides: settings on top of the slice classifier's demo settings (``slices-run/``).

    Returns:
        A multi-line report: data check, training summary, held-out Dice per case on the
        original grid.

    Raises:
        DataError: the phantom fails check-data (a bug) or ``output`` holds another demo.
    """
    from radseg.configs import load_config
    from radseg.pipeline.data.check_data import check_dataset
    from radseg.pipeline.core.checkpoint import BEST
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.pipeline.train.fit import fit
    from radseg.pipeline.data.phantom import write_phantom_dataset

    start = time.perf_counter()
    output = Path(output)
    data = write_phantom_dataset(output / "data", num_cases=cases, seed=seed, num_test=DEMO_TEST_CASES,
                                 overwrite=overwrite)
    report = check_dataset(data)
    if not report.ok:
        raise DataError("the generated phantom failed check-data:\n" + "\n".join(report.lines()))
    cfg = load_config(config, overrides)
    result = fit(cfg, data=data, output=output / "run", overwrite=overwrite)
    spec = discover_dataset(data)
    evaluation = _predict_and_score(output / "run" / BEST, to_datalist(spec.test), output / "predictions",
                                    cfg.train.device)
    text = _report(report.summary(), str(result), evaluation, time.perf_counter() - start)
    # the 2D slice branch on the same phantom: slice classifier and its held-out per-patient AUC
    from radseg.pipeline.slices.demo import run_slice_demo

    text += "\n" + run_slice_demo(data, output / "slices-run", overwrite=overwrite, device=cfg.train.device,
                                  overrides=slice_overrides)
    write_text_atomic(output / "test_dice.txt", text + "\n")
    return text


def _predict_and_score(checkpoint: Path, datalist: list[dict], predictions: Path, device: str, options=None):
    """``radseg predict`` on the held-out images, then Dice against their labels on the original grid.

    ``options`` (:class:`PredictOptions`, always with ``overwrite``: this run's model, never stale
    masks) defaults to the API's settings.
    """
    from radseg import keys
    from radseg.pipeline.evaluate.mask_scores import score_masks
    from radseg.pipeline.predict.inputs import output_stem
    from radseg.pipeline.predict.model import load_predict_model
    from radseg.pipeline.predict.outputs import MASK_SUFFIX
    from radseg.pipeline.predict.predict import PredictOptions, predict_many

    model = load_predict_model(checkpoint, device)
    options = dataclasses.replace(options or PredictOptions(), overwrite=True)
    summary = predict_many(model, [case[keys.IMAGE] for case in datalist], predictions, options)
    if summary.failed:
        raise DataError(f"predicting the held-out phantom cases failed: {summary.failed[0].message}")
    pairs = {case[keys.CASE_ID]: (predictions / f"{output_stem(Path(case[keys.IMAGE]))}{MASK_SUFFIX}",
                                  Path(case[keys.LABEL])) for case in datalist}
    return score_masks(pairs, [model.class_name(c) for c in range(1, model.num_classes)])


def _report(check: str, trained: str, evaluation, seconds: float) -> str:
    return "\n".join([
        f"check-data: {check}",
        f"training: {trained}",
        "held-out test cases (radseg predict), Dice on the original grid:",
        str(evaluation),
        f"demo finished in {seconds / 60:.1f} min",
    ])
