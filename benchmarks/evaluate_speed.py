"""How long does scoring one 512x512x300 CT with 3 classes take? radseg's metrics against MONAI's.

Builds one synthetic case (0.8 x 0.8 x 2.5 mm; liver, spleen, 4 tumours) and a prediction with
the errors a network makes (a shifted, slightly larger liver, a missed tumour, spurious blobs),
then times, on the same arrays in the same run:

- radseg: ``score_case`` (Dice, IoU, HD95, ASSD, surface Dice, volumes, per class), and the
  lesion matching of the tumour class;
- MONAI: ``DiceMetric``, ``HausdorffDistanceMetric(percentile=95)``, ``SurfaceDistanceMetric
  (symmetric=True)`` and ``SurfaceDiceMetric(use_subvoxels=True)`` on the one-hot tensors (the one-hot conversion
  counted too).

Also times reading the two NIfTI files, which ``radseg evaluate`` adds per case. Prints one table.
Run: ``python benchmarks/evaluate_speed.py`` (about 1.5 minutes on 2 cores; ``--threads`` to limit).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from radseg.pipeline.evaluate.lesions import match_lesions
from radseg.pipeline.evaluate.metrics import score_case

SHAPE, SPACING = (512, 512, 300), (0.8, 0.8, 2.5)
CLASSES, TOLERANCE = {1: "liver", 2: "spleen", 3: "tumour"}, {1: 2.0, 2: 2.0, 3: 2.0}


def _ellipsoid(center, radii) -> tuple[tuple[slice, ...], np.ndarray]:
    box = tuple(slice(max(int(c - r) - 1, 0), int(c + r) + 2) for c, r in zip(center, radii))
    grids = np.ogrid[tuple(box)]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1
    return box, inside


def _paint(label: np.ndarray, value: int, center, radii) -> None:
    box, inside = _ellipsoid(center, radii)
    label[box][inside] = value


def make_case() -> tuple[np.ndarray, np.ndarray]:
    truth, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    _paint(truth, 1, (250, 260, 150), (140, 110, 70))
    _paint(pred, 1, (253, 258, 151), (143, 108, 71))
    _paint(truth, 2, (380, 150, 160), (50, 40, 30))
    _paint(pred, 2, (381, 151, 160), (49, 41, 30))
    for i, (x, y, z) in enumerate([(200, 230, 140), (290, 300, 160), (230, 330, 120), (300, 220, 180)]):
        _paint(truth, 3, (x, y, z), (18 - 3 * i, 15 - 2 * i, 7))
        if i != 3:  # the last tumour is missed
            _paint(pred, 3, (x + 1, y, z), (18 - 3 * i, 16 - 2 * i, 7))
    _paint(pred, 3, (420, 60, 40), (6, 6, 3))  # spurious, far away: a large bounding box
    _paint(pred, 2, (100, 420, 250), (10, 10, 4))
    return pred, truth


def time_ours(pred, truth):
    start = time.perf_counter()
    scores = score_case(pred, truth, SPACING, CLASSES, TOLERANCE)
    metrics_s = time.perf_counter() - start
    start = time.perf_counter()
    match_lesions(pred == 3, truth == 3, np.diag([*SPACING, 1.0]))
    return scores, metrics_s, time.perf_counter() - start


def time_monai(pred, truth):
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

    start = time.perf_counter()
    one_hot = lambda a: torch.from_numpy(np.stack([a == c for c in range(4)])[None])  # noqa: E731
    yp, yt = one_hot(pred), one_hot(truth)
    results, times = {}, {"one-hot": time.perf_counter() - start}
    metrics = {"dice": DiceMetric(include_background=False),
               "hd95_mm": HausdorffDistanceMetric(include_background=False, percentile=95),
               "assd_mm": SurfaceDistanceMetric(include_background=False, symmetric=True),
               "surface_dice": SurfaceDiceMetric(class_thresholds=[2.0] * 3, include_background=False,
                                                 use_subvoxels=True)}
    for name, metric in metrics.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {} if name == "dice" else {"spacing": SPACING}
            results[name] = metric(yp, yt, **kwargs)[0].tolist()
        times[name] = time.perf_counter() - start
    return results, times


def time_reading(pred, truth) -> float:
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{n}.nii.gz" for n in ("pred", "truth")]
        for array, path in zip((pred, truth), paths):
            nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), str(path))
        from radseg.pipeline.evaluate.inputs import CasePair
        from radseg.pipeline.evaluate.loading import load_case

        start = time.perf_counter()
        load_case(CasePair("case", paths[1], paths[0]), num_classes=4)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--skip-monai", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pred, truth = make_case()
    scores, metrics_s, lesions_s = time_ours(pred, truth)
    read_s = time_reading(pred, truth)
    monai, monai_times = ({}, {}) if args.skip_monai else time_monai(pred, truth)
    print(f"one case {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}, spacing {SPACING} mm, 3 classes, {torch.get_num_threads()} threads")
    print(f"{'metric':<14}{'class':<8}{'radseg':>10}{'MONAI':>10}{'|diff|':>10}")
    for name in ("dice", "hd95_mm", "assd_mm", "surface_dice"):
        for index, cls in CLASSES.items():
            ours = scores[index][name]
            theirs = monai[name][index - 1] if monai else float("nan")
            print(f"{name:<14}{cls:<8}{ours:>10.4f}{theirs:>10.4f}{abs(ours - theirs):>10.2e}")
    print(f"{'step':<22}{'radseg s':>10}{'MONAI s':>10}")
    monai_total = sum(monai_times.values()) if monai_times else float("nan")
    for name, seconds in monai_times.items():
        print(f"{'  MONAI ' + name:<22}{'':>10}{seconds:>10.2f}")
    print(f"{'all metrics, 3 classes':<22}{metrics_s:>10.2f}{monai_total:>10.2f}")
    print(f"{'lesion matching':<22}{lesions_s:>10.2f}{'-':>10}")
    print(f"{'read both NIfTI files':<22}{read_s:>10.2f}{'-':>10}")
    print(f"{'scoring total':<22}{metrics_s + lesions_s:>10.2f}   (target < 10 s)")


if __name__ == "__main__":
    main()
