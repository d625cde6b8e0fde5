"""Optimisation: the learning-rate schedule, the optimisers and the losses (with deep supervision)."""

from __future__ import annotations

import math

import pytest
import torch

from radseg.configs.schema import TrainConfig
from radseg.errors import ConfigError
from radseg.pipeline.train.losses import build_loss, deep_supervision_weights, downsample_label, split_heads
from radseg.pipeline.train.schedule import build_optimizer, lr_at, set_lr


def _cfg(**kwargs) -> TrainConfig:
    base = dict(max_epochs=10, iterations_per_epoch=10, learning_rate=0.01, warmup_epochs=0)
    return TrainConfig(**{**base, **kwargs})


def test_warmup_is_linear_and_reaches_the_rate():
    cfg = _cfg(warmup_epochs=2)
    assert lr_at(0, cfg) == pytest.approx(0.01 / 20)
    assert lr_at(9, cfg) == pytest.approx(0.01 * 10 / 20)
    assert lr_at(19, cfg) == pytest.approx(0.01)
    assert lr_at(20, cfg) == pytest.approx(0.01)  # decay starts at t = 0


def test_poly_decay_known_values():
    cfg = _cfg(schedule="poly")
    assert lr_at(0, cfg) == pytest.approx(0.01)
    assert lr_at(50, cfg) == pytest.approx(0.01 * 0.5**0.9)
    assert lr_at(100, cfg) == 0.0
    assert lr_at(150, cfg) == 0.0  # past the end never goes negative


def test_cosine_and_constant():
    cfg = _cfg(schedule="cosine", warmup_epochs=2)
    assert lr_at(20, cfg) == pytest.approx(0.01)
    assert lr_at(60, cfg) == pytest.approx(0.005)
    assert lr_at(100, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(73, _cfg(schedule="constant")) == 0.01


def test_schedule_is_monotone_after_warmup():
    cfg = _cfg(schedule="poly", warmup_epochs=1)
    rates = [lr_at(i, cfg) for i in range(10, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[0] > rates[-1]


def test_optimizers():
    params = [torch.nn.Parameter(torch.ones(3))]
    adamw = build_optimizer(_cfg(optimizer="adamw", weight_decay=0.1), params)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.1
    sgd = build_optimizer(_cfg(optimizer="sgd", momentum=0.9), params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    set_lr(sgd, 0.123)
    assert sgd.param_groups[0]["lr"] == 0.123


@pytest.mark.parametrize("name", ["dice_ce", "dice", "focal", "dice_focal"])
def test_losses_prefer_the_right_answer(name):
    label = torch.randint(0, 3, (2, 1, 8, 8, 4), generator=torch.Generator().manual_seed(0))
    perfect = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 20 - 10
    wrong = perfect.roll(1, dims=1)
    loss = build_loss(_cfg(loss=name), num_classes=3)
    good, bad = loss(perfect, label), loss(wrong, label)
    assert good.ndim == 0 and torch.isfinite(good)
    assert good < 0.05 < bad


def test_deep_supervision_weights_and_label_downsampling():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    label = torch.arange(64).view(1, 1, 4, 4, 4) % 3
    small = downsample_label(label, (2, 2, 2))
    assert small.shape == (1, 1, 2, 2, 2) and small.dtype == label.dtype
    assert set(small.unique().tolist()) <= {0, 1, 2}
    assert torch.equal(small, label[:, :, ::2, ::2, ::2])


def test_deep_supervision_loss_is_weighted_sum_of_heads():
    label = torch.randint(0, 2, (1, 1, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    full = torch.randn(1, 2, 8, 8, 8)
    half = torch.randn(1, 2, 4, 4, 4)
    single = build_loss(_cfg(), 2)
    deep = build_loss(_cfg(), 2, deep_supervision=True)
    expected = 2 / 3 * single(full, label) + 1 / 3 * single(half, downsample_label(label, (4, 4, 4)))
    torch.testing.assert_close(deep([full, half], label), expected)
    # MONAI DynUNet stacks heads (upsampled to full resolution) on dim 1
    stacked = torch.stack([full, full], dim=1)
    torch.testing.assert_close(deep(stacked, label), single(full, label))
    assert len(split_heads(stacked, label.ndim)) == 2
    # a single-head loss given several heads uses the full-resolution one
    torch.testing.assert_close(single([full, half], label), single(full, label))


def test_loss_errors():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_loss(_cfg(), 1)
    assert math.isfinite(lr_at(0, _cfg(warmup_epochs=50)))


def test_deep_supervision_loss_with_a_registered_network():
    from radseg.configs.schema import NetworkConfig
    from radseg.networks import build_network

    network = build_network(NetworkConfig(params={"widths": [4, 8, 16], "deep_supervision": True}), 1, 3)
    assert network.deep_supervision
    heads = network(torch.randn(1, 1, 16, 16, 8))
    assert [h.shape[2:] for h in heads] == [(16, 16, 8), (8, 8, 4)]
    loss = build_loss(_cfg(), 3, deep_supervision=True)(heads, torch.randint(0, 3, (1, 1, 16, 16, 8)))
    loss.backward()
    assert all(p.grad is not None for p in network.parameters())
