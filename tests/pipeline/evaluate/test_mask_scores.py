"""Dice of written masks against labels on the original grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from radseg.errors import DataError
from radseg.pipeline.evaluate.mask_scores import score_masks


def _write(array: np.ndarray, path, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    image.SetSpacing((0.8, 0.8, 2.5))
    sitk.WriteImage(image, str(path))
    return path


def test_known_dice_on_the_label_grid(tmp_path):
    label = np.zeros((6, 10, 10), dtype=np.uint8)
    label[1:5, 2:8, 2:8] = 1
    mask = label.copy()
    mask[1:3, 2:8, 2:8] = 2  # half of class 1 predicted as class 2
    pairs = {"a": (_write(mask, tmp_path / "m.nii.gz"), _write(label, tmp_path / "l.nii.gz"))}
    evaluation = score_masks(pairs, ["organ", "lesion"])
    assert evaluation.per_case["a"][0] == pytest.approx(2 * 72 / (72 + 144))
    assert evaluation.per_case["a"][1] == 0.0


def test_mask_on_another_grid_is_refused(tmp_path):
    array = np.zeros((4, 5, 6), dtype=np.uint8)
    pairs = {"a": (_write(array, tmp_path / "m.nii.gz", origin=(1.0, 0, 0)), _write(array, tmp_path / "l.nii.gz"))}
    with pytest.raises(DataError, match="is not on the grid of label"):
        score_masks(pairs, ["organ"])
