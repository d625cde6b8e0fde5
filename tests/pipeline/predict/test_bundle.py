"""radseg predict --model BUNDLE: MONAI zoo bundles (weights made here) run through radseg's predictor.

The spleen configuration's masks are compared with MONAI's own run of the same bundle; the
whole-body SegResNet (105 classes) and DiNTS configurations load and predict. Bad bundles are
refused in one line each, before any scan is read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from bundle_helpers import DINTS, SPLEEN, WHOLE_BODY, edit_config, zoo_bundle, zoo_network
from pipeline.export.monai_runner import compare_masks, run_monai_bundle
from predict_helpers import DIRECTIONS, phantom_scan
from radseg.cli import main
from radseg.errors import DataError
from radseg.pipeline.predict.inputs import find_cases
from radseg.pipeline.predict.model import load_predict_model
from radseg.pipeline.predict.predict import PredictOptions, predict_many
from radseg.pipeline.predict.prepare import prepare_case

QUIET = PredictOptions(progress=False)


def _scans(folder: Path, geometries=("LPS", "RAS")) -> Path:
    """Small phantom CTs (80 x 80 x 72 mm): one sliding window at every zoo bundle's spacing."""
    folder.mkdir(parents=True)
    for geometry in geometries:
        image, _ = phantom_scan(DIRECTIONS[geometry], shape=(40, 40, 24), spacing=(2.0, 2.0, 3.0))
        sitk.WriteImage(image, str(folder / f"{geometry.lower()}.nii.gz"))
    return folder


def test_spleen_bundle_maps_onto_radsegs_chain(tmp_path):
    model = load_predict_model(zoo_bundle(SPLEEN, tmp_path / "spleen"), "cpu")
    assert type(model.network).__name__ == "UNet" and model.label_names == {0: "background", 1: "spleen"}
    assert model.preprocess.target_spacing == (1.5, 1.5, 2.0) and not model.preprocess.crop_foreground
    assert model.preprocess.intensity_steps == (("ScaleIntensityRanged", {"a_min": -57, "a_max": 164, "b_min": 0,
                                                                           "b_max": 1, "clip": True}),)
    inference = model.cfg.inference
    assert (inference.roi_size, inference.sw_batch_size, inference.overlap, inference.blend_mode) == (
        [96, 96, 96], 4, 0.5, "constant")


def _train_spleen(bundle: Path, scan: Path, steps: int = 25) -> dict:
    """Weights that find the bright 'spleen' (the phantom's organ, clipped to 1 by the window):
    a few Adam steps on a 32-voxel cube of one preprocessed scan around the organ's edge, so both
    runners see a confident model (seconds, where the whole volume would take minutes on 2 cores)."""
    model = load_predict_model(bundle, "cpu")
    (case,) = find_cases([scan])
    image = prepare_case(case, model).image
    centre = [int(c.float().mean()) for c in torch.nonzero(image[0, 0] > 0.9, as_tuple=True)]
    image = F.pad(image, [16] * 6)  # so the cube fits around any centre (air pads as 0, the window's low end)
    cube = image[(..., *(slice(c, c + 32) for c in centre))]
    target = (cube[:, 0] > 0.9).long()
    network = model.network.train()
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(network(cube), target).backward()
        optimiser.step()
    return network.eval().state_dict()


@pytest.mark.slow
def test_spleen_bundle_in_radseg_agrees_with_monais_own_run(tmp_path):
    scans = _scans(tmp_path / "data" / "imagesTs")  # the zoo config reads dataset_dir/imagesTs/*.nii.gz
    bundle = zoo_bundle(SPLEEN, tmp_path / "spleen")
    torch.save(_train_spleen(bundle, scans / "lps.nii.gz"), bundle / "models" / "model.pt")
    run_monai_bundle(bundle / "configs" / "inference.json", bundle, tmp_path / "data", tmp_path / "monai",
                     "--dataloader#num_workers", "0")  # the loader workers would only add start-up time
    summary = predict_many(bundle, [scans], tmp_path / "radseg", QUIET, device="cpu")
    assert summary.count("done") == 2
    for result in summary.results:
        theirs = tmp_path / "monai" / result.name / f"{result.name}_trans.nii.gz"
        dice, differ = compare_masks(result.mask, theirs, labels=(0, 1))
        print(f"spleen bundle, {result.name}: Dice radseg vs MONAI {dice}; {differ} voxels differ (MONAI's "
              "Invertd resamples softmax probabilities; radseg maps logits back slab by slab)")
        assert dice[1] >= 0.99 and dice[0] >= 0.99, (result.name, dice)
        assert (np.asarray(sitk.GetArrayFromImage(sitk.ReadImage(str(result.mask)))) == 1).sum() > 100


