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


def _structure_scene() -> np.ndarray:
    """(Z, Y, X) at 2 x 1 x 1 mm: a liver box (z 5-34, y and x 10-39) with tumours in, beside and away from it."""
    labels = np.zeros((40, 60, 60), np.uint8)
    labels[5:35, 10:40, 10:40] = 1
    labels[15:20, 20:25, 20:25] = 2  # inside the liver
    labels[15:20, 40:43, 20:25] = 2  # outside it but touching its border
    labels[15:20, 42:45, 30:34] = 2  # 3 voxels (3 mm) beyond its y border: within 5 mm
    labels[37:39, 20:24, 20:24] = 2  # 3 slices (6 mm) beyond its z border: farther than 5 mm
    labels[18:26, 48:57, 48:57] = 1  # a liver island ...
    labels[20:24, 50:55, 50:55] = 2  # ... with a tumour inside, 15 mm from the liver
    return labels


def test_inside_rule_removes_far_tumours_after_the_organ_is_cleaned(caplog):
    labels = _structure_scene()
    cfg = PostprocessConfig(largest_component=(1,), inside=((2, 1, 5.0),))
    with caplog.at_level("INFO", logger="radseg.pipeline.predict.postprocess"):
        postprocess(labels, 3, voxel_ml=0.002, cfg=cfg, spacing=(2.0, 1.0, 1.0), case="c1")
    expected = _structure_scene()
    expected[37:39, 20:24, 20:24] = 0  # the tumour 6 mm out went to background
    expected[18:26, 48:57, 48:57] = 0  # the liver island went (largest component), then its tumour (far)
    np.testing.assert_array_equal(labels, expected)
    # 32 + 100 voxels of 0.002 mL
    assert "case c1: class 2: 2 component(s), 0.26 mL, farther than 5 mm from class 1 removed" in caplog.text
    kept_island = _structure_scene()  # without the largest-component step the island's tumour touches liver
    postprocess(kept_island, 3, voxel_ml=0.002, cfg=PostprocessConfig(inside=((2, 1, 5.0),)), spacing=(2.0, 1.0, 1.0))
    assert (kept_island[20:24, 50:55, 50:55] == 2).all() and (kept_island[37:39, 20:24, 20:24] == 0).all()


def test_inside_rule_keeps_everything_when_the_container_is_not_predicted(caplog):
    labels = np.where(_structure_scene() == 2, 2, 0).astype(np.uint8)
    before = labels.copy()
    postprocess(labels, 3, voxel_ml=0.002, cfg=PostprocessConfig(inside=((2, 1, 5.0),)), spacing=(2.0, 1.0, 1.0),
                case="c2")
    np.testing.assert_array_equal(labels, before)
    assert "case c2: class 2 is predicted but class 1 is not" in caplog.text


def test_planned_inside_rules_are_checked_against_the_model():
    inference = load_config("demo", ["inference.inside=[{value: 2, within: 1, margin_mm: 6.8}]"]).inference
    cfg = PostprocessConfig.planned(inference, 3)
    assert cfg.inside == ((2, 1, 6.8),) and cfg.active
    assert cfg.describe(NAMES) == "tumour: components farther than 6.8 mm from liver removed"
    with pytest.raises(ConfigError, match=r"inference.inside names class\(es\) \[2\], but the model's foreground "
                                          r"classes are 1..1; fix: remove those rules"):
        PostprocessConfig.planned(inference, 2)
    with pytest.raises(ConfigError, match=r"unknown config key 'inference.inside\[0\].withn': did you mean"):
        load_config("demo", ["inference.inside=[{value: 2, withn: 1}]"])
    with pytest.raises(ConfigError, match=r"inference.inside\[0\] must name two different foreground classes"):
        load_config("demo", ["inference.inside=[{value: 2, within: 2}]"])
