"""Helpers of the review tests: tiny generated cases, and headless Chromium driven by selenium.

The browser tests skip, with the reason, where Chromium, its driver or selenium is absent
(``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

#: the canvas read-back and search every pixel test uses: find the slice and pixel of an RGB colour in a plane
FIND_COLOUR_JS = """
const [plane, rgb] = arguments, axis = PLANES[plane].fixed, state = window.radseg.state;
const canvas = document.querySelector(`.view[data-plane=${plane}] canvas`);
for (let s = 0; s < state.vol.n[axis]; s++) {
  state.cursor[axis] = s; drawAll();
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  for (let q = 0; q < data.length; q += 4) {
    if (Math.abs(data[q] - rgb[0]) + Math.abs(data[q + 1] - rgb[1]) + Math.abs(data[q + 2] - rgb[2]) <= 3) {
      return [s, (q / 4) % canvas.width, Math.floor(q / 4 / canvas.width)];
    }
  }
}
return null;
"""


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("headless Chromium and its driver are absent (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    return browser, driver


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium (selenium WebDriver), one per test session, its profile in pytest's temporary folder."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is absent (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,1100", "--force-device-scale-factor=1",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def open_page(driver, url: str, timeout_s: float = 30.0) -> None:
    """Load ``url`` and wait until the page says it has drawn (``data-ready``), failing on its error."""
    driver.get("about:blank")  # a new document even when only the '#' changes
    driver.get(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, error = driver.execute_script("return [document.body.dataset.ready, document.body.dataset.error]")
        assert error is None, f"{url}: {error}"
        if ready:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not finish drawing in {timeout_s} s; browser log: {driver.get_log('browser')}")


def pixel(driver, plane: str, x: float, y: float) -> tuple[int, int, int]:
    """The RGB drawn at canvas pixel (x, y) of a plane (canvas read-back)."""
    return tuple(driver.execute_script(
        "const c = document.querySelector(`.view[data-plane=${arguments[0]}] canvas`);"
        "return Array.from(c.getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data).slice(0, 3);",
        plane, int(x), int(y)))


def set_control(driver, element_id: str, value) -> None:
    """Set a control as a user would (its value, then the events the page listens to)."""
    driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "if (e.type === 'checkbox') e.checked = arguments[1]; else e.value = arguments[1];"
        "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change'));", element_id, value)


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a NIfTI file (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path
