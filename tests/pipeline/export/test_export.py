"""radseg export: TorchScript and ONNX networks that give the checkpoint's logits, a MONAI bundle
that MONAI alone runs to radseg's masks, and refusals that leave nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from pipeline.export.monai_runner import compare_masks, run_monai_bundle
from pipeline.predict.predict_helpers import write_checkpoint
from radseg.cli import main
from radseg.configs.loader import load_config
from radseg.pipeline.export import export_model
from radseg.pipeline.export.network_files import TOLERANCE, example_window, network_logits, onnx_logits
from radseg.pipeline.predict.model import load_predict_model
from radseg.pipeline.predict.predict import PredictOptions, predict_many

STEPS = ["LoadImaged", "EnsureChannelFirstd", "Orientationd", "CropForegroundd", "Spacingd",
         "ScaleIntensityRanged", "EnsureTyped"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def test_torchscript_gives_the_checkpoints_logits(checkpoint, tmp_path):
    result = export_model(checkpoint, "torchscript", tmp_path / "ts")
    assert result.files == ["model.ts", "preprocessing.json"]
    model = load_predict_model(checkpoint, "cpu")
    window = example_window(model, batch=3, seed=5)
    with torch.no_grad():
        exported = torch.jit.load(str(tmp_path / "ts" / "model.ts"))(window)
    difference = float((exported - network_logits(model, window)).abs().max())
    print(f"torchscript: max |logit difference| {difference:.2e} on a random window")
    assert difference <= TOLERANCE
    steps = json.loads((tmp_path / "ts" / "preprocessing.json").read_text())
    assert [item["_target_"] for item in steps["preprocessing"]] == STEPS
    assert steps["preprocessing"][4]["pixdim"] == [1.25, 1.25, 2.0]
    assert steps["preprocessing"][5] == {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1000.0,
                                         "a_max": 1000.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
    assert steps["inferer"] == {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16], "sw_batch_size": 2,
                                "overlap": 0.25, "mode": "gaussian"}


def test_onnx_gives_the_checkpoints_logits_with_a_dynamic_batch(checkpoint, tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install 'radseg[export]'")
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra: pip install 'radseg[export]'")
    export_model(checkpoint, "onnx", tmp_path / "onnx")
    model = load_predict_model(checkpoint, "cpu")
    for batch in (1, 3):
        window = example_window(model, batch=batch, seed=batch)
        exported = torch.from_numpy(onnx_logits(tmp_path / "onnx" / "model.onnx", window))
        difference = float((exported - network_logits(model, window)).abs().max())
        print(f"onnx: batch {batch}, max |logit difference| {difference:.2e}")
        assert difference <= TOLERANCE
    network = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())["network"]
    assert network["onnx"]["opset"] == 17 and network["onnx"]["dynamic_axes"]["image"] == {"0": "batch"}


def test_bundle_has_monais_layout_and_says_what_it_is(checkpoint, tmp_path):
    result = export_model(checkpoint, "monai-bundle", tmp_path / "bundle")
    assert result.files == ["configs/inference.json", "configs/metadata.json", "docs/README.md",
                            "models/model.pt", "models/model.ts"]
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "organ",
                                                                           "2": "lesion"}
    assert meta["monai_version"] and meta["pytorch_version"] and "fingerprint" in meta["radseg"]
    config = json.loads((tmp_path / "bundle" / "configs" / "inference.json").read_text())
    assert [t["_target_"] for t in config["preprocessing"]["transforms"]] == STEPS
    state = torch.load(tmp_path / "bundle" / "models" / "model.pt", weights_only=True)
    assert set(state) == set(load_predict_model(checkpoint, "cpu").network.state_dict())


def test_an_earlier_export_needs_overwrite_and_other_folders_are_never_replaced(checkpoint, tmp_path, capsys):
    export = ["export", str(checkpoint), "--format", "torchscript", "-o"]
    assert main([*export, str(tmp_path / "out")]) == 0
    code = main([*export, str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "exists" in err and "--overwrite" in err
    assert main([*export, str(tmp_path / "out"), "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.ts", "preprocessing.json"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code = main([*export, str(tmp_path / "mine"), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not an earlier radseg export" in err, err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "file.txt").write_text("keep")
    assert main([*export, str(tmp_path / "file.txt"), "--overwrite"]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "file.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_earlier_bundle_is_replaced_with_overwrite(checkpoint, tmp_path):
    export_model(checkpoint, "monai-bundle", tmp_path / "bundle")
    (tmp_path / "bundle" / "docs" / "stale.txt").write_text("from the earlier export")
    export_model(checkpoint, "monai-bundle", tmp_path / "bundle", overwrite=True)
    assert not (tmp_path / "bundle" / "docs" / "stale.txt").exists()
    assert (tmp_path / "bundle" / "configs" / "metadata.json").is_file()


@pytest.mark.parametrize("where", ["the run", "inside the run", "holding the run"])
def test_the_run_itself_is_never_an_export_folder(where, checkpoint, tmp_path, capsys):
    import shutil

    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    shutil.copy(checkpoint, run / "best.pt")
    output = {"the run": run, "inside the run": run / "export", "holding the run": tmp_path / "runs"}[where]
    code = main(["export", str(run), "--format", "monai-bundle", "-o", str(output), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "the run folder" in err, err
    assert [p.name for p in run.iterdir()] == ["best.pt"]


def test_a_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    import os

    from radseg import atomic

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("earlier")
    real_replace = os.replace

    def failing_replace(source, target):
        if str(source).endswith(".tmp"):
            raise OSError("simulated: the rename onto the folder failed")
        return real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        with atomic.atomic_folder(tmp_path / "out", overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_export_writes_nothing(tmp_path, capsys):
    code = main(["export", str(tmp_path / "missing.pt"), "--format", "monai-bundle", "-o", str(tmp_path / "b")])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def trained_run(phantom_dataset, tmp_path_factory) -> Path:
    """A run trained just long enough to find the liver (about 20 s on 2 cores)."""
    from radseg.pipeline.train.fit import fit

    run = tmp_path_factory.mktemp("run") / "run"
    overrides = [*TINY_TRAIN, "train.iterations_per_epoch=10", "train.batch_size=2", "train.max_epochs=4",
                 "network.params.widths=[8,16,32]", "inference.overlap=0.25", "train.val_interval=4"]
    fit(load_config("demo", overrides), phantom_dataset, run, progress=False)
    return run


@pytest.mark.slow
def test_monai_alone_runs_the_bundle_to_radsegs_masks(trained_run, phantom_dataset, tmp_path):
    """MONAI's own runner (radseg not importable) against radseg predict on the phantom's test scans.

    The two differ only in how the mask returns to the scan's grid: MONAI's Invertd resamples the
    softmax probabilities of the whole volume (bilinear, then argmax); radseg maps the logits back
    slab by slab with its own linear interpolation (and skips windows outside the body). Both run
    the same network on the same windows; the boundary voxels where the two interpolations round
    differently are the whole difference.
    """
    bundle = tmp_path / "bundle"
    export_model(trained_run, "monai-bundle", bundle)
    scans = phantom_dataset / "imagesTs"
    run_monai_bundle(bundle / "configs" / "inference.json", bundle, scans, tmp_path / "monai")
    summary = predict_many(trained_run, [scans], tmp_path / "radseg", PredictOptions(progress=False, postprocess=None),
                           device="cpu")
    assert summary.count("done") == len(list(scans.glob("*.nii.gz"))) >= 2
    for result in summary.results:
        theirs = tmp_path / "monai" / f"{result.name}_seg.nii.gz"
        dice, differ = compare_masks(result.mask, theirs, labels=(0, 1, 2))
        print(f"{result.name}: Dice radseg vs MONAI runner {dice}; {differ} voxels differ "
              "(Invertd's bilinear resampling of probabilities against radseg's slab-wise return of logits)")
        assert all(score >= 0.99 for score in dice.values()), (result.name, dice)
        liver = int((np.asarray(nib.load(result.mask).dataobj) == 1).sum())
        assert liver > 1000, f"the tiny run found no liver in {result.name} ({liver} voxels): the check would be empty"


def test_radseg_predicts_its_own_exported_bundle_as_it_predicts_the_run(checkpoint, tmp_path):
    from pipeline.predict.predict_helpers import DIRECTIONS, phantom_scan
    import SimpleITK as sitk

    image, _ = phantom_scan(DIRECTIONS["oblique"])
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    export_model(checkpoint, "monai-bundle", tmp_path / "bundle")
    bundled = load_predict_model(tmp_path / "bundle", "cpu")
    assert bundled.preprocess == load_predict_model(checkpoint, "cpu").preprocess
    for model, out in ((checkpoint, "run"), (bundled, "bundle_out")):
        assert predict_many(model, [tmp_path / "scan.nii.gz"], tmp_path / out, PredictOptions(progress=False),
                            device="cpu").count("done") == 1
    ours, theirs = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "scan.nii.gz"))) for d in ("run", "bundle_out"))
    np.testing.assert_array_equal(ours, theirs)


def test_an_exported_bundle_loads_its_torchscript_once(checkpoint, tmp_path, monkeypatch):
    export_model(checkpoint, "monai-bundle", tmp_path / "bundle")
    calls, real_load = [], torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: calls.append(args) or real_load(*args, **kwargs))
    assert isinstance(load_predict_model(tmp_path / "bundle", "cpu").network, torch.jit.ScriptModule)
    assert len(calls) == 1, calls
