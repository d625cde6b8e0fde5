"""End to end on the phantom: train, resume exactly, predict (phantom and real CT), evaluate, locate."""

from __future__ import annotations

import csv
import dataclasses
import logging

import numpy as np
import pytest
import torch

from radseg import keys
from radseg.cli import main
from radseg.configs import load_config
from radseg.pipeline.core.checkpoint import BEST, LAST, load_checkpoint

from tests.conftest import real_data

#: a slice run of seconds on CPU: 4 mm voxels, 32 x 32 slices, a small SimpleCNN
TINY_SLICES = ("train.device=cpu", "train.roi_size=[32,32]", "train.batch_size=16", "train.iterations_per_epoch=12",
               "train.max_epochs=3", "network.params={widths: [8, 16]}", "preprocess.target_spacing=[4,4,4]",
               "cache.num_workers=0", "slices.bootstrap_samples=200", "data.num_folds=3")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory):
    """A phantom of 6 training and 3 held-out cases, and a slice run trained on it."""
    from radseg.pipeline.data.phantom import write_phantom_dataset
    from radseg.pipeline.slices.fit import fit_slices

    root = tmp_path_factory.mktemp("slices")
    data = write_phantom_dataset(root / "data", num_cases=6, seed=11, num_test=3)
    result = fit_slices(load_config("slices", TINY_SLICES), data, root / "run", progress=False)
    return data, root / "run", result


def test_run_folder_holds_the_threshold_curves_and_class_balance(slice_run):
    _, run, result = slice_run
    saved = load_checkpoint(run / BEST)
    assert 0.0 < saved["threshold"] < 1.0 and saved["threshold"] == pytest.approx(result.threshold)
    assert saved["label_values"] == {"liver": [1, 2], "lesion": [2]} and saved["target"] == "liver"
    assert saved["validation"]["val_auc"] > 0.8
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and all(r["val_auc"] for r in rows)
    assert (run / "curves.png").stat().st_size > 0
    assert "liver   present in" in result.balance and "validation:" in result.balance


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, phantom_dataset, monkeypatch):
    from radseg.pipeline.slices import fit as slice_fit

    cfg = [*TINY_SLICES, "data.num_folds=2", "train.iterations_per_epoch=3", "train.batch_size=4",
           "train.max_epochs=3", "train.deterministic=true"]
    slice_fit.fit_slices(load_config("slices", cfg), phantom_dataset, tmp_path / "a", progress=False)
    save_epoch = slice_fit._save_epoch

    def save_then_die(*args):
        save_epoch(*args)
        if args[6].epoch == 2:  # killed right after epoch 2's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(slice_fit, "_save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        slice_fit.fit_slices(load_config("slices", cfg), phantom_dataset, tmp_path / "b", progress=False)
    monkeypatch.setattr(slice_fit, "_save_epoch", save_epoch)
    assert load_checkpoint(tmp_path / "b" / LAST)["epoch"] == 2
    slice_fit.fit_slices(None, phantom_dataset, tmp_path / "b", resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "a" / LAST), load_checkpoint(tmp_path / "b" / LAST)
    assert a["epoch"] == b["epoch"] == 3 and a["threshold"] == b["threshold"]
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert [r["loss"] for r in a["state"]["history"]] == [r["loss"] for r in b["state"]["history"]]


def test_predict_on_the_real_ct_writes_one_probability_per_axial_slice(slice_run, tmp_path, capsys):
    from radseg.transforms.io import read_header

    ct = real_data("totalseg_ct", "example_ct.nii.gz")
    _, run, _ = slice_run
    assert main(["slices", "predict", "--model", str(run / BEST), "--input", str(ct), "--output", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "example_ct_slices.csv").open()))
    header = read_header(ct)
    assert len(rows) == header.shape[header.ras_axes()[2]] == 112
    assert [int(r["slice"]) for r in rows] == list(range(112))
    probabilities = np.array([float(r["probability"]) for r in rows])
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(np.diff([float(r["z_mm"]) for r in rows]), 3.0, atol=0.01)
    assert (tmp_path / "example_ct_slices.png").stat().st_size > 0
    assert "112 axial slices" in capsys.readouterr().out
    # nothing is overwritten without --overwrite
    assert main(["slices", "predict", "--model", str(run / BEST), "--input", str(ct), "--output", str(tmp_path)]) == 2
    assert "exist already" in capsys.readouterr().err


