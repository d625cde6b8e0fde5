"""The sliding-window predictor: known answers on odd shapes, windows larger than the volume."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from radseg.configs.schema import InferenceConfig
from radseg.errors import ConfigError
from radseg.pipeline.predict.inference import (
    SlidingWindowPredictor,
    contiguous_weights,
    full_resolution_output,
    resolve_amp,
    sliding_window_predict,
    use_channels_last,
)


class _PlusOne(torch.nn.Module):
    """Identity plus one, with a parameter so the predictor can find its device."""

    def __init__(self, heads: int = 1) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.heads = heads

    def forward(self, x: torch.Tensor):
        out = x + 1 + self.dummy
        return [out] + [out[:, :, ::2, ::2, ::2]] * (self.heads - 1) if self.heads > 1 else out


def _image(shape=(1, 2, 37, 29, 19)) -> torch.Tensor:
    """Integer-valued intensities, so constant blending (k equal values / k) is exact in float32."""
    return torch.randint(-1000, 1000, shape, generator=torch.Generator().manual_seed(0)).float()


@pytest.mark.parametrize("blend_mode", ["constant", "gaussian"])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.7])
def test_identity_plus_one_on_odd_shapes(blend_mode, overlap):
    image = _image()
    cfg = InferenceConfig(blend_mode=blend_mode, overlap=overlap, sw_batch_size=3)
    out = sliding_window_predict(_PlusOne(), image, cfg, [16, 12, 8])
    assert out.shape == image.shape
    assert out.dtype == torch.float32
    if blend_mode == "constant":
        assert torch.equal(out, image + 1)
    else:
        # Gaussian weights differ per voxel: sum(w * v) / sum(w) is v up to float32 rounding
        torch.testing.assert_close(out, image + 1, rtol=1e-5, atol=0)


def test_window_larger_than_volume():
    image = _image((2, 1, 11, 7, 5))
    out = sliding_window_predict(_PlusOne(), image, InferenceConfig(blend_mode="constant"), [32, 32, 16])
    assert out.shape == image.shape
    assert torch.equal(out, image + 1)


def test_mirroring_keeps_known_answer_and_deep_supervision_takes_full_resolution():
    image = _image((1, 1, 13, 10, 9))
    cfg = InferenceConfig(mirror=True, roi_size=[8, 8, 8])
    out = sliding_window_predict(_PlusOne(heads=3), image, cfg, None)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image + 1, rtol=1e-5, atol=0)


def test_mirroring_averages_flips():
    """A position-dependent model: mirrored TTA is the mean over the 8 flip combinations."""

    class _Ramp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            ramp = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)
            return x * 0 + ramp + self.w

    image = torch.zeros(1, 1, 6, 4, 4)
    cfg = InferenceConfig(mirror=True, roi_size=[6, 4, 4], overlap=0.0)
    out = sliding_window_predict(_Ramp(), image, cfg)
    # flips along x average ramp and reversed ramp: (i + (5 - i)) / 2 = 2.5 everywhere
    torch.testing.assert_close(out, torch.full_like(image, 2.5))


def test_softmax_and_predictor_class_restore_training_mode():
    net = _PlusOne()
    net.train()
    predictor = SlidingWindowPredictor(net, InferenceConfig(), [8, 8, 8])
    probs = predictor(_image((1, 3, 9, 9, 9)), softmax=True)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 9, 9, 9))
    assert net.training


def test_missing_or_mismatched_window_is_a_config_error():
    with pytest.raises(ConfigError, match="inference.roi_size"):
        sliding_window_predict(_PlusOne(), _image(), InferenceConfig(), None)
    with pytest.raises(ConfigError, match="one size per spatial axis"):
        sliding_window_predict(_PlusOne(), _image(), InferenceConfig(), [8, 8])


def test_helpers():
    assert resolve_amp("bf16", "cpu") is torch.bfloat16  # opt-in on CPU
    assert resolve_amp("auto", "cpu") is None
    assert resolve_amp("fp16", "cpu") is None
    assert resolve_amp("none", "cpu") is None
    t = torch.zeros(1)
    assert full_resolution_output([t, torch.ones(1)]) is t
    assert full_resolution_output(t) is t


def test_channels_last_follows_the_setting_on_cuda_and_the_measurement_on_cpu():
    from radseg.pipeline.core.memory_format import CPU_CHANNELS_LAST

    assert use_channels_last(True, "cuda", 3) is True
    assert use_channels_last(False, "cuda", 3) is False
    assert use_channels_last(True, "cuda", 2) is False
    onednn = torch.backends.mkldnn.is_available()
    assert use_channels_last(True, "cpu", 3) is (CPU_CHANNELS_LAST["infer"] and onednn)
    assert use_channels_last(True, "cpu", 3, training=True) is (CPU_CHANNELS_LAST["train"] and onednn)
    assert use_channels_last(False, "cpu", 3, training=True) is False
    assert use_channels_last(True, "cpu", 2, training=True) is False


def test_contiguous_weights_switch_the_layout_and_back_keeping_the_parameters():
    network = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.Conv3d(4, 2, 1)).to(
        memory_format=torch.channels_last_3d)
    params = list(network.parameters())
    before = [p.detach().clone() for p in params]
    assert not params[0].is_contiguous()
    with contiguous_weights(network) as inside:
        assert inside is network
        assert all(p.is_contiguous() for p in network.parameters())
    assert [p is q for p, q in zip(network.parameters(), params)] == [True] * len(params)
    assert params[0].is_contiguous(memory_format=torch.channels_last_3d) and not params[0].is_contiguous()
    for p, q in zip(network.parameters(), before):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    plain = torch.nn.Conv3d(1, 1, 3)
    with contiguous_weights(plain):  # already contiguous: left alone
        assert plain.weight.is_contiguous()
    assert plain.weight.is_contiguous()


def test_channels_last_windows_give_the_same_prediction():
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    image = torch.randn(1, 1, 20, 18, 9)
    cfg = InferenceConfig(roi_size=[8, 8, 8], overlap=0.25)
    plain = sliding_window_predict(network, image, cfg)
    last = sliding_window_predict(network.to(memory_format=torch.channels_last_3d), image, cfg, channels_last=True)
    torch.testing.assert_close(last, plain)

def test_windows_outside_the_body_are_skipped_and_body_voxels_keep_the_known_answer(caplog):
    image = _image((1, 1, 40, 33, 21))
    body = torch.zeros(40, 33, 21, dtype=torch.bool)
    body[2:9, 3:8, 1:6] = True  # a small body in one corner: most windows hold none of it
    cfg = InferenceConfig(blend_mode="constant", overlap=0.0, sw_batch_size=3)
    calls = []

    class _Counting(_PlusOne):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    with caplog.at_level("INFO", logger="radseg.pipeline.predict.inference"):
        out = sliding_window_predict(_Counting(), image, cfg, [10, 10, 7], body_mask=body)
    assert sum(calls) == 1  # 4 x 4 x 3 = 48 windows, only the one holding the body ran
    assert "ran 1 of 48 windows (47 outside the body skipped)" in caplog.text
    assert torch.equal(out[0, 0][body], image[0, 0][body] + 1)
    assert torch.equal(out[0, 0, 20:, 20:, 14:], torch.zeros(20, 13, 7))  # no window ran: background logit 0


def test_body_mask_with_mirroring_and_padding_matches_the_unmasked_prediction_on_the_body():
    image = _image((1, 1, 13, 10, 9))
    body = torch.zeros(13, 10, 9, dtype=torch.bool)
    body[5:9, 4:7, 3:6] = True
    cfg = InferenceConfig(mirror=True, roi_size=[16, 8, 8], overlap=0.5)
    masked = sliding_window_predict(_PlusOne(), image, cfg, body_mask=body)
    plain = sliding_window_predict(_PlusOne(), image, cfg)
    torch.testing.assert_close(masked[0, 0][body], plain[0, 0][body])


# --- skipped windows, the body mask and test-time mirroring --------------------------------------

class _Constant(torch.nn.Module):
    """Pointwise: the same logits at every voxel (a model that labels every voxel); counts windows run."""

    def __init__(self, logits=(0.25, 1.5)) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return torch.zeros_like(x[:, :1]) + self.logits.view(1, -1, *[1] * (x.ndim - 2))


@pytest.mark.parametrize("blend_mode,mirror", [("constant", False), ("gaussian", False), ("gaussian", True)])
def test_skipped_windows_give_background_and_do_not_pull_the_band(blend_mode, mirror):
    """Windows at x 0-9 and 5-14 run, 10-19 onwards are skipped: x 10-14 is the band."""
    image = torch.zeros(1, 1, 40, 12, 10)
    body = torch.zeros(40, 12, 10, dtype=torch.bool)
    body[:6] = True
    cfg = InferenceConfig(blend_mode=blend_mode, overlap=0.5, mirror=mirror, sw_batch_size=4)
    network = _Constant()
    probs = sliding_window_predict(network, image, cfg, [10, 12, 10], body_mask=body, softmax=True,
                                   mirror_axes=(1, 2) if mirror else None)
    expected = torch.softmax(network.logits.detach(), 0).view(1, 2, 1, 1, 1).expand(1, 2, 15, 12, 10)
    if blend_mode == "constant":
        assert torch.equal(probs[:, :, :15], expected)  # ran-only and band alike: softmax of the constant
    else:
        torch.testing.assert_close(probs[:, :, :15], expected, rtol=0, atol=1e-6)
    assert torch.equal(probs[0, 0, 15:], torch.ones(25, 12, 10))  # no window ran: background, p = 1
    assert torch.equal(probs[0, 1, 15:], torch.zeros(25, 12, 10))


def test_an_empty_region_is_still_skipped_and_the_cover_reaches_half_a_window_past_the_body(caplog):
    from radseg.pipeline.predict.body_mask import body_mask, window_cover

    raw = torch.full((1, 48, 16, 16), -1000.0)
    raw[:, :8] = 40.0
    cover = window_cover(body_mask(raw, "CT", -500.0), [8, 16, 16])
    assert cover[:12].all() and not cover[12:].any()
    network = _Constant()
    with caplog.at_level("INFO", logger="radseg.pipeline.predict.inference"):
        out = sliding_window_predict(network, raw[None], InferenceConfig(overlap=0.0), [8, 16, 16], body_mask=cover)
    assert network.windows == 2 and "ran 2 of 6 windows (4 outside the body skipped)" in caplog.text
    assert torch.equal(out[0].argmax(0)[:16], torch.ones(16, 16, 16, dtype=torch.long))


def test_mri_body_is_everything_but_the_empty_background():
    from radseg.pipeline.predict.body_mask import body_mask

    raw = torch.full((1, 20, 10, 6), -1.3)  # z-scored: the zero background became -1.3 exactly
    raw[:, 2:12, 2:8] = -0.5  # body, negative after z-scoring
    raw[:, 5:8, 4:6, 2:4] = -1.2  # dark tissue, still above the background
    body = body_mask(raw, "MRI", -500.0)
    expected = torch.zeros(20, 10, 6, dtype=torch.bool)
    expected[2:12, 2:8] = True
    assert torch.equal(body, expected)


def _model(network, roi, resolved=None, overrides=()):
    from predict_helpers import RESOLVED
    from radseg.configs.loader import load_config
    from radseg.pipeline.predict.model import PredictModel

    cfg = load_config("demo", [f"train.roi_size={list(roi)}", "train.device=cpu", "inference.overlap=0.25",
                               *overrides])
    return PredictModel(network=network.eval(), cfg=cfg, preprocess=resolved or RESOLVED,
                        label_names={0: "background", 1: "organ"}, in_channels=1, num_classes=2,
                        device=torch.device("cpu"), amp=None, source="test")


def _scan(array: np.ndarray, folder: Path):
    """A scan with the test preprocessing's spacing (resampling is the identity), array (X, Y, Z)."""
    from radseg.pipeline.predict.inputs import find_cases

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.float32).transpose(2, 1, 0)))
    image.SetSpacing((1.25, 1.25, 2.0))
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / "scan.nii.gz"))
    return find_cases([folder / "scan.nii.gz"])[0]


