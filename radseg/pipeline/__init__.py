"""Datasets and caches, training, sliding-window inference, evaluation.

The public names are imported lazily (on first use), so ``radseg phantom`` and
``radseg check-data`` start without loading PyTorch's training machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Case": "datalist",
    "DatasetSpec": "datalist",
    "discover_dataset": "datalist",
    "to_datalist": "datalist",
    "make_folds": "splits",
    "load_or_create_splits": "splits",
    "write_phantom_dataset": "phantom",
    "check_dataset": "check_data",
    "DataReport": "check_data",
    "build_dataset": "cache",
    "build_loader": "cache",
    "build_cache_for_dataset": "cache",
    "shard_for_rank": "cache",
    "sliding_window_predict": "inference",
    "SlidingWindowPredictor": "inference",
    "build_loss": "losses",
    "lr_at": "schedule",
    "build_optimizer": "schedule",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "train_one_epoch": "train_loop",
    "validate": "train_loop",
    "fit": "fit",
    "FitResult": "fit",
    "evaluate_checkpoint": "evaluate",
    "run_demo": "demo",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'radseg.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"radseg.pipeline.{_PUBLIC[name]}"), name)
