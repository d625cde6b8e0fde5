"""The quick-look picture: three slices with two outlines in their colours, and a legend."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from radseg.pipeline.core.quicklook import OUTLINE_COLOURS, quicklook_png, save_quicklook


def _colour_pixels(png: bytes, colour: str) -> int:
    rgb = imread(io.BytesIO(png))[..., :3]
    target = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) < 0.1).sum())


def test_both_outlines_appear_in_their_colours(tmp_path):
    image = np.random.default_rng(0).normal(0, 1, (40, 30, 20)).astype(np.float32)
    truth = np.zeros(image.shape, bool)
    truth[10:25, 8:20, 5:15] = True
    pred = np.roll(truth, 4, axis=0)
    png = quicklook_png(image, [truth, pred], spacing=(0.8, 0.8, 2.5), title="case · liver")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _colour_pixels(png, OUTLINE_COLOURS[0]) > 50 and _colour_pixels(png, OUTLINE_COLOURS[1]) > 50
    only_truth = quicklook_png(image, [truth, None])
    assert _colour_pixels(only_truth, OUTLINE_COLOURS[1]) < 10  # the legend has no prediction entry either
    save_quicklook(tmp_path / "q.png", None, [truth, pred])
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*tmp"))
