"""Decathlon multi-modal cases (one 4D NIfTI per case, channels last): check-data, cache, fingerprint,
per-channel normalisation and a short training with the channels as the network's input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radseg import keys
from radseg.configs.loader import load_config
from radseg.pipeline.data.cache_keys import CASE_OVERHEAD_BYTES, estimate_case_bytes
from radseg.pipeline.data.check_data import check_dataset
from radseg.pipeline.data.datalist import discover_dataset, to_datalist
from radseg.transforms.fingerprint import compute_fingerprint, resolve_preprocess
from radseg.transforms.io import read_header
from radseg.transforms.preprocess import build_preprocess_transforms
from conftest import TINY_TRAIN


def test_a_4d_header_is_3d_with_channels(multichannel_dataset):
    header = read_header(multichannel_dataset / "imagesTr" / "prostate_00.nii.gz")
    assert header.shape == (40, 40, 20) and header.spacing == (1.5, 1.5, 3.0)
    assert header.num_components == 2 and np.asarray(header.direction).shape == (3, 3)
    assert header.ras_axes() == [0, 1, 2]


def test_check_data_accepts_4d_images_with_3d_labels(multichannel_dataset):
    report = check_dataset(multichannel_dataset)
    assert report.ok and report.lines() == [], report.lines()


def test_fingerprint_and_normalisation_per_channel(multichannel_dataset):
    spec = discover_dataset(multichannel_dataset)
    assert spec.modality == "MRI" and spec.channel_names == ["T2", "ADC"]
    datalist = to_datalist(spec.training)
    fingerprint = compute_fingerprint(datalist, spec.modality, progress=False)
    assert fingerprint.num_channels == 2 and fingerprint.spacings[0] == [1.5, 1.5, 3.0]
    t2, adc = fingerprint.channel_stats
    assert 400 < t2["mean"] < 600 and 700 < adc["mean"] < 900  # foreground: 500 and 800 by design
    cfg = load_config("demo", ["preprocess.target_spacing=[3,3,3]"])
    resolved = resolve_preprocess(cfg.preprocess, fingerprint, spec.modality)
    item = build_preprocess_transforms(resolved, image_dtype="float32")(datalist[0])
    image = item[keys.IMAGE]
    assert tuple(image.shape[:1]) == (2,) and tuple(item[keys.LABEL].shape[:1]) == (1,)
    for channel in image:  # z-scored channel by channel over the body (non-zero voxels)
        body = channel[channel != 0]
        assert abs(float(body.mean())) < 0.05 and abs(float(body.std()) - 1) < 0.05
    cached = image.element_size() * image.nelement() + item[keys.LABEL].nelement()
    assert cached <= estimate_case_bytes(datalist[0], resolved.target_spacing, 4)


def test_cache_and_short_training_take_both_channels(multichannel_dataset, tmp_path):
    from radseg.pipeline.core.checkpoint import load_checkpoint
    from radseg.pipeline.data.fill_cache import build_cache_for_dataset
    from radseg.pipeline.train.fit import fit

    cfg = load_config("demo", [*TINY_TRAIN, "train.max_epochs=1", "data.modality=auto", f"cache.cache_dir={tmp_path / 'cache'}"])
    summary = build_cache_for_dataset(multichannel_dataset, cfg)
    assert summary.cached_cases == 4 and summary.modality == "MRI"
    item = to_datalist(discover_dataset(multichannel_dataset).training)[0]
    # two float16 channels and a uint8 label per voxel: 5 bytes
    assert estimate_case_bytes(item, None, 2) == 40 * 40 * 20 * 5 + CASE_OVERHEAD_BYTES
    result = fit(cfg, multichannel_dataset, tmp_path / "run", progress=False)
    assert result.epochs == 1
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["in_channels"] == 2 and last["fingerprint"]["num_channels"] == 2
    first = next(p for name, p in last["model"].items() if p.ndim == 5)
    assert first.shape[1] == 2, "the network's first convolution takes the two MR channels"
    assert torch.isfinite(first).all()
