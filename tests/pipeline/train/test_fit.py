"""Training end to end on the phantom, the training-loop pieces, run logs, and refusals of bad input."""

from __future__ import annotations

import math
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from radseg import keys
from radseg.configs.loader import load_config
from radseg.configs.schema import InferenceConfig, TrainConfig
from radseg.errors import ConfigError, DataError, RadsegError
from radseg.pipeline.core.checkpoint import load_checkpoint
from radseg.pipeline.train.fit import fit
from radseg.pipeline.train.losses import build_loss
from radseg.pipeline.train.run_log import RunLog
from radseg.pipeline.evaluate.metrics import dice_per_class
from radseg.pipeline.evaluate.validate import validate
from radseg.pipeline.train.loop import cycle_batches, train_one_epoch
from conftest import TINY_TRAIN

TINY = [*TINY_TRAIN, "train.max_epochs=2"]


def _cfg(*extra: str):
    return load_config("demo", TINY + list(extra))


@pytest.fixture(scope="module")
def finished_run(phantom_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("fit") / "run"
    result = fit(_cfg(), phantom_dataset, run, progress=False)
    return run, result


def test_fit_writes_a_complete_run_folder(finished_run):
    run, result = finished_run
    for name in ("config.yaml", "splits.json", "fingerprint.json", "last.pt", "best.pt", "metrics.csv",
                 "curves.png", "train.log"):
        assert (run / name).is_file(), name
    assert result.epochs == 2 and 1 <= result.best_epoch <= 2
    assert set(result.best_dice_per_class) == {"liver", "tumour"}
    assert "best mean foreground Dice" in str(result) and str(run) in str(result)
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    for column in ("epoch", "loss", "lr", "epoch_time", "data_time", "dice_liver", "dice_tumour", "mean_dice"):
        assert column in header.split(",")
    assert len(rows) == 2


def test_checkpoints_carry_config_fingerprint_and_labels(finished_run):
    run, result = finished_run
    best = load_checkpoint(run / "best.pt")  # weights_only=True
    assert best["config"]["train"]["roi_size"] == [32, 32, 16]
    assert best["label_names"] == {0: "background", 1: "liver", 2: "tumour"}
    assert best["fingerprint"]["modality"] == "CT" and best["preprocess"]["target_spacing"] == (6.0, 6.0, 6.0)
    assert best["mean_dice"] == pytest.approx(result.best_dice)
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["iteration"] == 4 and last["sampler"] == {"epoch": 2, "seed": 0}
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "config", "fingerprint", "label_names"):
        assert key in last


def test_existing_run_is_refused_and_left_untouched(finished_run, phantom_dataset):
    run, _ = finished_run
    before = (run / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="--resume to continue it, --overwrite to replace it"):
        fit(_cfg(), phantom_dataset, run, progress=False)
    with pytest.raises(ConfigError, match=r"train.roi_size: \[32, 32, 16\] in the run, \[32, 32, 32\] now"):
        fit(_cfg("train.roi_size=[32,32,32]"), phantom_dataset, run, resume=True, progress=False)
    done = fit(None, phantom_dataset, run, resume=True, progress=False)  # finished: nothing to do
    assert done.epochs == 2
    assert (run / "last.pt").read_bytes() == before


def test_bad_input_fails_before_anything_is_written(phantom_dataset, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.max_epochs'"):
        load_config("demo", ["train.max_epoch=3"])
    with pytest.raises(ConfigError, match="nearest valid: 28 or 32"):
        fit(_cfg("train.roi_size=[30,32,16]"), phantom_dataset, tmp_path / "run_roi", progress=False)
    assert not (tmp_path / "run_roi").exists()
    with pytest.raises(ConfigError, match="no run to resume"):
        fit(_cfg(), phantom_dataset, tmp_path / "missing", resume=True, progress=False)

    broken = tmp_path / "broken"
    shutil.copytree(phantom_dataset, broken)
    label_path = sorted((broken / "labelsTr").iterdir())[0]
    label = nib.load(label_path)
    data = np.asarray(label.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, label.affine), label_path)
    with pytest.raises(DataError, match="fails check-data"):
        fit(_cfg(), broken, tmp_path / "run_data", progress=False)
    assert not (tmp_path / "run_data").exists()


