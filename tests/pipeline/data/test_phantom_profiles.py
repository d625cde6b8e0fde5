import gzip

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from radseg.errors import DataError
from radseg.pipeline.data.phantom import write_phantom_dataset
from radseg.pipeline.data.phantom_profiles import LONG_FOV_MM, SLICE_MM, make_profile_case

CASES = 8


@pytest.fixture(scope="module")
def long_cases():
    """(image, HU array, label array) of the first chest-pelvis cases of seed 3."""
    out = []
    for index in range(CASES):
        image, label = make_profile_case("chest-pelvis", 3, index)
        out.append((image, np.asarray(image.dataobj), np.asarray(label.dataobj)))
    return out


def test_same_seed_same_bytes_and_profiles_differ(tmp_path):
    root = write_phantom_dataset(tmp_path / "d", num_cases=1, num_test=0, seed=3, profile="chest-pelvis")
    written = gzip.decompress((root / "imagesTr/phantom_000.nii.gz").read_bytes())
    assert written == make_profile_case("chest-pelvis", 3, 0)[0].to_bytes()
    assert written != make_profile_case("abdomen", 3, 0)[0].to_bytes()
    assert "chest-pelvis" in (root / "dataset.json").read_text()


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(DataError, match="phantom profile must be one of abdomen, chest-pelvis, irregular, not 'pelvis'"):
        write_phantom_dataset(tmp_path / "d", num_cases=1, profile="pelvis")
    assert not (tmp_path / "d").exists()


def test_long_field_of_view_and_spacing(long_cases):
    for image, hu, lab in long_cases:
        zooms = np.linalg.norm(image.affine[:3, :3], axis=0)
        assert 0.85 < zooms[0] < 1.15 and SLICE_MM[0] - 0.01 < zooms[2] < SLICE_MM[1] + 0.01
        extent_z = zooms[2] * hu.shape[2]
        assert LONG_FOV_MM[0] - 6 < extent_z < LONG_FOV_MM[1] + 6
        liver_z = np.nonzero((lab > 0).any(axis=(0, 1)))[0]
        assert liver_z.min() > 0 and liver_z.max() < hu.shape[2] - 1, "the whole liver is in the field of view"


def test_distractors_lesions_noise_and_oblique(long_cases):
    oblique, tumour_radii = 0, []
    for image, hu, lab in long_cases:
        direction = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
        oblique += int(np.abs(direction).max(axis=0).min() < 0.999)
        liver_hu = np.median(hu[lab == 1])
        # the slice axis is stored last in every orientation; lungs are holes in each axial slice
        body = np.stack([ndimage.binary_fill_holes(hu[..., k] > -500) for k in range(hu.shape[2])], axis=2)
        assert ((hu < -700) & body).sum() > 10_000, "lungs inside the body"
        assert (hu > 350).sum() > 1000, "bone"
        near_liver = (np.abs(hu - liver_hu) < 10) & (lab == 0) & body
        assert near_liver.sum() > 0.2 * (lab == 1).sum(), "a distractor of liver-like HU"
        components, count = ndimage.label(lab == 2)
        voxel_ml = float(np.prod(np.linalg.norm(image.affine[:3, :3], axis=0))) / 1000
        for index in range(1, count + 1):
            volume_ml = (components == index).sum() * voxel_ml
            tumour_radii.append((3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3))
        if count:
            assert 15 < liver_hu - np.median(hu[lab == 2]) < 55
    assert 1 <= oblique < CASES
    assert tumour_radii and min(tumour_radii) > 4 and max(tumour_radii) < 23


def test_cli_profile_and_test_count(tmp_path, capsys):
    from radseg.cli import main

    assert main(["phantom", str(tmp_path / "d"), "--profile", "chest-pelvis", "--cases", "1", "--test", "1"]) == 0
    assert "chest-pelvis phantom dataset with 1 training and 1 test cases" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "d" / "labelsTs").iterdir()) == ["phantom_001.nii.gz"]
