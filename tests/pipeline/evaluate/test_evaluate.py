"""Scoring a checkpoint on labelled cases, and the quick-start demo end to end (tiny settings)."""

from __future__ import annotations

import json
import math

import pytest

from radseg import keys
from radseg.configs.loader import load_config
from radseg.errors import DataError
from radseg.pipeline.data.datalist import discover_dataset, to_datalist
from radseg.pipeline.train.demo import run_demo
from radseg.pipeline.evaluate.checkpoint_eval import Evaluation, evaluate_checkpoint
from radseg.pipeline.train.fit import fit
from conftest import TINY_TRAIN

TINY = [*TINY_TRAIN, "train.max_epochs=1"]


def test_evaluation_of_best_checkpoint_reproduces_validation_dice(phantom_dataset, tmp_path):
    run = tmp_path / "run"
    result = fit(load_config("demo", TINY), phantom_dataset, run, progress=False)
    val_ids = json.loads((run / "splits.json").read_text())[0]["val"]
    spec = discover_dataset(phantom_dataset)
    val_cases = to_datalist([case for case in spec.training if case.case_id in val_ids])
    evaluation = evaluate_checkpoint(run / "best.pt", val_cases, device="cpu", progress=False)
    assert set(evaluation.per_case) == set(val_ids)
    for name, dice in evaluation.mean().items():
        expected = result.best_dice_per_class[name]
        assert math.isclose(dice, expected, abs_tol=1e-5) or (math.isnan(dice) and math.isnan(expected))


def test_evaluation_refuses_unlabelled_cases(phantom_dataset, tmp_path):
    case = {keys.IMAGE: "x.nii.gz", keys.CASE_ID: "case_a"}
    with pytest.raises(DataError, match="case_a have no label"):
        evaluate_checkpoint(tmp_path / "best.pt", [case])


def test_evaluation_table_and_means():
    evaluation = Evaluation(["liver", "tumour"], {"a": [0.9, math.nan], "b": [0.7, 0.5]})
    assert evaluation.mean() == pytest.approx({"liver": 0.8, "tumour": 0.5})
    lines = str(evaluation).splitlines()
    assert lines[0].split() == ["case", "liver", "tumour"] and lines[-1].split()[0] == "mean"


#: the demo's slice classifier in seconds: 6 mm voxels, 32 x 32 slices, two folds
TINY_SLICE_DEMO = ("preprocess.target_spacing=[6,6,6]", "train.roi_size=[32,32]", "train.iterations_per_epoch=3",
                   "train.max_epochs=1", "data.num_folds=2", "cache.num_workers=0", "slices.bootstrap_samples=50")


def test_demo_runs_end_to_end_and_keeps_earlier_results(tmp_path):
    report = run_demo(tmp_path / "demo", cases=4, overrides=tuple(TINY), seed=3, slice_overrides=TINY_SLICE_DEMO)
    assert "checked 8 cases: 0 errors" in report
    assert "held-out phantom patients: per-patient AUC for liver presence" in report
    assert "held-out test cases" in report and "phantom_004" in report
    assert (tmp_path / "demo" / "test_dice.txt").read_text().strip() == report
    assert (tmp_path / "demo" / "run" / "best.pt").is_file()
    with pytest.raises(DataError, match="overwrite"):
        run_demo(tmp_path / "demo", cases=4, overrides=tuple(TINY), seed=3)