def test_predict_a_folder_and_evaluate_held_out_patients(slice_run, tmp_path, capsys):
    data, run, _ = slice_run
    assert main(["slices", "predict", "--model", str(run / BEST), "--input", str(data / "imagesTs"),
                 "--output", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == [f"phantom_00{i}_slices.csv" for i in (6, 7, 8)]
    assert main(["slices", "evaluate", "--model", str(run / BEST), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "3 patients" in out and "auc" in out and "confusion (slices): TN" in out


def _held_out_volumes(data, run):
    """Held-out phantom cases on the run's preprocessed grid: image and liver z-range."""
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.transforms.fingerprint import ResolvedPreprocess
    from radseg.transforms.preprocess import build_val_transforms

    resolved = ResolvedPreprocess.from_dict(load_checkpoint(run / BEST)["preprocess"])
    transform = build_val_transforms(resolved)
    for item in to_datalist(discover_dataset(data).test):
        out = transform(item)
        liver_z = np.flatnonzero(np.isin(out[keys.LABEL][0].numpy(), [1, 2]).any(axis=(0, 1)))
        yield out[keys.IMAGE], liver_z, resolved.to_dict()


def test_locator_covers_the_liver_of_held_out_cases(slice_run):
    from radseg.pipeline.slices.infer import load_slice_model
    from radseg.pipeline.slices.locate import locate_z_range

    data, run, _ = slice_run
    model = load_slice_model(run / BEST, "cpu")
    for image, liver_z, preprocess in _held_out_volumes(data, run):
        z_range = locate_z_range(model, image, margin_mm=20.0, image_preprocess=preprocess)
        assert z_range is not None
        assert z_range[0] <= liver_z.min() and liver_z.max() < z_range[1], (z_range, liver_z.min(), liver_z.max())


def test_locator_without_liver_falls_back_and_says_so(slice_run, caplog):
    from radseg.pipeline.slices.infer import load_slice_model
    from radseg.pipeline.slices.locate import locate_z_range

    data, run, _ = slice_run
    model = dataclasses.replace(load_slice_model(run / BEST, "cpu"), threshold=1.01)
    image = next(_held_out_volumes(data, run))[0]
    with caplog.at_level(logging.WARNING):
        assert locate_z_range(model, image) is None
    assert "found no liver slice" in caplog.text and "run the full volume instead" in caplog.text


def test_located_prediction_has_the_full_geometry():
    from radseg.configs.schema import InferenceConfig, NetworkConfig
    from radseg.networks import build_network
    from radseg.pipeline.predict.inference import sliding_window_predict
    from radseg.pipeline.slices.locate import predict_in_z_range

    torch.manual_seed(0)
    network = build_network(NetworkConfig(name="unet3d", params={"widths": [4, 8]}), 1, 3).eval()
    image = torch.randn(1, 1, 16, 20, 24)

    def predict(volume):
        logits = sliding_window_predict(network, volume, InferenceConfig(overlap=0.0), [16, 16, 8])
        return torch.softmax(logits, dim=1)

    full = predict_in_z_range(predict, image, (5, 17))
    assert tuple(full.shape) == (1, 3, 16, 20, 24)
    assert (full[:, 0, ..., :5] == 1).all() and (full[:, 1:, ..., 17:] == 0).all()
    torch.testing.assert_close(full[..., 5:17], predict(image[..., 5:17]))
    assert torch.equal(predict_in_z_range(predict, image, None), predict(image))