@pytest.mark.slow
@pytest.mark.parametrize("name, network, classes", [(WHOLE_BODY, "SegResNet", 105), (DINTS, "DiNTS", 8)])
def test_zoo_bundle_loads_and_predicts(name, network, classes, tmp_path):
    scans = _scans(tmp_path / "scans", geometries=("LPS",))
    bundle = zoo_bundle(name, tmp_path / "bundle")
    model = load_predict_model(bundle, "cpu")
    assert type(model.network).__name__ == network and model.num_classes == classes == len(model.label_names)
    summary = predict_many(model, [scans], tmp_path / "out", QUIET, device="cpu")
    assert summary.count("done") == 1, summary.results[0].message
    written = sitk.ReadImage(str(summary.results[0].mask))
    assert written.GetSize() == (40, 40, 24) and int(sitk.GetArrayViewFromImage(written).max()) < classes


def test_whole_body_bundle_keeps_its_own_intensity_steps(tmp_path):
    bundle = zoo_bundle(WHOLE_BODY, tmp_path / "bundle", weights={})  # weights are not needed to map the chain
    from radseg.pipeline.predict.bundle_config import checked_content, read_bundle_config
    from radseg.pipeline.predict.bundle_transforms import map_inferer, map_preprocessing

    parser = read_bundle_config(bundle, torch.device("cpu"))
    items = checked_content(parser, "preprocessing", bundle, instantiate=False)["transforms"]
    resolved = map_preprocessing(items, "CT", str(bundle))
    assert resolved.target_spacing == (1.5, 1.5, 1.5)
    assert resolved.intensity_steps == (("NormalizeIntensityd", {"nonzero": True}),
                                        ("ScaleIntensityd", {"minv": -1.0, "maxv": 1.0}))
    window = map_inferer(checked_content(parser, "inferer", bundle, instantiate=False), str(bundle))
    assert window == {"roi_size": [96, 96, 96], "sw_batch_size": 1, "overlap": 0.25, "blend_mode": "gaussian"}


def _spleen(tmp_path: Path, change=None, weights=None) -> Path:
    bundle = zoo_bundle(SPLEEN, tmp_path / "bundle", weights=weights)
    if change is not None:
        edit_config(bundle, change)
    return bundle


def _refusal(bundle: Path, tmp_path: Path, capsys) -> str:
    scans = _scans(tmp_path / "scans", geometries=("LPS",))
    code = main(["predict", "-m", str(bundle), "-i", str(scans), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.nii.gz"))
    return err


def _add_transform(item):
    return lambda config: config["preprocessing"]["transforms"].insert(4, item)


@pytest.mark.parametrize("case, change, expected", [
    ("unknown network", lambda c: c["network_def"].update({"_target_": "UNetPlusPlusPlus"}),
     "'UNetPlusPlusPlus', which MONAI"),
    ("target outside MONAI", lambda c: c["network_def"].update({"_target_": "collections.OrderedDict"}),
     "'collections.OrderedDict', outside MONAI"),
    ("unmappable transform", _add_transform({"_target_": "HistogramNormalized", "keys": "image"}),
     "'HistogramNormalized', which radseg will not build (preprocessing may name only Compose and the transforms"),
    ("unmappable argument", _add_transform({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                                            "k_divisible": 16}), "CropForegroundd with its own select_fn"),
    ("code in an expression", lambda c: c["network_def"].update({"in_channels": "$__import__('os').getpid() * 0 + 1"}),
     "which radseg will not run"),
])
def test_bad_bundles_are_refused_in_one_line(case, change, expected, tmp_path, capsys):
    assert expected in _refusal(_spleen(tmp_path, change), tmp_path, capsys), case


def test_a_bundle_without_weights_is_refused(tmp_path, capsys):
    bundle = _spleen(tmp_path)
    shutil.rmtree(bundle / "models")
    assert "model.pt is missing" in _refusal(bundle, tmp_path, capsys)


def test_weights_that_do_not_fit_are_refused(tmp_path, capsys):
    weights = zoo_network(SPLEEN, tmp_path).state_dict()
    weights = {k: v for k, v in weights.items() if "model.0" not in k}
    assert "do not fit the network" in _refusal(_spleen(tmp_path, weights=weights), tmp_path, capsys)


def test_a_bundle_taking_two_channels_is_refused_for_a_one_channel_scan(tmp_path, capsys):
    from monai.networks import nets

    network = nets.UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=[16, 32, 64, 128, 256],
                        strides=[2, 2, 2, 2], num_res_units=2, norm="batch")
    bundle = zoo_bundle(SPLEEN, tmp_path / "bundle", weights=network.state_dict())
    edit_config(bundle, lambda c: c["network_def"].update({"in_channels": 2}))
    scans = _scans(tmp_path / "scans", geometries=("LPS",))
    code = main(["predict", "-m", str(bundle), "-i", str(scans), "-o", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed")]
    assert code == 1 and len(err) == 1 and "takes 2 image channels" in err[0], err
    assert not list((tmp_path / "out").glob("*.nii.gz"))
