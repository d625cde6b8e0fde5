"""Analytic receptive fields against empirical ones, and parameter counts that follow the widths."""

from __future__ import annotations

import pytest
import torch

from radseg.configs.schema import NetworkConfig
from radseg.networks import analytic_receptive_field, build_network, empirical_receptive_field, get_entry

CASES = [
    ("cnn3d", {"widths": [2, 2, 2], "dilations": [1, 3, 2]}),
    ("unet3d", {"widths": [2, 4, 4], "convs_per_stage": 2}),
    ("unet3d", {"widths": [2, 4, 4], "convs_per_stage": 1, "upsample": "linear", "norm": "batch"}),
    ("unet3d", {"widths": [2, 4, 4], "deep_supervision": True}),
    ("vnet", {"widths": [2, 4, 4], "convs_per_stage": [1, 1, 1]}),
    ("unet2p5d", {"slices": 3, "widths": [2, 4, 4, 4]}),
]


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_analytic_receptive_field_matches_gradient(name, params):
    entry = get_entry(name)
    torch.manual_seed(0)
    model = build_network(NetworkConfig(name=name, params=params), 1, 1)
    divisor = entry.divisor_for(entry.params_class(**params))[0]
    rf = analytic_receptive_field(name, params)[0]
    size = divisor * (rf // divisor + 3)  # room for the field around the centre
    shapes = [(size,) * entry.spatial_dims, (size + divisor,) * entry.spatial_dims]  # both grid alignments
    for shape in shapes:
        measured = empirical_receptive_field(model, shape, model.slices_in)
        assert measured == analytic_receptive_field(name, params, position=shape[0] // 2)
        assert max(measured) < size  # not clipped by the input
    assert rf == max(analytic_receptive_field(name, params, position=p)[0] for p in range(100, 100 + divisor))


def test_cnn3d_receptive_field_is_the_known_answer():
    assert analytic_receptive_field("cnn3d", {"widths": [1] * 4, "dilations": [1, 2, 4, 8]}) == (31, 31, 31)
    assert analytic_receptive_field("cnn3d") == (1 + 2 * (1 + 1 + 2 + 4 + 8 + 1),) * 3


def test_empirical_receptive_field_sees_a_global_classifier_whole():
    model = build_network(NetworkConfig(name="simple_cnn2d"), 1, 2)
    assert empirical_receptive_field(model, (21, 17)) == (21, 17)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv(c_in: int, c_out: int, kernel_volume: int, norm: bool = True) -> int:
    return kernel_volume * c_in * c_out + c_out + (2 * c_out if norm else 0)


def _unet3d_count(widths: list[int], convs: int, c_in: int, c_out: int) -> int:
    total = 0
    for i, w in enumerate(widths):
        total += _conv(c_in if i == 0 else widths[i - 1], w, 27) + (convs - 1) * _conv(w, w, 27)
    for i, w in enumerate(widths[:-1]):
        total += _conv(widths[i + 1], w, 8, norm=False)  # transposed conv
        total += _conv(2 * w, w, 27) + (convs - 1) * _conv(w, w, 27)
    return total + _conv(widths[0], c_out, 1, norm=False)


@pytest.mark.parametrize(("widths", "convs"), [([4, 8, 16], 2), ([8, 16, 32, 64], 2), ([3, 5], 3)])
def test_unet3d_parameter_count_follows_widths(widths, convs):
    model = build_network(NetworkConfig(name="unet3d", params={"widths": widths, "convs_per_stage": convs}), 2, 3)
    assert _count(model) == _unet3d_count(widths, convs, 2, 3)


def test_cnn3d_and_seed_classifier_parameter_counts():
    model = build_network(NetworkConfig(name="cnn3d", params={"widths": [4, 6], "dilations": [1, 2]}), 1, 2)
    assert _count(model) == _conv(1, 4, 27) + _conv(4, 6, 27) + _conv(6, 2, 1, norm=False)
    # the seed's classifier: conv(1->16)-BN, conv(16->32)-BN, Linear(32*4*4, 2)
    seed = build_network(NetworkConfig(name="simple_cnn2d"), 1, 2)
    assert _count(seed) == (9 * 16 + 16 + 32) + (9 * 16 * 32 + 32 + 64) + (32 * 16 * 2 + 2)


def test_vnet_parameter_count_grows_with_widths():
    small = build_network(NetworkConfig(name="vnet", params={"widths": [4, 8, 16], "convs_per_stage": [1, 1, 1]}), 1, 2)
    large = build_network(NetworkConfig(name="vnet", params={"widths": [8, 16, 32], "convs_per_stage": [1, 1, 1]}), 1, 2)
    # 5^3 convolutions dominate and scale with the square of the width
    assert 3.8 < _count(large) / _count(small) < 4.0
