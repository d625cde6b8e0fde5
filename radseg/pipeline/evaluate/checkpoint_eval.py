"""Score a trained run's ``best.pt`` on labelled cases (held-out test cases, say).

Images are preprocessed exactly as in validation (the checkpoint carries the resolved
preprocessing), predicted with the one sliding-window predictor, and scored on that grid.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from radseg.configs.loader import load_config
from radseg.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Dice per case and class, and the mean over cases of each class."""

    class_names: list[str]
    per_case: dict[str, list[float]]

    def mean(self) -> dict[str, float]:
        """Mean Dice per foreground class over the cases where it was scored."""
        means = {}
        for index, name in enumerate(self.class_names):
            values = [scores[index] for scores in self.per_case.values() if not math.isnan(scores[index])]
            means[name] = sum(values) / len(values) if values else math.nan
        return means

    def __str__(self) -> str:
        header = f"{'case':<16}" + "".join(f"{name:>10}" for name in self.class_names)
        rows = [f"{case:<16}" + "".join(f"{v:>10.4f}" for v in scores) for case, scores in self.per_case.items()]
        mean = f"{'mean':<16}" + "".join(f"{v:>10.4f}" for v in self.mean().values())
        return "\n".join([header, *rows, mean])


def evaluate_checkpoint(checkpoint: str | Path, datalist: list[dict], *, device: str = "auto",
                        progress: bool = True) -> Evaluation:
    """Dice of a checkpoint's network on labelled cases, on the preprocessed (resampled) grid.

    Args:
        checkpoint: a run's ``best.pt`` (or ``last.pt``), loaded with ``weights_only=True``.
        datalist: cases as :func:`radseg.pipeline.data.datalist.to_datalist` gives them, with labels.
        device: "auto", "cpu" or "cuda".
        progress: show a progress bar over cases.

    Returns:
        The per-case :class:`Evaluation`.

    Raises:
        DataError: the checkpoint is unreadable or a case has no label.
    """
    from monai.data import DataLoader, Dataset

    from radseg import keys
    from radseg.networks import build_network
    from radseg.pipeline.core.checkpoint import load_checkpoint
    from radseg.pipeline.core.distributed import pick_device
    from radseg.pipeline.predict.inference import resolve_amp
    from radseg.pipeline.predict.mirroring import trained_mirror_axes
    from radseg.pipeline.evaluate.validate import validate
    from radseg.transforms.fingerprint import ResolvedPreprocess
    from radseg.transforms.preprocess import build_val_transforms

    unlabelled = [str(case.get(keys.CASE_ID, case[keys.IMAGE])) for case in datalist if keys.LABEL not in case]
    if unlabelled:
        raise DataError(f"cases {', '.join(unlabelled)} have no label to score against; pass labelled cases only")
    saved = load_checkpoint(checkpoint)
    cfg = load_config(saved["config"])
    label_names = {int(k): v for k, v in saved["label_names"].items()}
    num_classes = saved["out_channels"]
    network = build_network(cfg.network, in_channels=saved["in_channels"], out_channels=num_classes)
    network.load_state_dict(saved["model"])
    run_device = pick_device(device)
    network.to(run_device).eval()
    resolved = ResolvedPreprocess.from_dict(saved["preprocess"])
    loader = DataLoader(Dataset(datalist, build_val_transforms(resolved)), batch_size=1, num_workers=0)
    with torch.no_grad():
        _, _, per_case = validate(network, loader, cfg.inference, cfg.train.roi_size, num_classes,
                                  device=run_device, amp=resolve_amp(cfg.train.amp, run_device), progress=progress,
                                  mirror_axes=trained_mirror_axes(cfg.augment))
    names = [label_names.get(i, str(i)) for i in range(1, num_classes)]
    return Evaluation(names, per_case)

