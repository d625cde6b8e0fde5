"""How long does a 512x512x800 CT take to open in ``radseg review``, and how big is its review folder?

Writes one synthetic case (0.8 x 0.8 x 1.0 mm, int16 HU with noise, an LPS-stored grid as DICOM
conversions give; truth: liver and a tumour; prediction: a shifted liver, a missed tumour, a
spurious blob), runs :func:`radseg.pipeline.review.review_folder` on it, and opens the case page in
headless Chromium (selenium + Debian's chromium-driver) from ``file://``, timing until the page says
it has drawn all three views (``data-ready``). Prints one table:

- write s: ``review_folder`` for the case (reading the NIfTI files, scores, encoding, writing);
- folder MB/case: the case's script (the volumes, each stored once, compressed), and the inputs'
  size on disk for comparison;
- open s: from navigation start to the first complete render (the page's own ``performance.now()``),
  best and median of ``--repeats`` loads, each in a fresh page.

Run: ``python benchmarks/review_open.py`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from radseg.pipeline.predict.runtime_cache import cpu_description
from radseg.pipeline.review import review_folder

SHAPE, SPACING = (512, 512, 800), (0.8, 0.8, 1.0)


def _case(folder: Path, seed: int = 0) -> None:
    """Image, truth and prediction NIfTI files of one synthetic CT (.nii.gz, ISA-L level 1 as radseg writes)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    grid = np.ogrid[: SHAPE[0], : SHAPE[1]]
    body = ((grid[0] - 256) / 230.0) ** 2 + ((grid[1] - 256) / 180.0) ** 2 <= 1
    liver_disc = ((grid[0] - 180) / 90.0) ** 2 + ((grid[1] - 230) / 70.0) ** 2 <= 1
    image = np.empty(SHAPE, np.int16)
    truth = np.zeros(SHAPE, np.uint8)
    for z in range(SHAPE[2]):  # slice by slice: the float noise of a whole volume would take 1.7 GB
        image[:, :, z] = np.where(body, 40, -1000) + rng.normal(0, 12, SHAPE[:2]).astype(np.int16)
        if 250 <= z < 550:
            truth[:, :, z][liver_disc] = 1
    truth[160:180, 220:240, 380:400] = 2
    image[truth == 1] += 20
    pred = np.roll(truth == 1, 4, axis=0).astype(np.uint8)
    pred[300:320, 300:330, 420:440] = 1
    for name, array in (("images", image), ("truth", truth), ("pred", pred)):
        (folder / name).mkdir()
        nib.save(nib.Nifti1Image(array, affine), folder / name / "ct.nii.gz")


def _open_times(url: str, repeats: int, profile: Path) -> list[tuple[float, float, float]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,1100", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    times = []
    try:
        for _ in range(repeats):
            driver.get("about:blank")
            driver.get(url)
            while not driver.execute_script("return document.body.dataset.ready || document.body.dataset.error"):
                time.sleep(0.02)
            assert driver.execute_script("return document.body.dataset.ready"), "the page failed to draw"
            times.append(driver.execute_script(
                "const at = (n) => performance.getEntriesByName(n)[0].startTime / 1000;"
                "return [window.radsegReadyMs / 1000, at('radseg-case-script-loaded'), at('radseg-decoded')]"))
    finally:
        driver.quit()
    return times


def _mb(paths) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="page loads timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        _case(root)
        made = time.perf_counter() - start
        start = time.perf_counter()
        result = review_folder(root / "pred", root / "review", truth=root / "truth", images=root / "images",
                               labels="1=liver,2=tumour", progress=False)
        write = time.perf_counter() - start
        case_mb = _mb((root / "review" / "cases").iterdir())
        input_mb = _mb(p for name in ("images", "truth", "pred") for p in (root / name).iterdir())
        times = _open_times((root / "review" / "case.html").as_uri() + "#ct", args.repeats, root / "chromium")
    print(f"CPU: {cpu_description()}; synthetic case made in {made:.0f} s")
    print(f"{'case':<22}{'shown as':>14}{'write s':>9}{'case MB':>9}{'inputs MB':>11}{'open s best':>13}"
          f"{'median':>8}{'script':>8}{'decode':>8}{'draw':>6}")
    shown = "x".join(str((n + 1) // 2) for n in SHAPE) if result.downsampled else "x".join(map(str, SHAPE))
    best = min(times)
    print(f"{'x'.join(map(str, SHAPE)) + ' int16':<22}{shown:>14}{write:>9.1f}{case_mb:>9.1f}{input_mb:>11.1f}"
          f"{best[0]:>13.2f}{statistics.median(t[0] for t in times):>8.2f}{best[1]:>8.2f}{best[2] - best[1]:>8.2f}"
          f"{best[0] - best[2]:>6.2f}")
    print("open s: navigation start to all three views drawn; of the best load: script = until the case's "
          "script has run, decode = base64 + inflate, draw = the first render")



if __name__ == "__main__":
    main()
