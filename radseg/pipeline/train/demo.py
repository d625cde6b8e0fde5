"""The quick-start demo: phantom data, check, cache, train, then Dice on held-out cases."""

from __future__ import annotations

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
        output: folder for ``data/`` (the phantom), ``run/`` (the training run) and ``test_dice.txt``.
        cases: phantom training cases (split into folds by case).
        overwrite: replace an earlier demo in ``output``.
        config: the preset to train with.
        overrides: ``section.key=value`` settings on top of the preset.
        seed: phantom seed.
        slice_overrides: settings on top of the slice classifier's demo settings (``slices-run/``).

    Returns:
        A multi-line report: data check, training summary, held-out Dice per case.

    Raises:
        DataError: the phantom fails check-data (a bug) or ``output`` holds another demo.
    """
    from radseg.configs import load_config
    from radseg.pipeline.data.check_data import check_dataset
    from radseg.pipeline.core.checkpoint import BEST
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.pipeline.evaluate.checkpoint_eval import evaluate_checkpoint
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
    evaluation = evaluate_checkpoint(output / "run" / BEST, to_datalist(spec.test), device=cfg.train.device)
    text = _report(report.summary(), str(result), evaluation, time.perf_counter() - start)
    # the 2D slice branch on the same phantom: slice classifier and its held-out per-patient AUC
    from radseg.pipeline.slices.demo import run_slice_demo

    text += "\n" + run_slice_demo(data, output / "slices-run", overwrite=overwrite, device=cfg.train.device,
                                  overrides=slice_overrides)
    write_text_atomic(output / "test_dice.txt", text + "\n")
    return text


def _report(check: str, trained: str, evaluation, seconds: float) -> str:
    return "\n".join([
        f"check-data: {check}",
        f"training: {trained}",
        "held-out test cases, Dice on the resampled grid:",
        str(evaluation),
        f"demo finished in {seconds / 60:.1f} min",
    ])