def test_dice_per_class_known_answers():
    label = torch.tensor([0, 1, 1, 2, 2, 0])
    pred = torch.tensor([0, 1, 0, 2, 2, 2])
    scores = dice_per_class(pred, label, 4)
    assert scores[0] == pytest.approx(2 * 1 / 3)
    assert scores[1] == pytest.approx(2 * 2 / 5)
    assert math.isnan(scores[2])  # class 3 in neither: not scored
    assert dice_per_class(torch.tensor([3]), torch.tensor([0]), 4)[2] == 0.0


class _Oracle(torch.nn.Module):
    """Reads the class from the image (image == label): logits one-hot of round(image)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        classes = x[:, 0].round().long().clamp(0, self.num_classes - 1)
        return torch.nn.functional.one_hot(classes, self.num_classes).permute(0, 4, 1, 2, 3).float() * self.scale


def test_validate_scores_whole_volumes():
    label = torch.zeros(1, 1, 23, 17, 11)
    label[:, :, 3:12, 4:9, 2:7] = 1
    label[:, :, 15:20, 10:15, 5:9] = 2
    cases = [{keys.IMAGE: label.clone(), keys.LABEL: label, keys.CASE_ID: ["a"]},
             {keys.IMAGE: torch.zeros_like(label), keys.LABEL: label, keys.CASE_ID: ["b"]}]
    dice_sum, dice_count, per_case = validate(
        _Oracle(3), cases, InferenceConfig(roi_size=[8, 8, 8]), [8, 8, 8], 3, device=torch.device("cpu"),
        progress=False,
    )
    assert per_case["a"] == [1.0, 1.0] and per_case["b"] == [0.0, 0.0]
    assert dice_sum.tolist() == [1.0, 1.0] and dice_count.tolist() == [2.0, 2.0]


def test_train_one_epoch_steps_schedule_and_reports_times():
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    batch = {keys.IMAGE: torch.randn(2, 1, 8, 8, 8), keys.LABEL: torch.randint(0, 2, (2, 1, 8, 8, 8))}
    cfg = TrainConfig(iterations_per_epoch=3, max_epochs=2, learning_rate=0.1, warmup_epochs=0)
    optimizer = torch.optim.SGD(network.parameters(), lr=1.0)
    out = train_one_epoch(network, cycle_batches([batch], 3), build_loss(cfg, 2), optimizer, cfg,
                          start_iteration=3, device=torch.device("cpu"), progress=False)
    assert out["iterations"] == 3 and out["loss"] > 0 and out["data_time"] >= 0
    assert out["lr"] == pytest.approx(0.1 * (1 - 5 / 6) ** 0.9)


def test_out_of_memory_names_the_fix():
    class _Oom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    cfg = TrainConfig(iterations_per_epoch=1, roi_size=[128, 128, 64])
    batch = {keys.IMAGE: torch.zeros(1, 1, 4, 4, 4), keys.LABEL: torch.zeros(1, 1, 4, 4, 4)}
    with pytest.raises(RadsegError, match=r"smaller patch \(e.g. --set train.roi_size=\[64, 64, 32\]\)"):
        train_one_epoch(_Oom(), [batch], build_loss(cfg, 2), torch.optim.SGD(_Oom().parameters(), lr=1), cfg,
                        start_iteration=0, device=torch.device("cpu"), progress=False)


def test_run_log_rewrites_metrics_and_draws_curves(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    log.log_epoch({"epoch": 1, "loss": 1.0, "lr": 0.01})
    log.log_epoch({"epoch": 2, "loss": 0.5, "lr": 0.005, "dice_liver": 0.8, "mean_dice": 0.8})
    assert log.draw_curves().stat().st_size > 0
    log.close()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,lr,dice_liver,mean_dice" and lines[1] == "1,1.0,0.01,,"
    resumed = RunLog(tmp_path, rows=[{"epoch": 1, "loss": 1.0, "lr": 0.01}], tensorboard=False)
    resumed.close()
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2  # epoch 2 was after the checkpoint


def test_overwrite_replaces_only_what_a_run_wrote(finished_run, phantom_dataset, tmp_path):
    run, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "my_notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"holds files radseg did not write \(my_notes.txt\)"):
        fit(_cfg(), phantom_dataset, copy, overwrite=True, progress=False)
    assert (copy / "my_notes.txt").read_text() == "keep me" and (copy / "last.pt").is_file()
    project = tmp_path / "project"
    project.mkdir()
    (project / "scan.nii.gz").write_bytes(b"data")
    with pytest.raises(ConfigError, match="choose an empty or new folder"):
        fit(_cfg(), phantom_dataset, project, progress=False)
    assert [p.name for p in project.iterdir()] == ["scan.nii.gz"]


def test_fit_refuses_2d_networks_and_undeclared_modality(phantom_dataset, tmp_path):
    with pytest.raises(ConfigError, match="'simple_cnn2d' is a 2D classification network"):
        fit(_cfg("network.name=simple_cnn2d", "network.params={}", "train.roi_size=[32,32]"), phantom_dataset,
            tmp_path / "run2d", progress=False)
    folders = tmp_path / "folders"
    (folders / "images").mkdir(parents=True)
    (folders / "labels").mkdir()
    for case in sorted((phantom_dataset / "imagesTr").iterdir()):
        shutil.copy(case, folders / "images" / case.name)
        shutil.copy(phantom_dataset / "labelsTr" / case.name, folders / "labels" / case.name)
    with pytest.raises(ConfigError, match="does not declare its modality .folders layout.; set data.modality=CT"):
        fit(_cfg("data.modality=auto"), folders, tmp_path / "run_mod", progress=False)
    assert not (tmp_path / "run2d").exists() and not (tmp_path / "run_mod").exists()


def test_cpu_training_steps_run_channels_last_and_validation_contiguous(phantom_dataset, tmp_path, monkeypatch):
    """On CPU the steps are faster channels-last and the windows slower (benchmarks/cpu_speed.py):
    the weights are channels-last while training and contiguous while validating."""
    from radseg.pipeline.train import fit as fit_module

    if not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN is not available: channels-last stays off on this CPU")
    seen = {"train": [], "validate": []}

    def _layout(network) -> str:
        weight = next(p for p in network.parameters() if p.dim() == 5 and p.shape[1] > 1)  # 1 channel: both
        return "contiguous" if weight.is_contiguous() else "channels_last"

    real_epoch, real_validate = fit_module.train_one_epoch, fit_module.validate

    def recording_epoch(model, *args, **kwargs):
        seen["train"].append((_layout(model), kwargs["channels_last"]))
        return real_epoch(model, *args, **kwargs)

    def recording_validate(network, *args, **kwargs):
        seen["validate"].append(_layout(network))
        return real_validate(network, *args, **kwargs)

    monkeypatch.setattr(fit_module, "train_one_epoch", recording_epoch)
    monkeypatch.setattr(fit_module, "validate", recording_validate)
    fit(_cfg("train.val_interval=1", "train.device=cpu"), phantom_dataset, tmp_path / "run", progress=False)
    assert seen["train"] == [("channels_last", True)] * 2
    assert seen["validate"] == ["contiguous"] * 2
    fit(_cfg("train.val_interval=1", "train.device=cpu", "train.channels_last=false"), phantom_dataset,
        tmp_path / "plain", progress=False)
    assert seen["train"][2:] == [("contiguous", False)] * 2