def _labels(result) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(result.mask))).transpose(2, 1, 0)


def _predict(model, array, folder, **options):
    from radseg.pipeline.predict.predict import PredictOptions, predict_many

    source = _scan(array, folder / "in")
    (result,) = predict_many(model, [source.path], folder / "out", PredictOptions(progress=False, **options)).results
    assert result.status == "done", result.message
    return result


def test_a_lung_enclosed_in_the_body_loses_no_voxel(tmp_path):
    scan = np.full((48, 48, 24), -1000.0)
    scan[4:44, 4:44] = 40.0
    scan[10:38, 10:38, 4:20] = -900.0  # lung: windows lie wholly inside it
    labels = _labels(_predict(_model(_Constant(), (12, 12, 6)), scan, tmp_path))
    assert (labels[4:44, 4:44] == 1).all()  # every body voxel, lung included (the old skip lost its core)


def test_a_z_scored_mri_loses_no_voxel_and_its_empty_background_is_skipped(tmp_path, caplog):
    from predict_helpers import RESOLVED

    scan = np.full((64, 32, 16), -1.3)  # exactly constant background
    scan[4:28, 4:28] = -0.5  # the body, negative after z-scoring
    scan[6:9, 6:9, 2:5] = 1.0  # the only positive voxels
    resolved = dataclasses.replace(RESOLVED, modality="MRI", ct_window=None, crop_foreground=False)
    with caplog.at_level("INFO", logger="radseg.pipeline.predict.inference"):
        labels = _labels(_predict(_model(_Constant(), (12, 12, 8), resolved), scan, tmp_path))
    assert (labels[4:28, 4:28] == 1).all()
    ran, total = map(int, re.search(r"ran (\d+) of (\d+) windows", caplog.text).groups())
    assert ran < total  # the windows in the empty x > 40 part of the scan did not run


