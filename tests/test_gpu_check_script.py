"""benchmarks/gpu_check.sh --dry-run: runs anywhere, needs no GPU, prints its commands and the table header."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_the_steps_and_the_header_and_exits_0(tmp_path):
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                                       "GPU_CHECK_WORK": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("row"))
    assert header.split()[:4] == ["row", "cases", "s/case", "read"] and "GPU peak GB" in header
    for step in ("radseg phantom --profile chest-pelvis", "radseg train", "--budget 5m --device cuda",
                 "gpu_check.py --run", "infer_speed.py --device cuda"):
        assert step in done.stderr, step
    assert not any(tmp_path.iterdir())  # nothing ran


def test_gpu_check_refuses_unknown_arguments():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--fast"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
