"""Clean-ups of predicted label maps: per-class rules, dropped pieces relabelled by their surroundings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from predict_helpers import DIRECTIONS, oracle_model, phantom_scan
from radseg.configs.loader import load_config
from radseg.errors import ConfigError
from radseg.pipeline.predict.inputs import find_cases
from radseg.pipeline.predict.postprocess import PostprocessConfig, postprocess
from radseg.pipeline.predict.predict import PredictOptions, predict_many

NAMES = ["background", "liver", "tumour"]


def _scene() -> np.ndarray:
    """A liver box holding a real tumour and a one-voxel tumour speck, plus a liver island with a tumour."""
    labels = np.zeros((60, 40, 30), np.uint8)
    labels[5:35, 5:35, 5:25] = 1
    labels[10:16, 10:16, 10:16] = 2  # a real tumour: 216 voxels
    labels[28, 28, 20] = 2  # a speck inside the liver
    labels[42:55, 10:20, 10:20] = 1  # a liver island (the spleen mistaken for liver)
    labels[47:50, 14:16, 14:16] = 2  # with a tumour inside
    return labels


def test_per_class_rules_relabel_dropped_pieces_by_their_surroundings():
    labels = _scene()
    cfg = PostprocessConfig(largest_component=(1,), min_component_ml=(0.0, 0.0, 0.05))
    postprocess(labels, 3, voxel_ml=0.001, cfg=cfg)  # 1 mm voxels: the tumour threshold is 50 voxels
    assert labels[28, 28, 20] == 1  # the speck became liver, not a hole in it
    assert (labels[10:16, 10:16, 10:16] == 2).all()  # the real tumour stays
    island = labels[42:55, 10:20, 10:20]
    assert not (island == 1).any()  # the liver island went ...
    assert (island[5:8, 4:6, 4:6] == 0).all()  # ... and so did its 12-voxel tumour, under 50 voxels
    assert (labels[5:35, 5:35, 5:25] > 0).all()  # the liver itself is whole


def test_dropped_liver_island_becomes_background_not_the_tumour_inside_it():
    labels = _scene()
    postprocess(labels, 3, voxel_ml=0.001, cfg=PostprocessConfig(largest_component=(1,)))
    island = labels[42:55, 10:20, 10:20]
    assert set(np.unique(island)) == {0, 2}  # liver voxels went to background; the tumour class is not asked
    assert (island == 2).sum() == 12


def test_rules_apply_only_to_the_classes_they_name():
    labels = _scene()
    before = labels.copy()
    postprocess(labels, 3, voxel_ml=0.001, cfg=PostprocessConfig(largest_component=(2,)))
    assert (labels == 1).sum() == (before == 1).sum() + 1 + 12  # speck and island tumour became liver
    assert (labels == 2).sum() == 216


def test_planned_config_reads_the_inference_section():
    inference = load_config("demo", ["inference.largest_component=[1]", "inference.min_component_ml=[0, 0, 0.09]"]).inference
    cfg = PostprocessConfig.planned(inference, 3)
    assert cfg.keeps_largest(1) and not cfg.keeps_largest(2)
    assert cfg.min_ml(2) == pytest.approx(0.09) and cfg.min_ml(1) == 0.0
    assert cfg.describe(NAMES) == "liver: largest component; tumour: components under 0.09 mL removed"
    assert not PostprocessConfig.planned(load_config("demo").inference, 3).active
    with pytest.raises(ConfigError, match="one per class"):
        PostprocessConfig.planned(inference, 4)
    with pytest.raises(ConfigError, match="min_component_ml must be >= 0"):
        load_config("demo", ["inference.min_component_ml=[0, -1, 0]"])


def test_predict_applies_the_runs_own_clean_ups_unless_told_otherwise(tmp_path):
    image, _ = phantom_scan(DIRECTIONS["LPS"])
    array = image[:, :, :]  # a copy to mark a 2x2x2 organ-bright speck in the body, away from the organ
    for x in (10, 11):
        for y in (10, 11):
            for z in (12, 13):
                array[x, y, z] = 300
    sitk.WriteImage(array, str(tmp_path / "scan.nii.gz"))
    (case,) = find_cases([tmp_path / "scan.nii.gz"])
    model = oracle_model()
    planned = dataclasses.replace(model, cfg=dataclasses.replace(
        model.cfg, inference=dataclasses.replace(model.cfg.inference, largest_component=[1])))
    organ = {}
    for name, options in (("own", PredictOptions(progress=False)),
                          ("off", PredictOptions(progress=False, postprocess=PostprocessConfig()))):
        predict_many(planned, [case.path], tmp_path / name, options)
        organ[name] = json.loads((tmp_path / name / "scan.json").read_text())
    assert organ["own"]["postprocess"] == "organ: largest component"
    assert organ["off"]["postprocess"] == "none"
    speck_ml = organ["off"]["volumes_ml"]["organ"] - organ["own"]["volumes_ml"]["organ"]
    assert 0.004 < speck_ml < 0.02  # the 8-voxel speck (1 x 0.9 x 1.6 mm voxels: 0.0115 mL), resampled


def test_cli_refuses_no_postprocess_with_clean_up_flags(tmp_path, capsys):
    from radseg.cli import main

    code = main(["predict", "--model", str(tmp_path / "best.pt"), "--input", str(tmp_path), "--output",
                 str(tmp_path / "out"), "--no-postprocess", "--largest-component"])
    assert code == 2
    assert "--no-postprocess turns every clean-up off" in capsys.readouterr().err
