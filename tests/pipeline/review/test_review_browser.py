"""The review pages in headless Chromium, from disk (``file://``) and from ``--serve``: what is drawn where.

Each test asserts on drawn pixels (canvas read-back), the index's order, the error jump's target or
the millimetre read-out under the pointer, not only that a page loads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("selenium", reason="selenium is absent (pip install -e '.[test]')")
from selenium.webdriver import ActionChains  # noqa: E402 - after the skip
from selenium.webdriver.common.by import By  # noqa: E402

from review_helpers import FIND_COLOUR_JS, browser, open_page, pixel, save, set_control  # noqa: F401 - fixture
from test_review_folder import OBLIQUE, write_cases
from radseg.pipeline.predict.inputs import find_cases
from radseg.pipeline.review import review_folder

FP, FN = (255, 48, 48), (48, 144, 255)
AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])


def _hover(driver, plane: str, x: float, y: float) -> dict:
    """Move the pointer to canvas pixel (x, y) of a plane; the read-out's data."""
    canvas = driver.find_element(By.CSS_SELECTOR, f".view[data-plane={plane}] canvas")
    box = driver.execute_script("const b = arguments[0].getBoundingClientRect(); return [b.left, b.top]", canvas)
    assert box == [int(v) for v in box], f"the canvas sits between pixels at {box}; the pointer cannot hit a voxel"
    ActionChains(driver).move_to_element_with_offset(canvas, int(x) - canvas.size["width"] // 2,
                                                     int(y) - canvas.size["height"] // 2).perform()
    return driver.execute_script("return Object.assign({}, document.getElementById('readout').dataset)")


def test_the_index_lists_the_worst_case_first_and_a_click_opens_it(tmp_path, browser):
    root = write_cases(tmp_path, dice_order=(1, 3, 0))  # case_1 misses most
    review_folder(root / "pred", tmp_path / "review", truth=root / "truth", images=root / "images", progress=False)
    open_page(browser, (tmp_path / "review" / "index.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
    assert [row.get_attribute("data-page") for row in rows] == ["case_1", "case_0", "case_2"]
    browser.find_element(By.CSS_SELECTOR, "#cases th[data-column='0']").click()  # sort by name
    assert [r.get_attribute("data-page") for r in browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")] == \
        ["case_0", "case_1", "case_2"]
    browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")[1].click()
    open_page(browser, browser.current_url)
    assert browser.title == "radseg review: case_1"


def _disagreement_case(root: Path) -> None:
    """A 20x16x10 scan at -1000 HU; a false-positive block and a false-negative block at known voxels."""
    shape = (20, 16, 10)
    truth, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    truth[2:5, 2:5, 4:7] = 1   # missed: false negative (27 voxels)
    pred[12:16, 8:12, 3:7] = 1  # spurious: false positive (64 voxels, the largest error)
    for folder, array in (("images", np.full(shape, -1000, np.int16)), ("truth", truth), ("pred", pred)):
        save(root / folder / "case.nii.gz", array, AFFINE)


def test_disagreement_mode_paints_false_positives_and_negatives_where_they_lie(tmp_path, browser):
    _disagreement_case(tmp_path)
    review_folder(tmp_path / "pred", tmp_path / "review", truth=tmp_path / "truth", images=tmp_path / "images",
                  progress=False)
    open_page(browser, (tmp_path / "review" / "case.html").as_uri() + "#case")
    set_control(browser, "mode", "disagreement")
    set_control(browser, "opacity", "1")
    browser.execute_script("window.radseg.state.cursor = [3, 3, 5]; drawAll();")
    to_canvas = "return window.radseg.voxelToCanvas(arguments[0], arguments[1])"
    x, y = browser.execute_script(to_canvas, "axial", [2, 4, 5])  # off the crosshair lines
    assert pixel(browser, "axial", x, y) == FN
    assert pixel(browser, "axial", *browser.execute_script(to_canvas, "axial", [8, 10, 5])) == (0, 0, 0)  # air
    browser.execute_script("window.radseg.state.cursor = [13, 9, 5]; drawAll();")
    assert pixel(browser, "axial", *browser.execute_script(to_canvas, "axial", [14, 10, 5])) == FP
    # radiological convention: RAS x (index i here) grows towards the patient's right, drawn further left
    fn_x = browser.execute_script(to_canvas, "axial", [3, 3, 5])[0]
    fp_x = browser.execute_script(to_canvas, "axial", [13, 3, 5])[0]
    assert fp_x < fn_x
    edges = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".view[data-plane=axial] .edge")]
    assert edges == ["R", "L", "A", "P"]


def test_jump_to_the_next_error_visits_the_largest_wrong_component_first(tmp_path, browser):
    _disagreement_case(tmp_path)
    review_folder(tmp_path / "pred", tmp_path / "review", truth=tmp_path / "truth", images=tmp_path / "images",
                  progress=False)
    open_page(browser, (tmp_path / "review" / "case.html").as_uri() + "#case")
    browser.find_element(By.ID, "next-error").click()
    target = [int(v) for v in browser.execute_script("return document.body.dataset.errorTarget").split(",")]
    assert 12 <= target[0] < 16 and 8 <= target[1] < 12 and 3 <= target[2] < 7  # inside the false positive
    assert browser.execute_script("return document.body.dataset.cursor") == ",".join(map(str, target))
    assert "FP" in browser.find_element(By.ID, "error-status").text
    browser.find_element(By.ID, "next-error").click()
    target = [int(v) for v in browser.execute_script("return document.body.dataset.errorTarget").split(",")]
    assert 2 <= target[0] < 5 and 2 <= target[1] < 5 and 4 <= target[2] < 7  # then the false negative


@pytest.mark.parametrize("affine", [
    np.array([[-1.5, 0, 0, 40], [0, -1.2, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]]),  # LPS-stored (flipped)
    np.array([[0, 0, 2.0, 1], [-1.0, 0, 0, 2], [0, -1.5, 0, 3], [0, 0, 0, 1]]),  # permuted and flipped
    OBLIQUE,
], ids=["flipped", "permuted", "oblique"])
def test_a_marker_at_a_known_world_coordinate_is_under_the_pointer_s_mm_read_out(tmp_path, browser, affine):
    shape, marker = (9, 8, 7), (6, 2, 5)
    image, pred = np.zeros(shape, np.int16), np.zeros(shape, np.uint8)
    image[marker], pred[marker] = 1000, 1
    save(tmp_path / "images" / "case.nii.gz", image, affine)
    save(tmp_path / "pred" / "case.nii.gz", pred, affine)
    review_folder(tmp_path / "pred", tmp_path / "review", images=tmp_path / "images", progress=False)
    open_page(browser, (tmp_path / "review" / "case.html").as_uri() + "#case")
    set_control(browser, "opacity", "1")
    found = browser.execute_script(FIND_COLOUR_JS, "axial", [46, 204, 64])  # the marker, drawn in class 1's colour
    assert found is not None, "the marker is drawn nowhere in the axial view"
    readout = _hover(browser, "axial", found[1], found[2])
    world = affine @ [*marker, 1.0]
    assert np.allclose([float(v) for v in readout["world"].split(",")], world[:3], atol=1e-6)
    assert float(readout["value"]) == 1000 and readout["voxel"] == ",".join(map(str, marker))


def test_dicom_geometry_the_mm_read_out_matches_simpleitk_s_point_of_a_mask_voxel(tmp_path, browser):
    from conftest import real_data

    series = real_data("dcmqi_ct3slice", "ct-3slice")
    (case,) = find_cases([series])
    scan = sitk.ReadImage(str(real_data("dcmqi_ct3slice", "liver_seg.nrrd")))
    mask = np.zeros(sitk.GetArrayFromImage(scan).T.shape, np.uint8)
    marker = (300, 200, 1)
    mask[marker] = 1
    (tmp_path / "pred").mkdir()
    out = sitk.GetImageFromArray(mask.T)
    out.CopyInformation(scan)
    sitk.WriteImage(out, str(tmp_path / "pred" / f"{case.name}.nii.gz"))
    review_folder(tmp_path / "pred", tmp_path / "review", images=series, progress=False)
    open_page(browser, (tmp_path / "review" / "case.html").as_uri() + "#" + case.name)
    set_control(browser, "opacity", "1")
    found = browser.execute_script(FIND_COLOUR_JS, "axial", [46, 204, 64])
    assert found is not None
    ras = [float(v) for v in _hover(browser, "axial", found[1], found[2])["world"].split(",")]
    lps = scan.TransformIndexToPhysicalPoint(marker)
    assert np.allclose([-ras[0], -ras[1], ras[2]], lps, atol=1e-3)


def test_serve_gives_the_same_pages_on_a_printed_port(tmp_path, browser):
    root = write_cases(tmp_path, dice_order=(2, 0))
    command = [sys.executable, "-m", "radseg", "review", "--pred", str(root / "pred"), "--truth", str(root / "truth"),
               "--images", str(root / "images"), "--output", str(tmp_path / "review"), "--serve"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        while "http://" not in line:
            line = server.stdout.readline()
            assert line, "radseg review --serve ended without printing its address"
        url = line.split(" on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/index.html")
        open_page(browser, url)
        assert [r.get_attribute("data-page") for r in browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")] == \
            ["case_0", "case_1"]
        open_page(browser, url.replace("index.html", "case.html#case_0"))
        set_control(browser, "mode", "disagreement")
        set_control(browser, "opacity", "1")
        found = browser.execute_script(FIND_COLOUR_JS, "axial", list(FN))
        assert found is not None  # case_0 misses 4 rows of the truth
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_window_presets_and_a_manual_level_width_set_the_grey_of_air(tmp_path, browser):
    _disagreement_case(tmp_path)  # the scan is air, -1000 HU, everywhere
    review_folder(tmp_path / "pred", tmp_path / "review", truth=tmp_path / "truth", images=tmp_path / "images",
                  progress=False)
    open_page(browser, (tmp_path / "review" / "case.html").as_uri() + "#case")
    set_control(browser, "mode", "none")
    browser.execute_script("window.radseg.state.cursor = [0, 0, 0]; drawAll();")
    where = browser.execute_script("return window.radseg.voxelToCanvas('axial', [10, 8, 0])")
    greys = {}
    for preset in ("abdomen", "lung"):
        set_control(browser, "preset", preset)
        greys[preset] = pixel(browser, "axial", *where)
    set_control(browser, "level", "-1000")
    set_control(browser, "width", "1000")
    assert greys == {"abdomen": (0, 0, 0), "lung": (60, 60, 60)}  # lung: L -600, W 1500: (350 / 1500) * 255
    assert pixel(browser, "axial", *where) == (128, 128, 128)  # -1000 is the centre of a manual window at -1000
    assert browser.find_element(By.ID, "preset").get_attribute("value") == "manual"


def test_a_probability_map_beside_the_prediction_is_shown_as_heat(tmp_path, browser):
    _disagreement_case(tmp_path)
    probability = np.zeros((2, 20, 16, 10), np.float32)
    probability[1, 12:16, 8:12, 3:7] = 1.0
    probability[0] = 1.0 - probability[1]
    np.savez(tmp_path / "pred" / "case_probabilities.npz", probabilities=probability, affine=AFFINE)
    review_folder(tmp_path / "pred", tmp_path / "review", truth=tmp_path / "truth", images=tmp_path / "images",
                  progress=False)
    open_page(browser, (tmp_path / "review" / "case.html").as_uri() + "#case")
    assert browser.find_element(By.ID, "probability-toggle").is_displayed()
    for control, value in (("mode", "none"), ("opacity", "1"), ("probability", True)):
        set_control(browser, control, value)
    browser.execute_script("window.radseg.state.cursor = [0, 0, 5]; drawAll();")
    to_canvas = "return window.radseg.voxelToCanvas('axial', arguments[0])"
    assert pixel(browser, "axial", *browser.execute_script(to_canvas, [14, 10, 5])) == (255, 255, 0)  # p = 1
    assert pixel(browser, "axial", *browser.execute_script(to_canvas, [5, 10, 5])) == (0, 0, 0)  # p = 0: the scan


def test_without_truth_the_index_shows_volumes_and_the_case_page_works(tmp_path, browser):
    root = write_cases(tmp_path, dice_order=(2, 0))
    review_folder(root / "pred", tmp_path / "review", images=root / "images", labels="1=liver", progress=False)
    open_page(browser, (tmp_path / "review" / "index.html").as_uri())
    titles = [th.text.replace("\n", " ") for th in browser.find_elements(By.CSS_SELECTOR, "#cases th")]
    assert titles == ["case", "liver vol. pred", "liver lesions pred", "error regions"]
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr:first-child td")]
    assert cells == ["case_0", f"{128 * 1.5 * 1.2 * 3.0 / 1000:.3f}", "1", "–"]  # case_0 misses 4 of 8 rows
    browser.find_element(By.CSS_SELECTOR, "#cases tbody tr").click()
    open_page(browser, browser.current_url)
    assert not browser.find_element(By.ID, "next-error").is_displayed()
    assert "liver: 0.691 mL predicted" in browser.find_element(By.ID, "scores").text