def test_located_z_range_is_background_with_probability_one_outside(tmp_path):
    scan = np.full((48, 48, 24), -1000.0)
    scan[4:44, 4:44] = 40.0
    network = _Constant((0.0, 3.0))
    result = _predict(_model(network, (12, 12, 6)), scan, tmp_path, probabilities=True,
                      locate=lambda prepared, model: (0, 8))
    probs = np.load(result.mask.parent / "scan_probabilities.npz")["probabilities"].astype(np.float32)
    assert (probs[0, ..., 8:] == 1).all() and (probs[1, ..., 8:] == 0).all()
    inside = probs[:, 4:44, 4:44, :8].reshape(2, -1)
    np.testing.assert_allclose(inside, np.broadcast_to(torch.softmax(network.logits.detach(), 0).numpy()[:, None],
                                                       inside.shape), atol=1e-3)


def test_mirroring_flips_only_the_given_axes():
    class _Ramp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x * 0 + torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1) + self.w

    image = torch.zeros(1, 1, 6, 4, 4)
    ramp = torch.arange(6.0).view(1, 1, 6, 1, 1).expand_as(image)
    cfg = InferenceConfig(mirror=True, roi_size=[6, 4, 4], overlap=0.0)
    torch.testing.assert_close(sliding_window_predict(_Ramp(), image, cfg, mirror_axes=(1, 2)), ramp)
    torch.testing.assert_close(sliding_window_predict(_Ramp(), image, cfg, mirror_axes=(0,)), torch.full_like(image, 2.5))
    counting = _Constant()
    sliding_window_predict(counting, image, cfg, mirror_axes=())
    assert counting.windows == 1
    with pytest.raises(ConfigError, match="spatial axes 0..2"):
        sliding_window_predict(_Ramp(), image, cfg, mirror_axes=(3,))


