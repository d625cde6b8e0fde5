"""A cross-validation run folder: its names, and reading and writing its ``cv.json``.

``radseg train --folds`` writes it (:mod:`radseg.pipeline.train.cross_validation`), out-of-fold scoring
adds ``cv/`` (:mod:`radseg.pipeline.evaluate.out_of_fold`), and ``radseg predict --model RUN`` reads
it as an ensemble (:mod:`radseg.pipeline.predict.ensemble`); every stage finds the same names here.
"""

from __future__ import annotations

import json
from pathlib import Path

from radseg.atomic import write_text_atomic
from radseg.configs.loader import load_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import DataError

CV_FILE = "cv.json"
CV_SPLITS = "splits.json"
CV_PLAN = "plan.yaml"
#: out-of-fold predictions and their scores
CV_OUTPUTS = "cv"
#: the clean-ups chosen on the out-of-fold predictions, inside CV_OUTPUTS
POSTPROCESS_FILE = "postprocess.json"


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """The run folder of one fold."""
    return Path(run_dir) / f"fold_{fold}"


def is_cv_run(path: str | Path) -> bool:
    """Whether ``path`` is a cross-validation run folder (it holds ``cv.json``)."""
    return (Path(path) / CV_FILE).is_file()


def read_cv_state(run_dir: str | Path) -> dict:
    """``cv.json`` of a cross-validation run.

    Raises:
        DataError: missing or unreadable.
    """
    path = Path(run_dir) / CV_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read ({err}); expected the cv.json radseg train --folds writes; "
                        "fix: point to a cross-validation run folder") from err


def write_cv_state(run_dir: str | Path, state: dict) -> None:
    """Write ``cv.json`` atomically."""
    write_text_atomic(Path(run_dir) / CV_FILE, json.dumps(state, indent=2) + "\n")


def state_config(state: dict) -> RadsegConfig:
    """The config every fold of the run trains with."""
    return load_config(state["config"])


def read_postprocess_choice(run_dir: str | Path) -> dict | None:
    """The ``inference`` fields chosen on a cross-validation run's out-of-fold predictions, or None."""
    path = Path(run_dir) / CV_OUTPUTS / POSTPROCESS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["inference"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} cannot be read ({err}); delete it and score again with radseg train --output "
                        f"{run_dir} --data DATA --resume") from err
