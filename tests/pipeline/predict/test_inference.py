"""The sliding-window predictor: known answers on odd shapes, windows larger than the volume."""

from __future__ import annotations

import pytest
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
    assert torch.equal(out[0, 0, 20:, 20:, 14:], torch.zeros(20, 13, 7))  # skipped: zero logits


def test_body_mask_with_mirroring_and_padding_matches_the_unmasked_prediction_on_the_body():
    image = _image((1, 1, 13, 10, 9))
    body = torch.zeros(13, 10, 9, dtype=torch.bool)
    body[5:9, 4:7, 3:6] = True
    cfg = InferenceConfig(mirror=True, roi_size=[16, 8, 8], overlap=0.5)
    masked = sliding_window_predict(_PlusOne(), image, cfg, body_mask=body)
    plain = sliding_window_predict(_PlusOne(), image, cfg)
    torch.testing.assert_close(masked[0, 0][body], plain[0, 0][body])
