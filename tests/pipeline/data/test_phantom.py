import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from radseg.errors import DataError
from radseg.pipeline.data.phantom import make_phantom_case, write_phantom_dataset


@pytest.fixture(scope="module")
def cases(phantom_dataset):
    """(image, HU array, label array) of every phantom case, read once."""
    meta = json.loads((phantom_dataset / "dataset.json").read_text())
    pairs = [(e["image"], e["label"]) for e in meta["training"]]
    pairs += [(t, t.replace("imagesTs", "labelsTs")) for t in meta["test"]]
    loaded = []
    for image_path, label_path in pairs:
        image, label = nib.load(phantom_dataset / image_path), nib.load(phantom_dataset / label_path)
        loaded.append((image, np.asarray(image.dataobj), np.asarray(label.dataobj)))
    return loaded


def _world_x(image, mask):
    return nib.affines.apply_affine(image.affine, ndimage.center_of_mass(mask))[0]


def test_layout_and_dataset_json(phantom_dataset):
    meta = json.loads((phantom_dataset / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert (meta["numTraining"], meta["numTest"]) == (4, 2)
    assert meta["training"][0] == {"image": "./imagesTr/phantom_000.nii.gz", "label": "./labelsTr/phantom_000.nii.gz"}
    assert meta["test"] == ["./imagesTs/phantom_004.nii.gz", "./imagesTs/phantom_005.nii.gz"]
    for sub, count in (("imagesTr", 4), ("labelsTr", 4), ("imagesTs", 2), ("labelsTs", 2)):
        assert len(list((phantom_dataset / sub).glob("phantom_*.nii.gz"))) == count
    assert not list(phantom_dataset.parent.glob(".*tmp*"))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, phantom_dataset):
    # case i depends on (seed, i) only, so one case is enough to compare with the session phantom
    again = write_phantom_dataset(tmp_path / "again", num_cases=1, num_test=0, seed=7)
    for sub in ("imagesTr/phantom_000.nii.gz", "labelsTr/phantom_000.nii.gz"):
        assert (again / sub).read_bytes() == (phantom_dataset / sub).read_bytes()
    other = make_phantom_case(seed=8, index=0)[0].to_bytes()
    assert other != gzip.decompress((again / "imagesTr/phantom_000.nii.gz").read_bytes())


def test_labels_and_intensities_are_plausible(cases):
    for image, hu, lab in cases:
        assert hu.dtype == np.int16 and lab.dtype == np.uint8
        assert hu.shape == lab.shape
        assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).sum() > 1000
        assert hu.min() >= -1024 and 700 <= hu.max() <= 1100
        assert -1100 < np.median(hu[hu < -500]) < -900  # air
        assert 45 < np.median(hu[lab == 1]) < 75
        if (lab == 2).any():
            assert np.median(hu[lab == 2]) < np.median(hu[lab == 1]) - 15


def test_tumours_lie_strictly_inside_the_liver(cases):
    tumours = 0
    for _, _, lab in cases:
        if not (lab == 2).any():
            continue
        tumours += 1
        box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in zip(np.argwhere(lab == 2).min(0), np.argwhere(lab == 2).max(0)))
        around_tumour = ndimage.binary_dilation(lab[box] == 2, np.ones((3, 3, 3), bool))
        assert not (around_tumour & (lab[box] == 0)).any()
    assert tumours > 0  # the check above ran on real tumours


def test_liver_is_on_the_patients_right_whatever_the_orientation(cases):
    extra = [make_phantom_case(seed=3, index=i) for i in (0, 1)]
    orientations = set()
    for image, hu, lab in cases + [(i, np.asarray(i.dataobj), np.asarray(lab.dataobj)) for i, lab in extra]:
        orientations.add(nib.aff2axcodes(image.affine))
        # nibabel world coordinates are RAS+: x grows towards the patient's right
        assert _world_x(image, lab == 1) > _world_x(image, hu > -500) + 20, nib.aff2axcodes(image.affine)
    assert len(orientations) >= 4


def test_spacing_orientation_and_origin_vary(cases):
    images = [image for image, _, _ in cases]
    zooms = [image.header.get_zooms() for image in images]
    assert len({round(z[0], 3) for z in zooms}) > 1
    assert all(0.6 <= min(z) and max(sorted(z)[:2]) <= 1.0 and 1.5 <= max(z) <= 5.0 for z in zooms)
    assert len({nib.aff2axcodes(i.affine) for i in images}) > 1
    assert len({tuple(np.round(i.affine[:3, 3], 1)) for i in images}) == len(images)
    for image in images:
        # field of view in world mm, whatever the stored axis order: ~220 x 180 in-plane, 120-160 along z
        extent = np.abs(image.affine[:3, :3] @ np.array(image.shape))
        assert np.allclose(extent[:2], (220, 180), atol=1.0) and 118 <= extent[2] <= 163


def test_refuses_to_overwrite_without_permission(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="already exists and is not empty; pass overwrite=True"):
        write_phantom_dataset(folder, num_cases=1, num_test=0)
    with pytest.raises(DataError, match="does not hold a radseg phantom"):
        write_phantom_dataset(folder, num_cases=1, num_test=0, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_a_phantom(tmp_path):
    folder = write_phantom_dataset(tmp_path / "data", num_cases=1, num_test=0, seed=1)
    write_phantom_dataset(folder, num_cases=1, num_test=0, seed=2, overwrite=True)
    assert "seed 2" in json.loads((folder / "dataset.json").read_text())["description"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_overwrite_never_deletes_what_the_user_added(tmp_path):
    folder = write_phantom_dataset(tmp_path / "data", num_cases=1, num_test=0, seed=1)
    (folder / "run1").mkdir()
    (folder / "run1" / "best.pt").write_bytes(b"weights")
    (folder / "labelsTr" / "my_edit.nii.gz").write_bytes(b"edited")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    with pytest.raises(DataError, match=r"besides the phantom it holds labelsTr/my_edit.nii.gz, run1"):
        write_phantom_dataset(folder, num_cases=1, num_test=0, seed=2, overwrite=True)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
