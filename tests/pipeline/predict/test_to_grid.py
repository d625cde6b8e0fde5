"""Labels taken back to the scan's grid: the gathered shortcut against full trilinear interpolation."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from radseg.pipeline.predict import to_grid
from radseg.pipeline.predict.to_grid import AxisMap, logits_to_grid


def _reference(logits: torch.Tensor, mapping: AxisMap, shape) -> np.ndarray:
    """Every voxel interpolated axis by axis (no shortcut), outside the crop background; (Z, Y, X)."""
    volume = logits.permute(0, *(a + 1 for a in mapping.axes)).float()
    axes = [to_grid._axis(mapping.scale[i], mapping.offset[i], torch.arange(shape[i]), volume.shape[i + 1])
            for i in range(3)]
    labels = to_grid.channel_argmax(to_grid._slab(volume, *axes)).numpy()
    labels[~axes[0].inside] = 0
    labels[:, ~axes[1].inside] = 0
    labels[:, :, ~axes[2].inside] = 0
    return labels.transpose(2, 1, 0)


def test_gathered_labels_equal_full_interpolation_in_quiet_and_noisy_slabs(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    smooth = np.stack([ndimage.gaussian_filter(rng.normal(size=(30, 26, 40)), 4) for _ in range(3)])
    noisy = rng.normal(size=(3, 30, 26, 40)) * 0.05
    logits = smooth / smooth.std()
    logits[..., 20:] = noisy[..., 20:]  # the upper half: boundaries in nearly every cell
    logits = torch.from_numpy(logits.astype(np.float32))
    # pre = scale * original + offset, the preprocessed axes permuted and one flipped, a border cropped
    mapping = AxisMap(axes=(1, 0, 2), scale=(0.45, -0.5, 0.7), offset=(-1.0, 29.3, 0.2))
    shape = (64, 62, 60)
    expected = _reference(logits, mapping, shape)
    calls = {"_interpolate_points": 0, "_slab": 0}
    for name in calls:
        monkeypatch.setattr(to_grid, name, _counted(getattr(to_grid, name), calls, name))
    got, _ = logits_to_grid(logits, mapping, shape, slab=8)
    assert got.shape == shape[::-1]
    # float rounding differs between the two ways of interpolating: allow a handful of exact near-ties
    assert (got != expected).sum() <= 5
    assert 0 < (got == 0).mean() < 1 and (got == 2).any()
    # the noisy slabs took the whole-slab route and the quiet ones the per-voxel one
    assert calls["_slab"] > 0 and calls["_interpolate_points"] > 0, calls


def _counted(function, calls: dict, name: str):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)
    return wrapper
