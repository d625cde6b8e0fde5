"""``radseg train --folds``: folds in turn, resume after a stop in the middle fold, out-of-fold scores, ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import TINY_TRAIN

from radseg.cli import main
from radseg.configs.loader import load_config
from radseg.errors import ConfigError, DataError
from radseg.pipeline.predict.ensemble import MeanProbabilityNetwork, load_models
from radseg.pipeline.predict.predict import predict_many
from radseg.pipeline.train import cross_validation as cv
from radseg.pipeline.train import folds_run

TINY_CV = [*TINY_TRAIN, "data.num_folds=3", "train.max_epochs=2"]


def test_parse_folds_accepts_ranges_lists_and_all_cv():
    assert cv.parse_folds("0-4") == [0, 1, 2, 3, 4]
    assert cv.parse_folds("3,1") == [1, 3]
    assert cv.parse_folds("all-cv") == "all-cv"
    for bad in ("", "a-b", "1,1", "-1", "2-1"):
        with pytest.raises(ValueError):
            cv.parse_folds(bad)


def test_resolve_folds_refuses_folds_outside_the_split_and_too_few_cases():
    assert cv.resolve_folds("all-cv", 3, 6) == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"--folds \[5\] are outside the split of 5 folds"):
        cv.resolve_folds([0, 5], 5, 10)
    with pytest.raises(DataError, match="too few for 5 folds"):
        cv.resolve_folds("all-cv", 5, 4)


def test_cli_refuses_bad_folds_before_any_work(phantom_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [a for item in TINY_CV for a in ("--set", item)]
    assert main(["train", "--data", str(phantom_dataset), "-o", str(run), "--folds", "0-3", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outside the split of 3 folds" in err[0]
    assert main(["train", "--data", str(phantom_dataset), "-o", str(run), "--folds", "all-cv", *sets,
                 "--set", "data.num_folds=5"]) == 2
    assert "too few for 5 folds" in capsys.readouterr().err
    assert main(["train", "--data", str(phantom_dataset), "-o", str(run), "--folds", "0-1", "--fold", "0"]) == 2
    assert not run.exists()


class _StopAfterFirstEpoch:
    """A pacer that stops the run like Ctrl-C once the first epoch's checkpoint is written."""

    def start(self) -> None:
        pass

    def epoch_done(self, *args, **kwargs) -> int:
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def cv_run(phantom_dataset, tmp_path_factory) -> Path:
    """A 3-fold run stopped during fold 1 and resumed: what the test below checks, shared with the others."""
    return tmp_path_factory.mktemp("cv") / "run"


def test_stop_in_middle_fold_then_resume_keeps_done_folds_and_scores(phantom_dataset, cv_run, monkeypatch):
    real_fit = folds_run.fit

    def stopping_fit(cfg, *, fold, **kwargs):
        if fold == 1:
            kwargs["pacer"] = _StopAfterFirstEpoch()
        return real_fit(cfg, fold=fold, **kwargs)

    monkeypatch.setattr(folds_run, "fit", stopping_fit)
    cfg = load_config("demo", TINY_CV)
    with pytest.raises(KeyboardInterrupt):
        folds_run.train_folds(phantom_dataset, cv_run, "all-cv", cfg=cfg, progress=False)
    state = json.loads((cv_run / cv.CV_FILE).read_text())
    assert list(state["done"]) == ["0"]
    assert (cv_run / "fold_1" / "last.pt").is_file() and not (cv_run / "fold_2").exists()
    fold0 = (cv_run / "fold_0" / "best.pt").stat().st_mtime_ns

    monkeypatch.setattr(folds_run, "fit", real_fit)
    result = folds_run.train_folds(phantom_dataset, cv_run, None, resume=True, progress=False)
    assert [(f.fold, f.status) for f in result.folds] == [(0, "done before"), (1, "resumed"), (2, "trained")]
    assert (cv_run / "fold_0" / "best.pt").stat().st_mtime_ns == fold0
    assert [f.epochs for f in result.folds[1:]] == [2, 2]
    # every case is predicted once, by the fold that did not train on it, and scored
    splits = json.loads((cv_run / cv.CV_SPLITS).read_text())
    assert sorted(p.name for p in (cv_run / "cv" / "raw").glob("*.nii.gz")) == sorted(
        f"{case}.nii.gz" for fold in splits for case in fold["val"])
    summary = json.loads((cv_run / "cv" / "summary.json").read_text())
    assert summary["metrics"]["liver"]["dice"]["n"] == 4
    choice = json.loads((cv_run / "cv" / "postprocess.json").read_text())
    assert {t["clean_up"] for t in choice["trials"]} >= {"largest component of liver", "largest component of tumour"}
    for name in splits[0]["val"]:  # out-of-fold masks lie on the scan's own grid
        image = sitk.ReadImage(str(phantom_dataset / "imagesTr" / f"{name}.nii.gz"))
        mask = sitk.ReadImage(str(cv_run / "cv" / "pred" / f"{name}.nii.gz"))
        assert mask.GetSize() == image.GetSize()
        np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-4)


