"""``radseg review`` without a browser: the folder it writes, its refusals, and the display grid's geometry."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from review_helpers import save
from radseg.cli import main
from radseg.errors import DataError
from radseg.pipeline.review import review_folder
from radseg.pipeline.review.disagreement import error_components
from radseg.pipeline.review.pages import ASSETS
from radseg.pipeline.review.volumes import display_grid

AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])


def write_cases(root, dice_order=(0, 1, 2), affine=AFFINE, shape=(16, 14, 8)):
    """Cases whose prediction misses more of the truth as their number grows (case_2 worst)."""
    for index, missed in enumerate(dice_order):
        image = np.full(shape, -1000, np.int16)
        truth = np.zeros(shape, np.uint8)
        truth[3:11, 3:11, 2:6] = 1
        image[truth > 0] = 60
        pred = truth.copy()
        pred[3:3 + 2 * missed, 3:11, 2:6] = 0
        for folder, array in (("images", image), ("truth", truth), ("pred", pred)):
            save(root / folder / f"case_{index}.nii.gz", array, affine)
    return root


def test_writes_the_pages_and_one_script_per_case(tmp_path):
    root = write_cases(tmp_path)
    result = review_folder(root / "pred", tmp_path / "review", truth=root / "truth", images=root / "images",
                           progress=False)
    assert result.num_cases == 3
    assert sorted(p.name for p in (tmp_path / "review").iterdir()) == sorted([*ASSETS, "index_data.js", "cases"])
    assert sorted(p.name for p in (tmp_path / "review" / "cases").iterdir()) == ["case_0.js", "case_1.js", "case_2.js"]
    index = json.loads(re.sub(r"^window\.RADSEG_INDEX = |;\n$", "", (tmp_path / "review" / "index_data.js").read_text()))
    dice = {row["case_id"]: row["scores"]["foreground"]["dice"] for row in index["rows"]}
    assert dice["case_0"] == 1.0 and dice["case_1"] == pytest.approx(2 * 192 / (192 + 256))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_case_off_the_grid_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    root = write_cases(tmp_path)
    save(root / "images" / "case_1.nii.gz", np.zeros((16, 14, 9), np.int16), AFFINE)
    code = main(["review", "--pred", str(root / "pred"), "--truth", str(root / "truth"), "--images",
                 str(root / "images"), "--output", str(tmp_path / "review")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert "case case_1" in err and "shape [16, 14, 8] vs [16, 14, 9]" in err
    assert not (tmp_path / "review").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_earlier_review_needs_overwrite_and_other_folders_are_never_replaced(tmp_path):
    root = write_cases(tmp_path)
    review_folder(root / "pred", tmp_path / "review", truth=root / "truth", progress=False)
    with pytest.raises(DataError, match="already holds a review; pass --overwrite"):
        review_folder(root / "pred", tmp_path / "review", truth=root / "truth", progress=False)
    review_folder(root / "pred", tmp_path / "review", truth=root / "truth", overwrite=True, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="holds other files, not a radseg review"):
        review_folder(root / "pred", tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_predictions_alone_give_volumes_and_no_scores(tmp_path):
    root = write_cases(tmp_path)
    review_folder(root / "pred", tmp_path / "review", images=root / "images", labels="1=liver", progress=False)
    text = (tmp_path / "review" / "index_data.js").read_text()
    index = json.loads(text[len("window.RADSEG_INDEX = "):-2])
    assert not index["has_truth"]
    row = index["rows"][0]["scores"]["liver"]
    assert row["dice"] is None and row["volume_pred_ml"] == pytest.approx(256 * 1.5 * 1.2 * 3.0 / 1000)


OBLIQUE = np.array([[0.9 * np.cos(0.35), -1.1 * np.sin(0.35), 0, -20], [0.9 * np.sin(0.35), 1.1 * np.cos(0.35), 0, 7],
                    [0, 0, 2.5, 30], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [
    np.diag([1.5, 1.2, 3.0, 1.0]),  # RAS
    np.array([[-1.5, 0, 0, 40], [0, -1.2, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]]),  # LPS-stored (flipped)
    np.array([[0, 0, 2.0, 1], [-1.0, 0, 0, 2], [0, -1.5, 0, 3], [0, 0, 0, 1]]),  # permuted and flipped
    OBLIQUE,
], ids=["ras", "flipped", "permuted", "oblique"])
def test_the_display_grid_puts_every_voxel_at_its_own_world_position(affine):
    shape = (7, 6, 5)
    values = np.arange(np.prod(shape)).reshape(shape)
    grid = display_grid(shape, affine)
    shown = grid.apply(values)
    assert shown.shape == grid.shape and np.isfortran(shown)
    for index in np.ndindex(*grid.shape):
        source = np.linalg.solve(affine, grid.affine @ [*index, 1.0])[:3]
        assert np.allclose(source, np.round(source), atol=1e-9)
        assert shown[index] == values[tuple(np.round(source).astype(int))]
    axes = np.abs(grid.affine[:3, :3]).argmax(axis=0)
    assert list(axes) == [0, 1, 2] and (np.diag(grid.affine[:3, :3]) > 0).all()  # i -> R, j -> A, k -> S


def test_large_volumes_are_shown_with_every_nth_voxel_and_the_affine_follows():
    grid = display_grid((100, 80, 60), AFFINE, max_voxels=50_000)
    assert grid.step == 3 and grid.shape == (34, 27, 20)
    assert np.allclose(grid.affine, AFFINE @ np.diag([3, 3, 3, 1]))


def test_error_components_come_largest_first_with_a_target_inside_each():
    truth = np.zeros((12, 12, 12), np.uint8)
    pred = truth.copy()
    pred[1:3, 1:3, 1:3] = 1  # 8 voxels, false positive
    truth[8, 8, 8] = 2  # 1 voxel, false negative
    truth[5, 0:5, 6] = 1  # an L-shaped miss: its centroid lies outside it
    truth[5, 4, 6:11] = 1
    components, count = error_components(pred, truth, voxel_ml=0.001)
    assert count == 3 and [(c["voxels"], c["kind"]) for c in components] == [(9, "FN"), (8, "FP"), (1, "FN")]
    for component in components:
        assert pred[tuple(component["voxel"])] != truth[tuple(component["voxel"])]


def test_evaluate_s_report_links_to_a_review_beside_it_or_gives_the_command(tmp_path):
    from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder

    root = write_cases(tmp_path)
    evaluate_folder(root / "pred", root / "truth", tmp_path / "scores", progress=False, resamples=20)
    assert "radseg review --pred" in (tmp_path / "scores" / "report.html").read_text()
    review_folder(root / "pred", tmp_path / "scores" / "review", truth=root / "truth", progress=False)
    evaluate_folder(root / "pred", root / "truth", tmp_path / "scores", overwrite=True, progress=False, resamples=20)
    assert "href='review/index.html'" in (tmp_path / "scores" / "report.html").read_text()
