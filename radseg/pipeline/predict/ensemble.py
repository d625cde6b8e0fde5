"""Several models as one: a cross-validation run's folds, or runs given together to ``--model``.

Members that share their preprocessing and window (the folds of one run do: one plan, one dataset
fingerprint) are averaged window by window: each window goes through every member in turn and
their softmax probabilities are summed, so memory grows by one member's window output, not by a
volume per member (:class:`MeanProbabilityNetwork`). Members that preprocess differently (another
spacing, window or normalisation) each predict the scan on their own grid and their probabilities
are averaged on the scan's grid, in one running sum (``PredictModel.grid_members``).

A cross-validation run's clean-ups are those chosen on its out-of-fold predictions
(``RUN/cv/postprocess.json``); otherwise the first member's planned ones apply.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import torch

from radseg.configs.loader import config_to_dict, load_config
from radseg.errors import ConfigError, DataError
from radseg.pipeline.core.checkpoint import BEST
from radseg.pipeline.predict.inference import full_resolution_output
from radseg.pipeline.predict.model import PredictModel, load_predict_model
from radseg.pipeline.core import cv_folder as cv

logger = logging.getLogger(__name__)


class MeanProbabilityNetwork(torch.nn.Module):
    """Runs each member on a batch of windows and returns the log of their mean softmax.

    The log keeps the contract of a network's logits: their argmax and softmax are those of the mean
    probability. Members run one at a time, so only one member's output is held beside the sum.
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            probabilities = torch.softmax(full_resolution_output(member(windows)).float(), dim=1)
            total = probabilities if total is None else total.add_(probabilities)
        return torch.log(total.div_(len(self.members)).clamp_min_(1e-8))


def member_paths(models: Sequence[str | Path]) -> list[Path]:
    """The checkpoints ``--model`` names: each run or file, a cross-validation run's folds expanded.

    Raises:
        DataError: a fold of a cross-validation run has no ``best.pt``.
    """
    paths: list[Path] = []
    for model in models:
        model = Path(model)
        if not cv.is_cv_run(model):
            paths.append(model)
            continue
        folds = cv.read_cv_state(model)["folds"]
        missing = [f"fold_{f}" for f in folds if not (cv.fold_dir(model, f) / BEST).is_file()]
        if missing:
            raise DataError(f"cross-validation run {model}: {', '.join(missing)} has no {BEST}; finish training "
                            f"with radseg train --output {model} --data DATA --resume")
        paths.extend(cv.fold_dir(model, f) / BEST for f in folds)
    return paths


def load_models(models: str | Path | Sequence[str | Path], device: str = "auto") -> PredictModel:
    """One model, or an ensemble of several (see the module docstring).

    Raises:
        DataError, ConfigError: a checkpoint is unusable, or the members differ in label map or
            input channels (before any scan is read).
    """
    models = [models] if isinstance(models, (str, Path)) else list(models)
    paths = member_paths(models)
    if len(paths) == 1 and not cv.is_cv_run(models[0]):
        return load_predict_model(paths[0], device)
    members = [load_predict_model(path, device) for path in paths]
    _check_compatible(members)
    first = members[0]
    cfg = _ensemble_config(first, models)
    if len(members) == 1:  # a cross-validation run of one fold: its model, with the out-of-fold clean-ups
        return dataclasses.replace(first, cfg=cfg)
    sources = tuple(m.source for m in members)
    shared = all(_same_windows(first, m) for m in members[1:])
    logger.info("ensemble of %d models (%s), mean of their probabilities %s: %s", len(members),
                "same preprocessing" if shared else "different preprocessing",
                "window by window" if shared else "on each scan's grid", ", ".join(sources))
    network = MeanProbabilityNetwork([m.network for m in members]) if shared else first.network
    return dataclasses.replace(first, network=network, cfg=cfg, source=f"ensemble of {len(members)}",
                               members=sources, grid_members=() if shared else tuple(members))


def _check_compatible(members: list[PredictModel]) -> None:
    first = members[0]
    for other in members[1:]:
        if other.label_names != first.label_names:
            raise ConfigError(f"ensemble members label differently: {first.source} has {first.label_names}, "
                              f"{other.source} has {other.label_names}; ensemble only runs of one label map")
        if other.in_channels != first.in_channels:
            raise ConfigError(f"ensemble members take different inputs: {first.source} {first.in_channels} "
                              f"channel(s), {other.source} {other.in_channels}; ensemble only runs of one dataset")


def _same_windows(first: PredictModel, other: PredictModel) -> bool:
    """Whether two members see the same preprocessed volume through the same windows."""
    return (first.preprocess.to_dict() == other.preprocess.to_dict()
            and first.cfg.train.roi_size == other.cfg.train.roi_size
            and first.cfg.inference.roi_size == other.cfg.inference.roi_size
            and first.device == other.device)


def _ensemble_config(first: PredictModel, models: list):
    """The first member's config, with a cross-validation run's out-of-fold clean-ups when there is one."""
    settings = config_to_dict(first.cfg)
    for model in models:
        chosen = cv.read_postprocess_choice(Path(model)) if cv.is_cv_run(Path(model)) else None
        if chosen is not None:
            logger.info("clean-ups chosen on %s's out-of-fold predictions apply", model)
            settings["inference"] = {**settings["inference"], **chosen}
            break
    return load_config(settings)