def test_cross_validation_run_predicts_as_an_ensemble(phantom_dataset, cv_run, tmp_path):
    if not (cv_run / "cv" / "summary.json").is_file():
        pytest.skip("needs the run of test_stop_in_middle_fold_then_resume_keeps_done_folds_and_scores")
    model = load_models(cv_run, "cpu")
    assert isinstance(model.network, MeanProbabilityNetwork) and len(model.members) == 3
    summary = predict_many(model, [phantom_dataset / "imagesTs"], tmp_path / "pred", device="cpu")
    assert summary.count("done") == 2
    record = json.loads(next((tmp_path / "pred").glob("phantom_*.json")).read_text())
    assert record["members"] == [str(cv_run / f"fold_{k}" / "best.pt") for k in range(3)]


def test_mean_probability_network_is_the_mean_of_the_members_softmax():
    torch.manual_seed(0)
    members = [torch.nn.Conv3d(1, 3, 1) for _ in range(3)]
    windows = torch.randn(2, 1, 4, 4, 4)
    expected = torch.stack([torch.softmax(m(windows), dim=1) for m in members]).mean(0)
    with torch.no_grad():
        out = MeanProbabilityNetwork(members)(windows)
    torch.testing.assert_close(torch.softmax(out, dim=1), expected, atol=1e-6, rtol=1e-5)


def test_ensemble_refuses_a_fold_without_best_pt_and_foreign_label_maps(cv_run, tmp_path):
    if not (cv_run / "cv" / "summary.json").is_file():
        pytest.skip("needs the run of test_stop_in_middle_fold_then_resume_keeps_done_folds_and_scores")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / cv.CV_FILE).write_text((cv_run / cv.CV_FILE).read_text())
    with pytest.raises(DataError, match="fold_0, fold_1, fold_2 has no best.pt"):
        load_models(broken, "cpu")
    saved = torch.load(cv_run / "fold_0" / "best.pt", weights_only=True)
    saved["label_names"] = {0: "background", 1: "kidney", 2: "cyst"}
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="ensemble members label differently"):
        load_models([cv_run / "fold_1", tmp_path / "other.pt"], "cpu")


def test_members_that_preprocess_differently_average_on_the_scan_grid(phantom_dataset, cv_run, tmp_path):
    if not (cv_run / "cv" / "summary.json").is_file():
        pytest.skip("needs the run of test_stop_in_middle_fold_then_resume_keeps_done_folds_and_scores")
    saved = torch.load(cv_run / "fold_0" / "best.pt", weights_only=True)
    saved["preprocess"]["target_spacing"] = [4.0, 4.0, 4.0]
    torch.save(saved, tmp_path / "finer.pt")
    model = load_models([cv_run / "fold_0" / "best.pt", tmp_path / "finer.pt"], "cpu")
    assert len(model.grid_members) == 2
    summary = predict_many(model, [phantom_dataset / "imagesTs"], tmp_path / "pred", device="cpu")
    assert summary.count("done") == 2
    for mask in (tmp_path / "pred").glob("phantom_*.nii.gz"):
        image = sitk.ReadImage(str(phantom_dataset / "imagesTs" / mask.name))
        assert sitk.ReadImage(str(mask)).GetSize() == image.GetSize()


def test_cv_output_check_refuses_foreign_and_single_fold_folders(tmp_path):
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "config.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match="holds a single-fold run"):
        cv.check_cv_output(tmp_path / "single", resume=False, overwrite=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files radseg did not write \(notes.txt\)"):
        cv.check_cv_output(tmp_path / "mine", resume=False, overwrite=True)
    with pytest.raises(ConfigError, match="holds no cross-validation run"):
        cv.check_cv_output(tmp_path / "mine", resume=True, overwrite=False)
    (tmp_path / "stopped").mkdir()  # stopped while planning: only radseg's own files, no cv.json yet
    (tmp_path / "stopped" / "plan.yaml").write_text("x: 1\n")
    cv.check_cv_output(tmp_path / "stopped", resume=False, overwrite=False)


def test_fold_runs_without_cv_json_need_overwrite(tmp_path):
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / "best.pt").write_bytes(b"")  # folds trained by hand with --fold 0 -o RUN/fold_0
    with pytest.raises(ConfigError, match=r"holds trained fold runs \(fold_0\) but no cv.json; pass --overwrite"):
        cv.check_cv_output(tmp_path, resume=False, overwrite=False)
    cv.check_cv_output(tmp_path, resume=False, overwrite=True)


def test_fold_stopped_before_its_first_checkpoint_starts_again_on_resume(phantom_dataset, tmp_path, monkeypatch):
    from radseg.pipeline.train.run_folder import save_run_config

    real_fit = folds_run.fit

    def stopped_while_caching(cfg, *, output, **kwargs):
        Path(output).mkdir(parents=True, exist_ok=True)
        save_run_config(cfg, Path(output))  # what fit writes before caching and the first epoch
        raise KeyboardInterrupt

    monkeypatch.setattr(folds_run, "fit", stopped_while_caching)
    cfg = load_config("demo", [*TINY_TRAIN, "train.max_epochs=1"])  # 2 folds
    with pytest.raises(KeyboardInterrupt):
        folds_run.train_folds(phantom_dataset, tmp_path / "run", "all-cv", cfg=cfg, progress=False)
    assert (tmp_path / "run" / "fold_0" / "config.yaml").is_file()
    monkeypatch.setattr(folds_run, "fit", real_fit)
    result = folds_run.train_folds(phantom_dataset, tmp_path / "run", None, resume=True, progress=False, score=False)
    assert [(f.fold, f.status, f.epochs) for f in result.folds] == [(0, "trained", 1), (1, "trained", 1)]