def test_mirror_axes_come_from_the_training_flips_in_the_checkpoint(tmp_path):
    from predict_helpers import write_checkpoint
    from radseg.pipeline.predict.model import load_predict_model

    def axes(*overrides, drop_flip_axes=False):
        path = write_checkpoint(tmp_path / f"{len(list(tmp_path.iterdir()))}.pt", overrides)
        if drop_flip_axes:  # a checkpoint written before augment.flip_axes existed
            saved = torch.load(path, weights_only=True)
            del saved["config"]["augment"]["flip_axes"]
            torch.save(saved, path)
        return load_predict_model(path, "cpu").mirror_axes

    assert axes("augment.flip_prob=0") == ()
    assert axes("augment.flip_prob=0.5", "augment.flip_axes=[0]") == (0,)
    assert axes("augment.flip_prob=0.5", drop_flip_axes=True) == (0, 1, 2)  # what training flipped then
    with pytest.raises(ConfigError, match="augment.flip_axes"):
        write_checkpoint(tmp_path / "bad.pt", ["augment.flip_axes=[0, 3]"])


def test_tta_mirrors_only_the_trained_axes_and_says_so(tmp_path, caplog):
    scan = np.full((24, 24, 12), 40.0)
    scan[0] = -1000.0  # some air, so the scan passes as CT
    runs = {}
    for name, overrides in (("plain", ()), ("no_flips", ("augment.flip_prob=0",)),
                            ("x_only", ("augment.flip_prob=0.5", "augment.flip_axes=[0]"))):
        network = _Constant()
        with caplog.at_level("INFO"):
            caplog.clear()
            _predict(_model(network, (24, 24, 12), overrides=overrides), scan, tmp_path / name, tta=name != "plain")
        runs[name] = (network.windows, caplog.text)
    assert runs["no_flips"][0] == runs["plain"][0]
    assert "mirroring does nothing for this model" in runs["no_flips"][1]
    assert runs["x_only"][0] == 2 * runs["plain"][0]
    assert "mirroring over axes x (those flipped in training): 2 passes per case" in runs["x_only"][1]
