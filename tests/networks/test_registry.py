"""Registry look-ups, params validation, roi checks, deep supervision, 2.5D and the table."""

from __future__ import annotations

import logging

import pytest
import torch

from radseg.configs.schema import NetworkConfig
from radseg.errors import ConfigError
from radseg.networks import (
    build_network,
    check_roi_size,
    forward_volume,
    get_entry,
    list_networks,
    nearest_valid_sizes,
    network_table,
    register_network,
)


def test_unknown_name_lists_networks_and_closest_match():
    with pytest.raises(ConfigError, match=r"'unet3dd' is not a registered network; did you mean 'unet3d'\?.*vnet"):
        get_entry("unet3dd")


def test_unknown_param_names_dotted_path_and_closest_key():
    with pytest.raises(ConfigError, match=r"'network.params.widht'.*did you mean 'network.params.widths'"):
        build_network(NetworkConfig(name="unet3d", params={"widht": [4, 8]}), 1, 2)


def test_wrong_type_and_impossible_value_are_refused():
    with pytest.raises(ConfigError, match=r"network.params.convs_per_stage must be int, not 'two'"):
        build_network(NetworkConfig(name="unet3d", params={"convs_per_stage": "two"}), 1, 2)
    with pytest.raises(ConfigError, match=r"network.params.widths must be at least 2"):
        build_network(NetworkConfig(name="unet3d", params={"widths": [8]}), 1, 2)
    with pytest.raises(ConfigError, match=r"network.params.norm must be one of .*did you mean 'batch'"):
        build_network(NetworkConfig(name="unet3d", params={"norm": "batchnorm"}), 1, 2)


def test_missing_channels_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"network.out_channels must be a positive int, not None"):
        build_network(NetworkConfig(name="cnn3d"), in_channels=1)


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        register_network("unet3d", spatial_dims=3, task="segmentation", params_class=dict)(lambda p, i, o: None)


def test_list_networks_filters():
    assert set(list_networks(task="classification")) == {"simple_cnn2d", "cnn_rnn2d", "monai_densenet121", "monai_resnet"}
    assert "unet2p5d" in list_networks(spatial_dims=2) and "unet3d" not in list_networks(spatial_dims=2)


@pytest.mark.parametrize(
    ("size", "divisor", "expected"), [(97, 16, (96, 112)), (96, 16, (96, 96)), (10, 16, (None, 16)), (5, 1, (5, 5))]
)
def test_nearest_valid_sizes(size, divisor, expected):
    assert nearest_valid_sizes(size, divisor) == expected


def test_roi_size_check_names_every_bad_axis():
    message = r"axis 0: 97 \(nearest valid: 96 or 104\); axis 2: 30 \(nearest valid: 24 or 32\)"
    with pytest.raises(ConfigError, match=message):
        check_roi_size("unet3d", None, [97, 96, 30])
    with pytest.raises(ConfigError, match=r"axis 0: 5 \(nearest valid: 8\)"):
        check_roi_size("unet3d", None, [5, 8, 8])


def test_roi_smaller_than_receptive_field_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="radseg.networks.registry"):
        check_roi_size("unet3d", None, [96, 96, 96])
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="radseg.networks.registry"):
        check_roi_size("unet3d", None, [64, 64, 64], spacing=(1.0, 1.0, 2.0))
    assert "smaller than the receptive field of unet3d, [79, 79, 79] voxels (79, 79, 158 mm)" in caplog.text


def test_build_network_checks_roi_size():
    with pytest.raises(ConfigError, match="nearest valid"):
        build_network(NetworkConfig(name="vnet"), 1, 2, roi_size=[24, 24, 24])


def test_deep_supervision_returns_a_list_in_train_mode_only():
    cfg = NetworkConfig(name="unet3d", params={"widths": [4, 8, 16, 32], "deep_supervision": True})
    model = build_network(cfg, 1, 2)
    entry = get_entry("unet3d")
    assert model.deep_supervision and not entry.deep_supervision() and entry.deep_supervision(entry.params_class(**cfg.params))
    x = torch.randn(1, 1, 16, 8, 24)
    outs = model.train()(x)
    assert [tuple(o.shape) for o in outs] == [(1, 2, 16, 8, 24), (1, 2, 8, 4, 12), (1, 2, 4, 2, 6)]
    with torch.no_grad():
        assert tuple(model.eval()(x).shape) == (1, 2, 16, 8, 24)


def test_forward_volume_predicts_each_slice_from_its_neighbours():
    model = build_network(NetworkConfig(name="unet2p5d", params={"slices": 3, "widths": [4, 8]}), 2, 3).eval()
    assert model.slices_in == 3
    volume = torch.randn(1, 2, 8, 6, 5)
    with torch.no_grad():
        out = forward_volume(model, volume, slices=3, batch_slices=2)
        assert out.shape == (1, 3, 8, 6, 5)
        # slice 2 sees slices 1, 2, 3 of channel 0, then of channel 1
        window = volume[..., 1:4].permute(0, 1, 4, 2, 3).reshape(1, 6, 8, 6)
        torch.testing.assert_close(out[..., 2], model(window))
        # slice 0 repeats the border slice
        edge = volume[..., [0, 0, 1]].permute(0, 1, 4, 2, 3).reshape(1, 6, 8, 6)
        torch.testing.assert_close(out[..., 0], model(edge))


def test_simple_cnn2d_runs_at_the_seed_size_and_others():
    model = build_network(NetworkConfig(name="simple_cnn2d"), 1, 2).eval()
    with torch.no_grad():
        for size in (64, 4, 37, 128):
            assert model(torch.randn(2, 1, size, size)).shape == (2, 2)


def test_network_table_lists_receptive_fields_and_flops():
    table = network_table(spacing=(1.0, 1.0, 2.0), names=["cnn3d", "simple_cnn2d"])
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["name", "dims", "task", "params"]
    cnn = next(line for line in lines if line.startswith("cnn3d")).split()
    assert cnn[4] == "35" and cnn[5] == "35x35x70" and cnn[6] == "1"
    assert float(cnn[7]) > 0
    assert "GFLOPs" in table and "96^3" in table


def test_the_receptive_field_warning_is_given_once_per_patch(caplog):
    """`radseg train` checks the patch in the CLI and again in fit: one warning, not two."""
    from radseg.cli import _load_checked_config
    from radseg.pipeline.train.run_checks import check_segmentation_network

    with caplog.at_level(logging.WARNING, logger="radseg.networks.registry"):
        cfg = _load_checked_config("demo", [])
        check_segmentation_network(cfg)
        check_roi_size("unet3d", None, [64, 64, 64])  # another patch: its own warning
    warned = [r.args[0] for r in caplog.records if "smaller than the receptive field" in r.getMessage()]
    assert warned == [[64, 64, 32], [64, 64, 64]]
