"""Run ``python -m monai.bundle run`` in a process where radseg cannot be imported, and score masks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

#: blocks every ``import radseg`` in the child, then runs MONAI's bundle CLI as ``python -m`` would
_PRELUDE = ("import runpy, sys; sys.modules['radseg'] = None; sys.argv = ['monai.bundle'] + sys.argv[1:]; "
            "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)")


def run_monai_bundle(config_file: Path, bundle_root: Path, dataset_dir: Path, output_dir: Path,
                     *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` with the zoo's keys; radseg imports fail inside it."""
    import pytest

    pytest.importorskip("fire", reason="python -m monai.bundle needs fire: pip install 'radseg[test]'")
    command = [sys.executable, "-c", _PRELUDE, "run", "--config_file", str(config_file),
               "--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir),
               "--output_dir", str(output_dir), *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=bundle_root)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def dice_per_label(a: np.ndarray, b: np.ndarray, labels) -> dict[int, float]:
    """Dice of each label value between two label maps (1.0 where both lack it)."""
    scores = {}
    for value in labels:
        x, y = a == value, b == value
        total = int(x.sum() + y.sum())
        scores[value] = 1.0 if total == 0 else 2.0 * float((x & y).sum()) / total
    return scores


def compare_masks(ours: Path, theirs: Path, labels) -> tuple[dict[int, float], int]:
    """Per-label Dice and the number of voxels that differ; the two masks must share a grid."""
    a, b = nib.load(ours), nib.load(theirs)
    assert a.shape == b.shape[:3], (a.shape, b.shape)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)
    x, y = np.asarray(a.dataobj).astype(np.int64), np.asarray(b.dataobj).astype(np.int64).reshape(a.shape)
    return dice_per_label(x, y, labels), int((x != y).sum())
