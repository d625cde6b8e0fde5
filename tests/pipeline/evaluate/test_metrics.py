"""The metric module: known answers by hand, agreement with MONAI, and the empty-mask conventions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from radseg.pipeline.evaluate.metrics import CASE_METRICS, class_metrics, dice_per_class, score_case
from radseg.pipeline.evaluate.surface import surface, surface_distances

SPACING = (0.5, 1.0, 2.5)


def _offset_cubes(k: int, shape=(16, 14, 14), side: int = 6) -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros(shape, bool)
    truth[4:4 + side, 4:4 + side, 4:4 + side] = True
    return np.roll(truth, k, axis=0), truth


def test_offset_cubes_give_the_values_worked_out_by_hand():
    # 6-voxel cubes, the prediction shifted by k=2 voxels along x (0.5 mm): 1.0 mm.
    # Each surface has 152 voxels; from one to the other: 80 at 0 mm (shared side faces), 20 at
    # 0.5 mm (the side ring one voxel beyond), 52 at 1.0 mm (the two end faces' 16 interior voxels
    # each and the ring two voxels beyond); the same the other way round.
    pred, truth = _offset_cubes(2)
    values = class_metrics(pred, truth, SPACING, tolerance_mm=0.5)
    assert values["dice"] == pytest.approx(2 * 144 / 432)
    assert values["iou"] == pytest.approx(144 / 288)
    assert values["hd95_mm"] == pytest.approx(1.0)
    assert values["assd_mm"] == pytest.approx(2 * (20 * 0.5 + 52 * 1.0) / 304)
    # surface Dice weighs surface elements by area (see the MONAI tests below); every element of
    # either surface is within 1 mm of the other (the end faces are 1 mm apart), not all within 0.5
    assert class_metrics(pred, truth, SPACING, tolerance_mm=1.0)["surface_dice"] == pytest.approx(1.0)
    assert 0 < values["surface_dice"] < 1
    assert values["volume_pred_ml"] == pytest.approx(216 * 1.25 / 1000)
    assert values["volume_error_ml"] == 0 and values["volume_error_rel"] == 0


def test_identical_masks_score_perfectly():
    pred, truth = _offset_cubes(0)
    values = class_metrics(pred, truth, SPACING, tolerance_mm=0.0)
    assert (values["dice"], values["iou"], values["hd95_mm"], values["assd_mm"], values["surface_dice"]) == (1, 1, 0, 0, 1)


def _random_mask(rng: np.random.Generator, shape=(40, 36, 24)) -> np.ndarray:
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(3, 3, 1.5))
    return smooth > np.quantile(smooth, 0.8)


def _monai(metric, pred: np.ndarray, truth: np.ndarray) -> float:
    as_batch = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(metric(as_batch(pred), as_batch(truth)).squeeze())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agreement_with_monai_on_random_masks_with_anisotropic_spacing(seed):
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

    rng = np.random.default_rng(seed)
    pred, truth = _random_mask(rng), _random_mask(rng)
    spacing = (0.7, 1.3, 2.9)
    ours = class_metrics(pred, truth, spacing, tolerance_mm=2.0)
    assert ours["dice"] == pytest.approx(_monai(DiceMetric(include_background=False), pred, truth), abs=1e-6)
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)
    assert ours["hd95_mm"] == pytest.approx(_monai(lambda p, t: hd95(p, t, spacing=spacing), pred, truth), rel=1e-5)
    nsd = SurfaceDiceMetric(class_thresholds=[2.0], include_background=False, use_subvoxels=True)
    assert ours["surface_dice"] == pytest.approx(_monai(lambda p, t: nsd(p, t, spacing=spacing), pred, truth), abs=1e-6)
    assd = SurfaceDistanceMetric(include_background=False, symmetric=True)
    assert ours["assd_mm"] == pytest.approx(_monai(lambda p, t: assd(p, t, spacing=spacing), pred, truth), rel=1e-5)
    assert 0.05 < ours["dice"] < 0.95 and ours["hd95_mm"] > 2.0  # a real test, not identical masks


def _sphere(shape, centre, radius_mm: float, spacing) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) * s / radius_mm) ** 2 for g, c, s in zip(grids, centre, spacing)) <= 1


def test_surface_dice_is_area_weighted_as_deepmind_and_monai_subvoxels_on_thick_slices():
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    spacing = (0.8, 0.8, 3.0)
    truth = _sphere((48, 48, 16), (24, 24, 8), 12.0, spacing)
    pred = _sphere((48, 48, 16), (27, 25, 8.5), 12.0, spacing)
    ours = class_metrics(pred, truth, spacing, tolerance_mm=1.0)
    nsd = _monai(lambda p, t: compute_surface_dice(p, t, [1.0], spacing=spacing, use_subvoxels=True), pred, truth)
    assert ours["surface_dice"] == pytest.approx(nsd, abs=1e-6)
    assert ours["surface_dice"] == pytest.approx(0.5702, abs=1e-4)
    # the old value, a count of surface voxels within the tolerance, is another number (0.521)
    distances = surface_distances(pred, truth, spacing)
    counted = np.concatenate([distances.pred_to_truth, distances.truth_to_pred]) <= 1.0
    assert counted.mean() == pytest.approx(0.5214, abs=1e-4) and abs(counted.mean() - nsd) > 0.04
    # HD95: the larger of the two directed 95th percentiles of the surface-voxel distances, as MONAI
    hd95 = _monai(lambda p, t: compute_hausdorff_distance(p, t, spacing=spacing, percentile=95), pred, truth)
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-6)
    assert ours["hd95_mm"] == pytest.approx(max(np.percentile(distances.pred_to_truth, 95),
                                                np.percentile(distances.truth_to_pred, 95)))


def test_surface_matches_scipy_erosion_including_the_volume_border():
    mask = _random_mask(np.random.default_rng(5), shape=(12, 10, 8))
    mask[0] = True  # touches the border: beyond it counts as outside
    assert np.array_equal(surface(mask), mask ^ ndimage.binary_erosion(mask))


@pytest.mark.parametrize("pred_empty,truth_empty", [(True, False), (False, True), (True, True)])
def test_empty_mask_conventions(pred_empty, truth_empty):
    cube, _ = _offset_cubes(0)
    empty = np.zeros_like(cube)
    values = class_metrics(empty if pred_empty else cube, empty if truth_empty else cube, SPACING, tolerance_mm=1.0)
    assert math.isnan(values["hd95_mm"]) and math.isnan(values["assd_mm"])  # missing, never 0 or inf
    if pred_empty and truth_empty:
        assert all(math.isnan(values[m]) for m in ("dice", "iou", "surface_dice", "volume_error_rel"))
        assert values["volume_error_ml"] == 0
    else:
        assert (values["dice"], values["iou"], values["surface_dice"]) == (0, 0, 0)
        assert values["volume_error_rel"] == -1 if pred_empty else math.isnan(values["volume_error_rel"])
    assert surface_distances(empty, empty, SPACING).pred_to_truth.size == 0


@pytest.mark.parametrize("pred_empty", [True, False])
def test_worst_case_distances_are_the_diagonal_of_the_volume(pred_empty):
    cube, _ = _offset_cubes(0)  # shape (16, 14, 14) at SPACING (0.5, 1.0, 2.5) mm
    empty = np.zeros_like(cube)
    pred, truth = (empty, cube) if pred_empty else (cube, empty)
    values = class_metrics(pred, truth, SPACING, tolerance_mm=1.0, worst_case_distances=True)
    diagonal = math.sqrt((16 * 0.5) ** 2 + (14 * 1.0) ** 2 + (14 * 2.5) ** 2)
    assert values["hd95_mm"] == pytest.approx(diagonal) and values["assd_mm"] == pytest.approx(diagonal)
    both_empty = class_metrics(empty, empty, SPACING, tolerance_mm=1.0, worst_case_distances=True)
    assert math.isnan(both_empty["hd95_mm"]) and math.isnan(both_empty["assd_mm"])  # nothing to score


def test_score_case_covers_every_class_and_metric_and_dice_per_class_agrees():
    rng = np.random.default_rng(3)
    truth = _random_mask(rng).astype(np.uint8) + _random_mask(rng)
    pred = np.roll(truth, 1, axis=1)
    scores = score_case(pred, truth, SPACING, {1: "a", 2: "b"}, {1: 1.0, 2: 1.0})
    assert set(scores) == {1, 2} and all(set(s) == set(CASE_METRICS) for s in scores.values())
    shared = dice_per_class(torch.from_numpy(pred), torch.from_numpy(truth), 3).tolist()
    assert shared == pytest.approx([scores[1]["dice"], scores[2]["dice"]])
