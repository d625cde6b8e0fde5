"""Dice of written masks against label files, on the scans' own grids (after ``radseg predict``).

This is the score a researcher reports: the prediction taken back to the original grid and compared
with the original label, not both resampled to the training spacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from radseg.errors import DataError
from radseg.pipeline.evaluate.checkpoint_eval import Evaluation
from radseg.pipeline.evaluate.metrics import dice_per_class
from radseg.transforms.io import read_image

#: largest world-space disagreement (mm) between a mask's and its label's grids
_GRID_TOLERANCE_MM = 1e-3


def score_masks(pairs: dict[str, tuple[Path, Path]], class_names: list[str]) -> Evaluation:
    """Dice per class of each predicted mask against its label, voxel by voxel on the label's grid.

    Args:
        pairs: case id -> (predicted mask, label file).
        class_names: foreground class names (index 1, 2, ...).

    Returns:
        The per-case :class:`Evaluation`.

    Raises:
        DataError: a mask is not on its label's grid (shape, spacing, origin or direction).
    """
    per_case = {}
    for case_id, (mask_path, label_path) in pairs.items():
        mask, label = read_image(mask_path), read_image(label_path)
        _check_same_grid(mask, label, mask_path, label_path)
        predicted = torch.from_numpy(sitk.GetArrayViewFromImage(mask).astype(np.int64))
        truth = torch.from_numpy(sitk.GetArrayViewFromImage(label).astype(np.int64))
        per_case[case_id] = dice_per_class(predicted, truth, len(class_names) + 1).tolist()
    return Evaluation(list(class_names), per_case)


def _check_same_grid(mask: sitk.Image, label: sitk.Image, mask_path: Path, label_path: Path) -> None:
    same = mask.GetSize() == label.GetSize() and all(
        np.allclose(getattr(mask, name)(), getattr(label, name)(), atol=_GRID_TOLERANCE_MM)
        for name in ("GetSpacing", "GetOrigin", "GetDirection"))
    if not same:
        raise DataError(f"mask {mask_path} (size {mask.GetSize()}, origin {mask.GetOrigin()}) is not on the grid "
                        f"of label {label_path} (size {label.GetSize()}, origin {label.GetOrigin()}); expected "
                        "the prediction on the scan's own grid; fix: predict the scan the label belongs to")
