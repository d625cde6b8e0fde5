"""`radseg plan` and `radseg train --budget` on the session phantom (the calibration is replaced by
counted FLOPs at an assumed rate, so the tests do not depend on the machine's load)."""

import json
import shutil

import pytest
import yaml

from radseg.cli import main
from radseg.configs import load_config
from radseg.pipeline.plan import make_plan
from radseg.pipeline.plan.machine import flops_step_timer, measure_step_seconds
from conftest import TINY_TRAIN


@pytest.fixture
def flops_timer(monkeypatch):
    monkeypatch.setattr(make_plan, "measured_step_timer", lambda device, data=None: flops_step_timer(50.0))


def test_measured_step_is_positive_and_grows_with_the_patch():
    small = measure_step_seconds([4, 8], [8, 8, 8], 1, 1, 2, steps=1)
    assert 0 < small < 30


def test_a_busy_machine_is_timed_again_and_said(monkeypatch, caplog):
    """A calibration that got little of its cores' CPU time (another program ran) is timed again,
    keeps the faster of the two, and says the plan is sized for a busy machine if it stays busy."""
    from radseg.pipeline.plan import machine

    rounds = iter([([3.0, 3.0, 3.0], 0.3), ([1.0, 1.1, 0.9], 0.95), ([3.0] * 3, 0.3), ([2.0] * 3, 0.4)])
    monkeypatch.setattr(machine, "_timed", lambda *args, **kwargs: next(rounds))
    with caplog.at_level("WARNING"):
        assert measure_step_seconds([4, 8], [8, 8, 8], 1, 1, 2) == 1.0
    assert [r.message for r in caplog.records if "another program" in r.message] and "still busy" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert measure_step_seconds([4, 8], [8, 8, 8], 1, 1, 2) == 2.0
    assert "still busy (40%)" in caplog.text


def test_the_cpu_share_of_a_step_is_measured():
    from radseg.pipeline.plan import machine
    import time

    _, idle = machine._timed(lambda batch: time.sleep(0.05), dict, steps=2, warm_up=0)
    assert idle < 0.2  # sleeping is no CPU time: what a step pre-empted by another program looks like


