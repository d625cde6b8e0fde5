"""Refusals before training: background-only labels under class-balanced sampling, and run folders
where radseg deletes or replaces only the exact names it writes."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from radseg.configs.loader import load_config
from radseg.errors import ConfigError, DataError
from radseg.pipeline.train.fit import fit
from radseg.pipeline.train.run_folder import CONFIG_MARKER, refuse_foreign_files, remove_run_files
from conftest import TINY_TRAIN

TINY = [*TINY_TRAIN, "train.max_epochs=1"]


def test_background_only_label_is_refused_for_class_balanced_sampling(phantom_dataset, tmp_path):
    data = shutil.copytree(phantom_dataset, tmp_path / "data")
    for name in ("phantom_000", "phantom_002"):
        path = data / "labelsTr" / f"{name}.nii.gz"
        label = nib.load(path)
        nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine), path)
    cfg = load_config("demo", [*TINY, "augment.sampler=label_classes", "augment.class_ratios=[0,1,1]"])
    with pytest.raises(DataError, match=r"label of case\(s\) phantom_000, phantom_002 .* background only.*"
                                        r"fix: correct or remove those labels, give background a weight > 0, "
                                        r"or set augment.sampler=pos_neg"):
        fit(cfg, data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists(), "refused before anything was written"


def test_background_only_label_with_a_background_weight_is_a_warning(caplog):
    from radseg.pipeline.train.run_checks import check_class_sampling

    cfg = load_config("demo", ["augment.sampler=label_classes"])
    check_class_sampling(cfg, ["case_7"], "data")
    assert "case_7 holds background only" in caplog.text


@pytest.mark.parametrize("name", ["report.tmpl", "scans.tmp", "notes.tmp.txt", ".config.yaml.swp"])
def test_names_that_merely_contain_tmp_are_the_users(tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("radseg's")
    target = run / name
    if name == "scans.tmp":
        target.mkdir()
        (target / "scan.nii.gz").write_bytes(b"data")
    else:
        target.write_text("mine")
    with pytest.raises(ConfigError, match=rf"holds files radseg did not write \({name.replace('.', '[.]')}\)"):
        refuse_foreign_files(run)
    remove_run_files(run)  # even when called regardless, it deletes only radseg's names
    assert target.exists() and not (run / "train.log").exists()


def test_only_radseg_files_and_their_temp_files_are_removed_without_rmtree(tmp_path):
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1700000000.host.12.0").write_bytes(b"e")
    for name in ("splits.json", "last.pt", ".last.pt.4242.139.tmp", "metrics.csv"):
        (run / name).write_text("x")
    refuse_foreign_files(run)
    remove_run_files(run)
    assert list(run.iterdir()) == []
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "my_plot.png").write_bytes(b"p")
    with pytest.raises(ConfigError, match=r"tensorboard/my_plot.png"):
        refuse_foreign_files(run)


def test_a_hand_written_config_in_output_is_never_replaced(phantom_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    mine = "# my settings\ntrain:\n  max_epochs: 1\n"
    (run / "config.yaml").write_text(mine)
    with pytest.raises(ConfigError, match=r"holds files radseg did not write \(config.yaml\)"):
        fit(load_config("demo", TINY), phantom_dataset, run, progress=False)
    assert (run / "config.yaml").read_text() == mine
    radseg_written = CONFIG_MARKER + "train:\n  max_epochs: 1\n"  # an unfinished start of radseg's own
    (run / "config.yaml").write_text(radseg_written)
    refuse_foreign_files(run)


def test_a_plans_fingerprint_is_taken_only_for_the_same_cases_and_modality():
    from radseg import keys
    from radseg.pipeline.train.run_setup import _covers
    from radseg.transforms.fingerprint import Fingerprint

    planned = Fingerprint(modality="CT", case_ids=["case_a", "case_b"], spacings=[], shapes=[], median_spacing=[],
                          median_shape=[], target_spacing=[])
    datalist = [{keys.CASE_ID: "case_a"}, {keys.CASE_ID: "case_b"}]
    assert _covers(planned, datalist, "CT")
    assert not _covers(planned, datalist[::-1], "CT")  # another order: measured again
    assert not _covers(planned, datalist[:1], "CT")
    assert not _covers(planned, datalist, "MRI")
    assert not _covers(None, datalist, "CT")
