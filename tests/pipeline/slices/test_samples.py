"""Slice stacks and slice labels: known answers on hand-counted masks, through the real chain."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from radseg import keys
from radseg.configs import load_config
from radseg.errors import ConfigError, DataError
from radseg.pipeline.slices.samples import (
    build_slice_transforms, class_balance, resolve_label_values, to_slice_case, user_errors,
)
from radseg.pipeline.slices.sampling import SliceSamples, build_slice_loader, sample_weights
from radseg.transforms.fingerprint import ResolvedPreprocess
from radseg.transforms.slices import slice_presence, with_context

#: liver (1) and tumour (2) voxels per axial slice, counted by hand; voxels are 2 x 2 mm in-plane
LIVER_VOXELS = [0, 3, 5, 4, 25, 0]
TUMOUR_VOXELS = [0, 0, 0, 1, 2, 0]


def _hand_counted_label() -> np.ndarray:
    label = np.zeros((10, 8, 6), np.uint8)
    for z, (liver, tumour) in enumerate(zip(LIVER_VOXELS, TUMOUR_VOXELS)):
        flat = label[:, :, z].reshape(-1)
        flat[:liver] = 1
        flat[liver - tumour:liver] = 2  # tumour voxels are inside the liver count
        label[:, :, z] = flat.reshape(10, 8)
    return label


def test_slice_presence_against_hand_counts():
    label = _hand_counted_label()
    # areas 0, 12, 20, 16, 100, 0 mm^2: liver (with tumour) present from 20 mm^2
    assert slice_presence(label, [1, 2], 4.0, 20.0).tolist() == [0, 0, 1, 0, 1, 0]
    assert slice_presence(label, [2], 4.0, 0.0).tolist() == [0, 0, 0, 1, 1, 0]
    assert slice_presence(label, [2], 4.0, 8.0).tolist() == [0, 0, 0, 0, 1, 0]


def _write_case(tmp_path, orientation: str):
    """A 2 x 2 x 3 mm scan and its hand-counted label, stored in ``orientation`` (z always S)."""
    label = _hand_counted_label()
    image = np.where(label > 0, 60, 0).astype(np.int16)
    flips = [axis for axis, code in enumerate(orientation[:2]) if code in "LP"]
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    for axis in flips:
        affine[axis, axis] = -2.0
        affine[axis, 3] = 2.0 * (label.shape[axis] - 1)
    paths = {}
    for name, array in (("image", image), ("label", label)):
        paths[name] = tmp_path / f"{name}_{orientation}.nii.gz"
        nib.save(nib.Nifti1Image(np.flip(array, flips).copy() if flips else array, affine), paths[name])
    return paths


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_chain_labels_slices_as_counted_in_any_orientation(tmp_path, orientation):
    paths = _write_case(tmp_path, orientation)
    cfg = load_config("slices", ["train.roi_size=[16,16]", "slices.min_liver_area_mm2=20"])
    resolved = ResolvedPreprocess("CT", (2.0, 2.0, 3.0), (-100.0, 200.0), "window", crop_foreground=False)
    transform = build_slice_transforms(resolved, cfg, ([1, 2], [2]))
    case = to_slice_case(transform({keys.IMAGE: str(paths["image"]), keys.LABEL: str(paths["label"]),
                                    keys.CASE_ID: "c0"}))
    assert tuple(case.image.shape) == (6, 1, 16, 16)
    assert case.liver.tolist() == [0, 0, 1, 0, 1, 0]
    assert case.lesion.tolist() == [0, 0, 0, 1, 1, 0]
    np.testing.assert_allclose(np.diff(case.z_mm), 3.0)
    # the brightest slice of the stack is the one with the most liver (z = 4)
    assert int(case.image.float().mean(dim=(1, 2, 3)).argmax()) == 4
    assert "liver   present in 2 slices, absent in 4 (33.3% positive)" in class_balance([case], "t")


def test_a_scan_thinner_than_the_context_is_refused(tmp_path):
    paths = _write_case(tmp_path, "RAS")
    cfg = load_config("slices", ["train.roi_size=[16,16]", "slices.context_slices=7"])
    resolved = ResolvedPreprocess("CT", (2.0, 2.0, 3.0), (-100.0, 200.0), "window", crop_foreground=False)
    transform = build_slice_transforms(resolved, cfg, ([1, 2], [2]))
    with pytest.raises(DataError, match=r"case thin .* has 6 axial slice\(s\) after preprocessing but "
                                        r"slices.context_slices=7 needs at least 7; fix: set slices.context_slices=1"):
        with user_errors():
            transform({keys.IMAGE: str(paths["image"]), keys.LABEL: str(paths["label"]), keys.CASE_ID: "thin"})


def test_context_slices_repeat_the_edges():
    stack = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 2, 3, 3)
    out = with_context(stack, [0, 2, 4], 3)
    assert tuple(out.shape) == (3, 6, 3, 3)
    assert out[:, ::2, 0, 0].tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]


def test_label_values_from_names_and_the_missing_liver_error():
    cfg = load_config("slices")
    assert resolve_label_values({0: "background", 1: "liver", 2: "tumour"}, cfg.slices) == ([1, 2], [2])
    with pytest.raises(ConfigError, match=r"declares only \{0: background, 1: spleen\}; expected a label named "
                                          r"'liver' .* slices.liver_labels"):
        resolve_label_values({0: "background", 1: "spleen"}, cfg.slices)
    cfg = load_config("slices", ["slices.liver_labels=[5]", "slices.target=lesion"])
    with pytest.raises(ConfigError, match="slices.target=lesion needs a lesion label"):
        resolve_label_values({0: "background", 5: "liver"}, cfg.slices)


def test_balanced_sampler_draws_both_classes_equally(tmp_path):
    from radseg.pipeline.slices.samples import SliceCase

    labels = np.array([1] * 90 + [0] * 10, np.uint8)
    case = SliceCase("c", torch.zeros(100, 1, 4, 4), np.arange(100.0), labels, labels)
    samples = SliceSamples([case], "liver", context=1)
    weights = sample_weights(samples.labels, balanced=True)
    assert float(weights[labels == 1].sum()) == pytest.approx(float(weights[labels == 0].sum()))
    drawn = torch.cat([b[keys.LABEL] for b in build_slice_loader(samples, 100, 4000, True, seed=0)])
    assert 0.45 < float(drawn.float().mean()) < 0.55
    drawn = torch.cat([b[keys.LABEL] for b in build_slice_loader(samples, 100, 4000, False, seed=0)])
    assert float(drawn.float().mean()) > 0.85
    windows = SliceSamples([case], "liver", context=3, sequence_length=8)
    item = windows[99]
    assert tuple(item[keys.IMAGE].shape) == (8, 3, 4, 4) and item[keys.LABEL].tolist() == [0] * 8


def test_slice_settings_and_networks_are_checked_at_load():
    from radseg.pipeline.slices.fit import check_slice_network

    with pytest.raises(ConfigError, match="slices.context_slices must be an odd number >= 1, not 2"):
        load_config("slices", ["slices.context_slices=2"])
    with pytest.raises(ConfigError, match=r"slices.threshold must be 'auto' or in \(0, 1\), not 1.5"):
        load_config("slices", ["slices.threshold=1.5"])
    with pytest.raises(ConfigError, match="'unet3d' is a 3D segmentation network, but radseg slices trains 2D slice "
                                          "classifiers; set network.name to one of simple_cnn2d, cnn_rnn2d"):
        check_slice_network(load_config("demo"))
    check_slice_network(load_config("slices", ["network.name=monai_densenet121", "network.params={}"]))