def test_plan_command_writes_a_loadable_commented_plan(phantom_dataset, tmp_path, flops_timer, capsys, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "new" / "plan.yaml"  # a folder that does not exist yet is created
    assert main(["plan", "--data", str(phantom_dataset), "--budget", "20m", "--device", "cpu",
                 "--output", str(out)]) == 0
    devices = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device: ")]
    assert len(devices) == 1 and devices[0].startswith("device: cpu (")  # logged once
    printed = capsys.readouterr().out
    assert "plan for CPU" in printed and f"radseg train --config {out}" in printed
    cfg = load_config(out)
    assert cfg.train.device == "cpu" and cfg.data.root == str(phantom_dataset)
    text = out.read_text()
    assert text.startswith("# radseg plan for") and "  # covers " in text
    assert main(["plan", "--data", str(phantom_dataset), "--output", str(out)]) == 2  # no silent overwrite
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_plan_refuses_a_class_missing_from_every_label(phantom_dataset, tmp_path, flops_timer, capsys):
    data = tmp_path / "data"
    shutil.copytree(phantom_dataset, data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"]["3"] = "metastasis"
    (data / "dataset.json").write_text(json.dumps(meta))
    assert main(["plan", "--data", str(data), "--output", str(tmp_path / "p.yaml")]) == 2
    assert "class(es) 3 (metastasis) are declared" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_budget_too_small_fails_before_training(phantom_dataset, tmp_path, flops_timer, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(phantom_dataset), "--output", str(run), "--budget", "5s"]) == 2
    assert "the minimum is about" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.slow
def test_train_budget_fold_all_trains_on_every_case(phantom_dataset, tmp_path, flops_timer, capsys, caplog):
    run = tmp_path / "run"
    # the CPU plan's network is monai_unet: its widths are network.params.channels
    tiny = [s.replace("network.params.widths", "network.params.channels") for s in TINY_TRAIN
            if not s.startswith("data.num_folds")]
    args = ["train", "--data", str(phantom_dataset), "--output", str(run), "--budget", "30m", "--fold", "all",
            "--device", "cpu", *[a for item in tiny for a in ("--set", item)], "--set", "train.max_epochs=1"]
    assert main(args) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["fold"] == "all"
    assert load_config(run / "plan.yaml").data.fold == 0  # the plan as planned; the run adds --fold and --set
    assert "fold all: training on all 4 cases" in caplog.text
    # the run takes the plan's fingerprint instead of reading every case again: only the plan's holds
    # per-class object statistics
    assert json.loads((run / "fingerprint.json").read_text())["classes"]


def _mri_nnunet(root, cases=4, shape=(96, 96, 20), spacing=(0.6, 0.6, 3.6)):
    """A tiny generated two-channel MRI dataset in the nnU-Net v2 raw layout (a ball as prostate)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    grid = np.indices(shape).astype(float) * np.asarray(spacing)[:, None, None, None]
    for index in range(cases):
        centre = np.asarray(shape) * spacing / 2 + rng.uniform(-5, 5, 3)
        label = (sum((g - c) ** 2 for g, c in zip(grid, centre)) < 15.0**2).astype(np.uint8)
        affine = np.diag([*spacing, 1.0])
        for channel in range(2):
            image = 100 + 50 * label + rng.normal(0, 10, shape)
            path = root / "imagesTr" / f"pr_{index:03d}_{channel:04d}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
        (root / "labelsTr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"pr_{index:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "prostate": 1},
        "numTraining": cases, "file_ending": ".nii.gz", "name": "Dataset042_Tiny"}))
    return root


def test_plan_of_a_generated_two_channel_mri_nnunet_dataset(tmp_path, flops_timer):
    from radseg.pipeline.plan.make_plan import plan_dataset

    plan = plan_dataset(_mri_nnunet(tmp_path / "Dataset042_Tiny"), "10m", "cpu", progress=False)
    cfg = plan.config
    assert cfg.data.modality == "MRI" and cfg.data.num_folds == 4
    assert cfg.preprocess.target_spacing[2] == pytest.approx(3.6)  # the coarse slice axis is never made finer
    assert 30.0 / sorted(cfg.preprocess.target_spacing)[1] >= 6  # the 30 mm prostate spans >= 6 voxels
    assert cfg.train.roi_size[2] * cfg.preprocess.target_spacing[2] <= 72.0 + 8 * 3.6  # within the 72 mm slab
    assert cfg.augment.sampler == "pos_neg"  # the 30 mm ball fills 6% of this small field of view, in every case
    assert load_config(make_plan.write_plan(plan, tmp_path / "plan.yaml")) == cfg


def test_the_calibration_times_real_patches_through_a_data_loader(phantom_dataset, monkeypatch):
    from radseg.configs.schema import AugmentConfig
    from radseg.pipeline.plan import machine
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.transforms.fingerprint import compute_fingerprint

    datalist = to_datalist(discover_dataset(phantom_dataset).training)
    fingerprint = compute_fingerprint(datalist, "CT", objects=False, progress=False)
    _extent, _seconds, item = make_plan._probe(datalist, fingerprint, "CT")
    augment = AugmentConfig(sampler="label_classes", class_ratios=[1.0, 1.0, 1.0], num_samples=1, flip_prob=0.0)
    batches = make_plan.probe_batches(item, augment, 3, workers=0)
    batch = next(iter(batches([16, 16, 8], 2)))
    assert tuple(batch["image"].shape) == (2, 1, 16, 16, 8) and tuple(batch["label"].shape) == (2, 1, 16, 16, 8)
    seen = []

    def counted(roi, patches):
        for batch in batches(roi, patches):
            seen.append(batch)
            yield batch

    # a busy CI machine would trigger the second timing round (its own test above) and draw more
    # batches; this test is about each step drawing a loaded batch, so the round count is fixed
    monkeypatch.setattr(machine, "BUSY_SHARE", 0.0)
    seconds = measure_step_seconds([4, 8], [16, 16, 8], 2, 1, 3, steps=2, network="monai_unet",
                                   batches=counted([16, 16, 8], 2))
    assert 0 < seconds < 30 and len(seen) == 4  # two warm-up steps, two timed, each on a loaded batch


def _no_planning(*args, **kwargs):
    raise AssertionError("a refused --output must be refused before planning")


def test_plan_output_is_checked_before_planning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(make_plan, "plan_dataset", _no_planning)
    existing = tmp_path / "plan.yaml"
    existing.write_text("mine")
    assert main(["plan", "--data", str(tmp_path), "--output", str(existing)]) == 2
    assert capsys.readouterr().err.strip() == (f"radseg plan: error: plan output {existing} already exists; "
                                               "pass --overwrite to replace it or choose another path")
    for flags in ([], ["--overwrite"]):  # a folder: one line naming it, never a temporary file's path
        assert main(["plan", "--data", str(tmp_path), "--output", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"radseg plan: error: --output {tmp_path} is a folder, but the plan is a YAML file; "
                       f"pass a file path such as {tmp_path / 'plan.yaml'}")
    assert main(["plan", "--data", str(tmp_path), "--output", str(existing / "sub" / "plan.yaml")]) == 2
    assert f"{existing} is a file, not a folder" in capsys.readouterr().err
    assert existing.read_text() == "mine"

