"""`radseg train` refusals before any work: --device, the run folder, --resume on another dataset; and
the device logged once."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from radseg.cli import main
from radseg.configs.loader import load_config
from radseg.errors import ConfigError
from radseg.pipeline.train import budget_run, fit as fit_module, run_setup
from radseg.pipeline.train.fit import fit
from conftest import TINY_TRAIN

TINY = [*TINY_TRAIN, "train.max_epochs=1"]


def _no_training(*args, **kwargs):
    raise AssertionError("refused input must not reach training")


@pytest.fixture(scope="module")
def one_epoch_run(phantom_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    fit(load_config("demo", TINY), phantom_dataset, run, progress=False)
    return run


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_refused_naming_the_flag(phantom_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit_module, "fit", _no_training)
    monkeypatch.setattr(budget_run, "plan_dataset", _no_training)
    for extra in ([], ["--budget", "15m"]):
        args = ["train", "--data", str(phantom_dataset), "--output", str(tmp_path / "run"), "--device", "cuda", *extra]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("radseg train: error: --device cuda asks for a GPU, but no CUDA GPU is visible")
        assert "pass --device cpu or --device auto" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_device_flag_is_the_configs_train_device(phantom_dataset, tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(fit_module, "fit", lambda cfg, **kwargs: seen.append(cfg.train.device) or "done")
    assert main(["train", "--data", str(phantom_dataset), "--output", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert seen == ["cpu"]  # the demo preset says auto: --device applies without --budget too
    args = ["train", "--data", str(phantom_dataset), "--output", str(tmp_path / "run"), "--device", "cpu",
            "--set", "train.device=cuda"]
    assert main(args) == 2
    assert "--device cpu and --set train.device=cuda disagree; pass only one of them" in capsys.readouterr().err
    assert seen == ["cpu"]


def test_the_device_is_logged_once(phantom_dataset, tmp_path, caplog):
    caplog.set_level("INFO")
    args = ["train", "--data", str(phantom_dataset), "--output", str(tmp_path / "run"), "--device", "cpu",
            *[a for item in TINY for a in ("--set", item)]]
    assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device: ")]
    assert lines == [f"device: cpu ({torch.get_num_threads()} threads)"]


def test_budget_run_on_an_existing_run_is_refused_before_planning(one_epoch_run, phantom_dataset, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(budget_run, "plan_dataset", _no_training)
    args = ["train", "--data", str(phantom_dataset), "--output", str(one_epoch_run), "--budget", "15m"]
    assert main(args) == 2
    assert "already holds a run; pass --resume to continue it" in capsys.readouterr().err


def test_resume_on_another_dataset_is_refused_naming_both(one_epoch_run, phantom_dataset, tmp_path, monkeypatch):
    record = json.loads((one_epoch_run / "data.json").read_text())
    assert record["root"] == str(phantom_dataset) and record["cases"] == 4
    other = shutil.copytree(phantom_dataset, tmp_path / "other")
    for folder in ("imagesTr", "labelsTr"):
        (other / folder / "phantom_003.nii.gz").unlink()
    meta = json.loads((other / "dataset.json").read_text())
    meta["training"] = [c for c in meta["training"] if "phantom_003" not in c["image"]]
    meta["numTraining"] = len(meta["training"])
    (other / "dataset.json").write_text(json.dumps(meta))
    before = (one_epoch_run / "last.pt").read_bytes()
    monkeypatch.setattr(run_setup, "check_data", _no_training)  # refused before check-data reads a voxel
    with pytest.raises(ConfigError, match=rf"--resume: the run in {one_epoch_run} trained on {phantom_dataset} "
                                          rf"\(4 cases, .*but --data {other} is another dataset \(3 cases"):
        fit(None, other, one_epoch_run, resume=True, progress=False)
    assert (one_epoch_run / "last.pt").read_bytes() == before


def test_resume_on_a_moved_copy_or_an_old_run_goes_on(one_epoch_run, phantom_dataset, tmp_path, caplog):
    moved = shutil.copytree(phantom_dataset, tmp_path / "moved")
    run = shutil.copytree(one_epoch_run, tmp_path / "run")
    assert fit(None, moved, run, resume=True, progress=False).epochs == 1  # the same cases, moved
    assert json.loads((run / "data.json").read_text())["root"] == str(moved)
    (run / "data.json").unlink()  # a run written before radseg kept the record
    caplog.set_level("WARNING")
    assert fit(None, phantom_dataset, run, resume=True, progress=False).epochs == 1
    assert "has no data.json (written by an earlier radseg), so the dataset cannot be checked" in caplog.text
    assert (run / "data.json").is_file()  # recorded from now on
