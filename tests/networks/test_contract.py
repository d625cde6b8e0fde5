"""One contract test per registered network, generated from list_networks()."""

from __future__ import annotations

import pytest
import torch
import yaml

from radseg.configs.loader import load_config
from radseg.errors import ConfigError
from radseg.networks import build_network, check_network_config, check_roi_size, get_entry, list_networks

#: the smallest sensible params of every network, and an input shape made of odd multiples of its divisor
TINY = {
    "unet3d": ({"widths": [4, 8, 16]}, (12, 4, 20)),
    "vnet": ({"widths": [4, 8, 16], "convs_per_stage": [1, 2, 2]}, (12, 4, 20)),
    "cnn3d": ({"widths": [4, 4], "dilations": [1, 2]}, (7, 5, 9)),
    "unet2p5d": ({"slices": 3, "widths": [4, 8, 16]}, (12, 20)),
    "simple_cnn2d": ({}, (7, 9)),
    "monai_unet": ({"channels": [4, 8, 16], "num_res_units": 1}, (12, 4, 20)),
    "monai_basic_unet": ({"features": [4, 4, 8, 8, 16, 4]}, (16, 16, 48)),
    "monai_vnet": ({"dropout": 0.0}, (16, 16, 16)),
    "monai_segresnet": ({"init_filters": 4, "num_groups": 2, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}, (12, 4, 20)),
    "monai_dynunet": ({"depth": 3, "filters": [4, 8, 16]}, (12, 4, 20)),
    "monai_unetr": (
        {"img_size": [16, 16, 48], "feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2},
        (16, 16, 48),
    ),
    "monai_swinunetr": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2}, (32, 32, 96)),
    "monai_densenet121": ({"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}, (33, 35)),
    "monai_resnet": ({"layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 16, 32]}, (33, 35)),
}
OUT = 3


def _build_from_yaml(name: str, seed: int = 0) -> torch.nn.Module:
    params, shape = TINY[name]
    # the patch goes in too: check_network_config refuses a roi_size the network cannot take
    snippet = yaml.safe_dump({"network": {"name": name, "in_channels": 1, "out_channels": OUT, "params": params},
                              "train": {"roi_size": list(shape)}})
    torch.manual_seed(seed)
    cfg = load_config(yaml.safe_load(snippet))
    check_network_config(cfg)
    return build_network(cfg.network)


def _input(name: str, batch: int = 2) -> torch.Tensor:
    _, shape = TINY[name]
    entry = get_entry(name)
    torch.manual_seed(1)
    return torch.randn(batch, entry.slices_in(entry.params_class(**TINY[name][0])), *shape)


def test_every_network_has_a_contract_case():
    assert set(list_networks()) == set(TINY)
    assert len(list_networks()) >= 12


@pytest.mark.parametrize("name", list_networks())
def test_output_shape_and_backward(name):
    model = _build_from_yaml(name).train()
    x = _input(name).requires_grad_(True)
    out = model(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    entry = get_entry(name)
    expected = (2, OUT) + (tuple(x.shape[2:]) if entry.task == "segmentation" else ())
    assert tuple(out.shape) == expected
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert params_without_gradient(model) == [], "every parameter must learn from the loss"


def params_without_gradient(model: torch.nn.Module) -> list[str]:
    """Trainable parameters whose gradient after a backward pass is missing or not finite."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]


def test_the_gradient_check_catches_a_dead_branch():
    class HalfDead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Conv3d(1, 2, 1), torch.nn.Conv3d(2, 2, 1)

        def forward(self, x):
            return self.used(x)

    model = HalfDead()
    model(torch.randn(1, 1, 2, 2, 2)).square().mean().backward()
    assert params_without_gradient(model) == ["unused.weight", "unused.bias"]


@pytest.mark.parametrize("name", list_networks())
def test_state_dict_round_trip(name):
    source, target = _build_from_yaml(name, seed=0).eval(), _build_from_yaml(name, seed=1).eval()
    x = _input(name, batch=1)
    with torch.no_grad():
        before = target(x)
        target.load_state_dict(source.state_dict())
        assert not torch.equal(before, source(x))
        torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("name", list_networks())
def test_divisor_handling(name):
    params, shape = TINY[name]
    entry = get_entry(name)
    check_roi_size(name, params, shape)  # the contract shape is valid
    divisor = entry.divisor_for(entry.params_class(**params))[0]
    if entry.fixed_size:
        with pytest.raises(ConfigError, match=r"must equal network.params.img_size"):
            check_roi_size(name, params, [s + 16 for s in shape])
    elif divisor == 1:
        check_roi_size(name, params, [entry.min_size + 3] * entry.spatial_dims)
    else:
        bad = [3 * divisor + 1] + list(shape[1:])
        expected = f"axis 0: {3 * divisor + 1} (nearest valid: {3 * divisor} or {4 * divisor})"
        with pytest.raises(ConfigError, match=rf"multiples of .*{expected.replace('(', '[(]').replace(')', '[)]')}"):
            check_roi_size(name, params, bad)
    with pytest.raises(ConfigError, match=f"is {entry.spatial_dims}D"):
        check_roi_size(name, params, [shape[0]] * (entry.spatial_dims + 1))
