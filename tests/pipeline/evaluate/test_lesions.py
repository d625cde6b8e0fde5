"""Lesions as objects: matching planted lesions (split, merged, missed, spurious), boxes, FROC."""

from __future__ import annotations

import numpy as np
import pytest

from radseg.pipeline.evaluate.lesions import Lesion, detection, froc, match_lesions

AFFINE = np.array([[0.5, 0, 0, -10.0], [0, 1.0, 0, 20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])


def _planted() -> tuple[np.ndarray, np.ndarray]:
    truth, pred = np.zeros((40, 40, 30), bool), np.zeros((40, 40, 30), bool)
    truth[2:6, 2:6, 2:6] = True  # T1, split into two predicted pieces (a gap at z=4)
    pred[2:6, 2:6, 2:4] = True
    pred[2:6, 2:6, 5:6] = True
    truth[10:13, 10:13, 10:13] = True  # T2 and T3, merged into one predicted blob
    truth[10:13, 15:18, 10:13] = True
    pred[10:13, 10:18, 10:13] = True
    truth[30:33, 2:5, 2:5] = True  # T4, missed
    pred[30:34, 30:34, 20:24] = True  # spurious
    truth[20:23, 30:33, 2:5] = True  # T5 grazed: 1 voxel of a 27-voxel lesion (under 10%)
    pred[22:30, 32:40, 4:12] = True
    return pred, truth


def test_split_merged_missed_spurious_and_grazed_lesions():
    lesions = match_lesions(*_planted(), AFFINE)
    true = [lesion for lesion in lesions if lesion.kind == "true"]
    pred = [lesion for lesion in lesions if lesion.kind == "pred"]
    assert len(true) == 5 and len(pred) == 5
    by_size = {lesion.voxels: lesion for lesion in true}
    assert by_size[64].status == "TP" and len(by_size[64].matches) == 2  # split: both pieces match it
    assert by_size[64].dice == pytest.approx(2 * 48 / (64 + 48))
    merged = [lesion for lesion in pred if lesion.voxels == 72]
    assert len(merged) == 1 and len(merged[0].matches) == 2 and merged[0].dice == pytest.approx(2 * 54 / (72 + 54))
    assert sorted(lesion.status for lesion in true) == ["FN", "FN", "TP", "TP", "TP"]
    assert sorted(lesion.status for lesion in pred) == ["FP", "FP", "TP", "TP", "TP"]
    counts = detection(lesions)
    assert (counts.true_positives, counts.false_negatives, counts.false_positives) == (3, 2, 2)
    assert counts.sensitivity == pytest.approx(0.6) and counts.precision == pytest.approx(0.6)
    assert counts.f1 == pytest.approx(0.6)


def test_world_box_and_volume_of_a_lesion():
    truth = np.zeros((20, 20, 10), bool)
    truth[4:7, 2:4, 1:3] = True  # voxels x 4..6, y 2..3, z 1..2; outer faces at -0.5 / +0.5 voxel
    (lesion,) = match_lesions(truth, truth, AFFINE)[:1]
    assert lesion.box_mm == ((-10 + 3.5 * 0.5, 20 + 1.5, 5 + 0.5 * 2), (-10 + 6.5 * 0.5, 20 + 3.5, 5 + 2.5 * 2))
    assert lesion.volume_ml == pytest.approx(12 * 0.5 * 1.0 * 2.0 / 1000)


def test_probability_scores_predicted_lesions():
    pred, truth = _planted()
    probability = np.where(pred, 0.3, 0.0)
    probability[31, 31, 21] = 0.9
    lesions = match_lesions(pred, truth, AFFINE, probability=probability)
    spurious = [lesion for lesion in lesions if lesion.kind == "pred" and lesion.voxels == 64 and not lesion.matches]
    assert spurious[0].score == pytest.approx(0.9)


def _lesion(kind, index, matches, score=float("nan")):
    return Lesion(kind, index, 10, matches=matches, score=score)


def test_froc_by_hand():
    # three scans, three true lesions; candidates by falling score: FP, TP, FP, TP, TP, giving
    # (FP per scan, sensitivity) = (1/3, 0), (1/3, 1/3), (2/3, 1/3), (2/3, 2/3), (2/3, 1)
    cases = {
        "a": [_lesion("true", 1, [1]), _lesion("true", 2, [3]),
              _lesion("pred", 1, [1], 0.9), _lesion("pred", 2, [], 0.8), _lesion("pred", 3, [2], 0.7)],
        "b": [_lesion("true", 1, [2]), _lesion("pred", 1, [], 0.95), _lesion("pred", 2, [1], 0.6)],
        "c": [],  # a scan without lesions still counts in false positives per scan
    }
    table = froc(cases, rates=(0.3, 0.5, 1.0, 2.0))
    assert table == pytest.approx({0.3: 0.0, 0.5: 1 / 3, 1.0: 1.0, 2.0: 1.0})


def test_f1_is_zero_without_true_positives_and_nan_only_without_any_lesion():
    truth, empty = np.zeros((12, 12, 8), bool), np.zeros((12, 12, 8), bool)
    truth[2:5, 2:5, 2:5] = True
    far = np.zeros_like(truth)
    far[8:11, 8:11, 4:7] = True
    missed = detection(match_lesions(empty, truth, AFFINE))  # a true lesion, no prediction
    spurious = detection(match_lesions(far, empty, AFFINE))  # a predicted lesion, no truth
    both_wrong = detection(match_lesions(far, truth, AFFINE))  # one missed, one false
    assert (missed.false_negatives, spurious.false_positives, both_wrong.true_positives) == (1, 1, 0)
    assert missed.f1 == 0.0 and spurious.f1 == 0.0 and both_wrong.f1 == 0.0
    assert np.isnan(detection(match_lesions(empty, empty, AFFINE)).f1)
