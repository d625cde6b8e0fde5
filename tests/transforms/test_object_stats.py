import nibabel as nib
import numpy as np
import pytest

from radseg import keys
from radseg.transforms.fingerprint import Fingerprint, compute_fingerprint
from radseg.transforms.object_stats import label_objects, summarize_objects


def _ball(shape, center, radius_vox):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius_vox**2


def _write(path, array, spacing, orientation_flip=False):
    affine = np.diag([*spacing, 1.0])
    if orientation_flip:  # stored x axis runs right-to-left: RAS extents must not change
        affine[0, 0] = -spacing[0]
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)
    return str(path)


@pytest.fixture
def two_tumours_label(tmp_path):
    label = np.zeros((60, 50, 20), np.uint8)
    label[5:55, 5:45, 2:18] = 1  # a 50 x 40 x 16 voxel box of liver
    for center in ((18, 20, 10), (40, 28, 10)):
        label[_ball(label.shape, center, 4)] = 2
    return label


def test_label_objects_known_answer(tmp_path, two_tumours_label):
    stats = label_objects(_write(tmp_path / "l.nii.gz", two_tumours_label, (1.0, 1.0, 2.0), orientation_flip=True))
    liver, tumour = stats["classes"]["1"], stats["classes"]["2"]
    assert liver["box_mm"] == [50.0, 40.0, 32.0]
    assert len(liver["object_diameters_mm"]) == 1
    assert len(tumour["object_diameters_mm"]) == 2
    # a ball of radius 4 voxels (4 x 4 x 8 mm): volume 4/3 pi 4*4*8 mm^3, equivalent diameter 2 (4*4*8)^(1/3)
    for diameter in tumour["object_diameters_mm"]:
        assert diameter == pytest.approx(2 * (4 * 4 * 8) ** (1 / 3), rel=0.08)
    assert stats["foreground_box_mm"] == [50.0, 40.0, 32.0]
    assert tumour["voxel_fraction"] == pytest.approx((two_tumours_label == 2).mean())


def test_summary_counts_cases_where_a_class_is_present(tmp_path, two_tumours_label):
    without = np.where(two_tumours_label == 2, 1, two_tumours_label)
    per_case = [label_objects(_write(tmp_path / f"{i}.nii.gz", a, (1.0, 1.0, 2.0)))
                for i, a in enumerate((two_tumours_label, without, without))]
    summary = summarize_objects(per_case)
    assert summary["1"]["cases_present"] == 3 and summary["2"]["cases_present"] == 1
    assert summary["2"]["cases"] == 3 and summary["2"]["median_objects_per_case"] == 2.0
    assert summary["1"]["min_largest_object_share"] == pytest.approx(1.0)  # one liver object in every case
    assert summary["2"]["min_largest_object_share"] == pytest.approx(0.5, abs=0.05)  # two equal tumours
    ball_ml = (two_tumours_label == 2).sum() / 2 * 1.0 * 1.0 * 2.0 / 1000
    assert summary["2"]["min_object_volume_ml"] == pytest.approx(ball_ml, rel=0.01)


def test_fingerprint_with_objects_round_trips(tmp_path, two_tumours_label):
    image = np.full(two_tumours_label.shape, 40, np.int16)
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "i.nii.gz")
    case = {keys.IMAGE: str(tmp_path / "i.nii.gz"), keys.CASE_ID: "a",
            keys.LABEL: _write(tmp_path / "l.nii.gz", two_tumours_label, (1.0, 1.0, 2.0))}
    plain = compute_fingerprint([case], "CT", progress=False)
    assert plain.classes is None
    full = compute_fingerprint([case], "CT", progress=False, objects=True)
    assert set(full.classes) == {"1", "2"} and full.foreground_box_mm == [50.0, 40.0, 32.0]
    assert Fingerprint.from_dict(full.to_dict()) == full
