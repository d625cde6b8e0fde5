"""Shared fixtures: the real scans beside the project and a small generated phantom dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

#: real CT/MR scans kept beside the project (absent in a user's fresh clone: tests skip)
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def real_data(*parts: str) -> Path:
    """Path under ../shared/data/real, or skip the test with the reason."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real scan {path} is absent (it lives in ../shared/data/real beside the project)")
    return path


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """A 4-case phantom dataset (MSD layout), generated once per test session. Do not modify."""
    from radseg.pipeline.data.phantom import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("phantom") / "data", num_cases=4, seed=7)


#: overrides on the demo preset for a training run of seconds on CPU: 6 mm voxels, 32x32x16
#: patches, a 3-level U-Net of 4-16 channels, validation every epoch
TINY_TRAIN = (
    "train.roi_size=[32,32,16]", "train.iterations_per_epoch=2", "train.batch_size=1", "train.device=cpu",
    "augment.num_samples=1", "preprocess.target_spacing=[6,6,6]", "network.params.widths=[4,8,16]",
    "cache.num_workers=0", "inference.overlap=0", "inference.sw_batch_size=4", "data.num_folds=2",
    "train.val_interval=1",
)
