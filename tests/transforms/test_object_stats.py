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


def _lesion_with_border_fragments():
    """A liver box holding a 20 mm lesion (1 mm voxels) ringed by 16 one- and two-voxel border fragments."""
    label = np.zeros((50, 50, 50), np.uint8)
    label[3:47, 3:47, 3:47] = 1
    label[_ball(label.shape, (25, 25, 25), 10)] = 2  # 4169 voxels: equivalent diameter 19.97 mm
    for k in range(16):  # 13 voxels from the centre: two or three voxels off the lesion's border, apart
        x, y = (int(round(25 + 13 * f(2 * np.pi * k / 16))) for f in (np.cos, np.sin))
        label[x, y, 25] = 2
        if k % 2:
            label[x, y, 26] = 2
    return label


def test_border_fragments_are_set_aside_and_do_not_drive_the_spacing(tmp_path):
    from radseg.pipeline.plan import rules

    stats = label_objects(_write(tmp_path / "l.nii.gz", _lesion_with_border_fragments(), (1.0, 1.0, 1.0)))
    lesion = stats["classes"]["2"]
    assert len(lesion["component_diameters_mm"]) == 17 and lesion["fragments"] == 16
    assert lesion["object_diameters_mm"] == [pytest.approx(20.0, abs=0.2)]
    summary = summarize_objects([stats])["2"]
    assert (summary["components"], summary["objects"], summary["fragments"]) == (17, 1, 16)
    assert summary["component_diameter_mm_p05"] < 2.0  # what the old fingerprint called the smallest objects
    assert summary["object_diameter_mm_p05"] == pytest.approx(20.0, abs=0.2)
    assert summary["median_objects_per_case"] == 1.0
    candidates = rules.spacing_candidates([0.8, 0.8, 2.5])
    # the old statistics (every component an object) resolved no candidate: the finest was forced
    assert not any(rules.resolves(s, summary["component_diameter_mm_p05"]) for s in candidates)
    # the lesion itself (20 mm / 6 voxels: 3.3 mm) allows every candidate, up to 3.2 mm in plane
    allowed = [s for s in candidates if rules.resolves(s, rules.smallest_object_mm({"2": summary}))]
    assert allowed == candidates and candidates[-1] == [3.2, 3.2, 3.2]


def test_a_labels_only_small_lesions_are_objects_not_fragments():
    from radseg.transforms.object_stats import fragments

    assert fragments(np.array([3, 2])).tolist() == [False, False]  # nothing larger beside them
    assert fragments(np.array([4000, 8, 9, 300])).tolist() == [False, True, False, False]
    assert fragments(np.array([40, 5])).tolist() == [False, False]  # 5 voxels are not under a tenth of 40


def _liver_with_tumour_at(x_centre, shape_x=100):
    """A liver box (x 10..49, 1 mm voxels) and a 4 mm-radius tumour centred at ``x_centre``."""
    label = np.zeros((shape_x, 60, 40), np.uint8)
    label[10:50, 10:50, 5:35] = 1
    label[_ball(label.shape, (x_centre, 30, 20), 4)] = 2
    return label


def test_containment_distances_inside_touching_and_outside(tmp_path):
    def stats(x_centre, name):
        return label_objects(_write(tmp_path / f"{name}.nii.gz", _liver_with_tumour_at(x_centre), (1.0, 1.0, 1.0)))

    inside, touching, near, far = stats(30, "in"), stats(52, "touch"), stats(70, "near"), stats(85, "far")
    assert inside["classes"]["2"]["distance_to_mm"] == {"1": 0.0}
    assert touching["classes"]["2"]["distance_to_mm"] == {"1": 0.0}  # bulges out of the liver, touches it
    assert near["classes"]["2"]["distance_to_mm"] == {"1": pytest.approx(17.0)}  # x 66 to the liver's x 49
    assert far["classes"]["2"]["distance_to_mm"] == {"1": None}  # beyond the 20 mm measured
    assert summarize_objects([inside, touching])["2"]["distance_to_mm"] == {"1": 0.0}
    assert summarize_objects([inside, touching, near])["2"]["distance_to_mm"] == {"1": pytest.approx(17.0)}
    without_liver = label_objects(_write(tmp_path / "t.nii.gz", np.where(_liver_with_tumour_at(30) == 2, 2, 0),
                                         (1.0, 1.0, 1.0)))
    assert summarize_objects([inside, without_liver])["2"]["distance_to_mm"] == {"1": None}
    assert summarize_objects([inside, touching])["1"]["distance_to_mm"] == {"2": 0.0}  # the liver touches them too
