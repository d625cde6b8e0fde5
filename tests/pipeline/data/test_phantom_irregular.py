"""The ``irregular`` phantom family: readable like the other profiles, valid labels, the promised variety."""

import gzip
import json
from functools import partial

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from radseg.pipeline.data import phantom_profiles
from radseg.pipeline.data.check_data import check_dataset
from radseg.pipeline.data.phantom_irregular import make_irregular_case, sample_irregular_case

#: render cases on a grid this many times coarser, so a case takes a fraction of a second
SCALE = 4.0
SEEDS = (1, 2)
PLANS = 24


@pytest.fixture(scope="module")
def plans():
    """(seed, index, plan) of the first cases of two seeds: nothing rasterised."""
    return [(seed, index, sample_irregular_case(seed, index)) for seed in SEEDS for index in range(PLANS)]


def _canonical(image):
    return np.asarray(nib.as_closest_canonical(image).dataobj)


def _first(plans, test):
    return next((seed, index) for seed, index, plan in plans if test(plan))


def test_cli_writes_a_dataset_that_passes_check_data(tmp_path, monkeypatch, capsys):
    from radseg.cli import main

    monkeypatch.setattr(phantom_profiles, "make_irregular_case", partial(make_irregular_case, scale=SCALE))
    assert main(["phantom", str(tmp_path / "d"), "--profile", "irregular", "--cases", "1", "--test", "1",
                 "--seed", "1"]) == 0
    assert "irregular phantom dataset with 1 training and 1 test cases" in capsys.readouterr().out
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "tumour"} and "profile irregular" in meta["description"]
    report = check_dataset(tmp_path / "d")
    assert report.ok, report.lines()
    written = gzip.decompress((tmp_path / "d" / "imagesTr" / "phantom_000.nii.gz").read_bytes())
    assert written == make_irregular_case(1, 0, scale=SCALE)[0].to_bytes()


def test_deterministic_for_a_seed_and_different_across_seeds():
    first, again = make_irregular_case(3, 1, scale=SCALE), make_irregular_case(3, 1, scale=SCALE)
    assert [i.to_bytes() for i in first] == [i.to_bytes() for i in again]
    assert first[0].to_bytes() != make_irregular_case(4, 1, scale=SCALE)[0].to_bytes()


def test_labels_are_0_1_2_and_tumour_strictly_inside_the_liver(plans):
    many = _first(plans, lambda plan: len(plan.lesions) >= 4)
    for seed, index in (many, (1, 0)):
        image, label = make_irregular_case(seed, index, scale=SCALE / 2)
        hu, lab = np.asarray(image.dataobj), np.asarray(label.dataobj)
        assert hu.dtype == np.int16 and lab.dtype == np.uint8 and hu.shape == lab.shape
        assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).sum() > 1000
        tumour = lab == 2
        # every tumour voxel has liver or tumour all around it
        assert not (ndimage.binary_dilation(tumour, np.ones((3, 3, 3), bool)) & (lab == 0)).any()
        assert tumour.any() or (seed, index) != many


def test_hypo_and_hyper_lesions_both_occur_and_show(plans):
    kinds = {lesion.kind for _, _, plan in plans for lesion in plan.lesions}
    assert kinds == {"hypo", "hyper", "rim", "necrotic"}
    for kind, sign in (("hypo", -1), ("hyper", 1)):
        seed, index = _first(plans, lambda plan: plan.lesions and all(l.kind == kind for l in plan.lesions)
                             and max(l.radius_mm for l in plan.lesions) > 12 and not plan.cut)
        image, label = make_irregular_case(seed, index, scale=SCALE / 2)
        hu, lab = np.asarray(image.dataobj), np.asarray(label.dataobj)
        assert sign * (np.median(hu[lab == 2]) - np.median(hu[lab == 1])) > 10, (kind, seed, index)


def test_spacing_counts_and_sizes_vary(plans):
    slices = [plan.spacing[2] for _, _, plan in plans]
    in_plane = [plan.spacing[0] for _, _, plan in plans]
    assert min(slices) == 1.0 and max(slices) == 5.0
    assert 0.6 <= min(in_plane) < 0.7 and 0.9 < max(in_plane) <= 1.0
    counts = [len(plan.lesions) for _, _, plan in plans]
    assert 0 in counts and max(counts) >= 6 and len(set(counts)) >= 5
    diameters = [2 * lesion.radius_mm for _, _, plan in plans for lesion in plan.lesions]
    assert min(diameters) < 8 and max(diameters) > 40
    assert all(np.prod(plan.shape) * 4 <= 60e6 for _, _, plan in plans), "at most 60 MB of float per case"


def test_flipped_oblique_and_cut_scans_keep_the_liver_on_the_right(plans):
    orientations = {plan.orientation for _, _, plan in plans}
    assert {"RAS", "LPS"} <= orientations
    picks = {"LPS": _first(plans, lambda p: p.orientation == "LPS" and p.rotation is None),
             "oblique": _first(plans, lambda p: p.rotation is not None),
             "cut": _first(plans, lambda p: p.cut == "top" and p.rotation is None)}
    for name, (seed, index) in picks.items():
        image, label = make_irregular_case(seed, index, scale=SCALE)
        plan = sample_irregular_case(seed, index)
        direction = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
        if name == "LPS":
            assert np.allclose(np.sign(np.diag(direction)), (-1, -1, 1))
        if name == "oblique":
            assert np.abs(direction).max(axis=0).min() < 0.996, "a tilted direction matrix"
        lab = np.asarray(label.dataobj)
        liver_x = nib.affines.apply_affine(image.affine, ndimage.center_of_mass(lab > 0))[0]
        assert liver_x > plan.body_world[0] + 10, "the liver lies on the patient's right (+x in RAS)"
        if name == "cut":
            assert (_canonical(label)[..., -1] > 0).any(), "the liver is cut by the top of the scan"
