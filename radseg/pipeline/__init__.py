"""The stages of a researcher's day: data, train, predict, evaluate, review, slices (one sub-package each).

The public names are imported lazily (on first use), so ``radseg phantom`` and
``radseg check-data`` start without loading PyTorch's training machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Case": "data.datalist",
    "DatasetSpec": "data.datalist",
    "discover_dataset": "data.datalist",
    "to_datalist": "data.datalist",
    "make_folds": "data.splits",
    "load_or_create_splits": "data.splits",
    "write_phantom_dataset": "data.phantom",
    "check_dataset": "data.check_data",
    "DataReport": "data.check_data",
    "build_dataset": "data.cache",
    "build_loader": "data.cache",
    "build_cache_for_dataset": "data.fill_cache",
    "shard_for_rank": "data.cache",
    "weighted_shard": "data.shards",
    "sliding_window_predict": "predict.inference",
    "SlidingWindowPredictor": "predict.inference",
    "predict_case": "predict.predict",
    "predict_many": "predict.predict",
    "PredictOptions": "predict.predict",
    "PredictSummary": "predict.predict",
    "find_cases": "predict.inputs",
    "load_predict_model": "predict.model",
    "PostprocessConfig": "predict.postprocess",
    "score_masks": "evaluate.mask_scores",
    "build_loss": "train.losses",
    "lr_at": "train.schedule",
    "build_optimizer": "train.schedule",
    "save_checkpoint": "core.checkpoint",
    "load_checkpoint": "core.checkpoint",
    "train_one_epoch": "train.loop",
    "validate": "evaluate.validate",
    "dice_per_class": "evaluate.metrics",
    "fit": "train.fit",
    "FitResult": "train.fit",
    "evaluate_checkpoint": "evaluate.checkpoint_eval",
    "evaluate_folder": "evaluate.evaluate_folder",
    "review_folder": "review.review_folder",
    "score_case": "evaluate.metrics",
    "save_quicklook": "core.quicklook",
    "run_demo": "train.demo",
    "fit_slices": "slices.fit",
    "predict_slices": "slices.predict",
    "evaluate_slices": "slices.evaluate",
    "load_slice_model": "slices.infer",
    "locate_z_range": "slices.locate",
    "predict_in_z_range": "slices.locate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'radseg.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"radseg.pipeline.{_PUBLIC[name]}"), name)
