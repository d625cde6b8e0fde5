"""Shared fixtures: the real scans beside the project and a small generated phantom dataset."""

from __future__ import annotations

import sys
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


@pytest.fixture(autouse=True)
def _once_per_process_messages_afresh():
    """Messages radseg logs once per process (dataset found, patch below the receptive field) are
    logged afresh in every test, whatever ran before it."""
    for module, name in (("radseg.networks.registry", "_RECEPTIVE_FIELD_WARNED"),
                         ("radseg.pipeline.data.datalist", "_ANNOUNCED")):
        if module in sys.modules:
            getattr(sys.modules[module], name).clear()


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


def write_multichannel_msd(root: Path, num_cases: int = 4, shape=(40, 40, 20), seed: int = 0) -> Path:
    """A Decathlon multi-modal dataset (Task05 Prostate's layout): each case one 4D NIfTI of two MR
    channels (T2, ADC on very different scales) on the last axis, and a 3D label."""
    import json

    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])  # LPS-stored like the Decathlon's NIfTI files
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training = []
    for index in range(num_cases):
        centre = np.asarray(shape) / 2 + rng.integers(-3, 4, size=3)
        inside = (((grid - centre) / np.asarray([8, 8, 4])) ** 2).sum(axis=-1) <= 1
        body = (((grid - np.asarray(shape) / 2) / (np.asarray(shape) / 2.2)) ** 2).sum(axis=-1) <= 1
        t2 = body * (200.0 + 20 * rng.standard_normal(shape)) + inside * 300.0
        adc = body * (1500.0 + 100 * rng.standard_normal(shape)) - inside * 700.0
        name = f"prostate_{index:02d}.nii.gz"
        image = np.stack([t2, adc], axis=-1).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(inside.astype(np.uint8), affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "Prostate4D", "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "prostate"}, "numTraining": num_cases,
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


@pytest.fixture(scope="session")
def multichannel_dataset(tmp_path_factory) -> Path:
    """A 4-case MSD dataset of 40x40x20x2 MR images (4D NIfTI) and 3D labels. Do not modify."""
    return write_multichannel_msd(tmp_path_factory.mktemp("msd4d") / "data")
