import pytest
import yaml

from radseg.configs import RadsegConfig, list_presets, load_config, save_config
from radseg.errors import ConfigError
from radseg.networks import check_network_config


def test_presets_load_and_round_trip(tmp_path):
    assert "demo" in list_presets()
    for name in list_presets():
        cfg = load_config(name)
        assert isinstance(cfg, RadsegConfig)
        save_config(cfg, tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == cfg


def test_override_goes_through_the_loader():
    cfg = load_config("demo", ["train.max_epochs=3", "inference.overlap=0.25", "preprocess.target_spacing=[1, 1, 2]"])
    assert cfg.train.max_epochs == 3
    assert cfg.inference.overlap == 0.25
    assert cfg.preprocess.target_spacing == [1.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trian": {}}, "unknown config key 'trian': did you mean 'train'?"),
        ({"train": {"max_epoch": 2}}, "unknown config key 'train.max_epoch': did you mean 'train.max_epochs'?"),
        ({"train": {"max_epochs": "ten"}}, "train.max_epochs must be int, not 'ten'"),
        ({"train": {"amp": "bf61"}}, "did you mean 'bf16'?"),
        ({"inference": {"overlap": 1.0}}, "inference.overlap must be in [0, 1), not 1.0"),
        ({"preprocess": {"ct_window": [100, -100]}}, "low < high"),
        ({"data": {"fold": 5, "num_folds": 5}}, "data.fold must be in 0..4, not 5"),
    ],
)
def test_bad_values_are_refused_with_their_path(raw, message):
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    assert message in str(err.value)


def test_bad_override_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demo", ["train.max_epochs"])
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no-such-preset")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def _load_checked(source, overrides):
    cfg = load_config(source, overrides)
    check_network_config(cfg)
    return cfg


def test_network_and_patch_are_checked_at_load_time():
    with pytest.raises(ConfigError, match="nearest valid"):
        _load_checked("demo", ["train.roi_size=[63, 64, 32]"])
    with pytest.raises(ConfigError, match="did you mean 'unet3d'"):
        _load_checked("demo", ["network.name=unet3dd"])
    with pytest.raises(ConfigError, match="network.params.widht"):
        _load_checked("demo", ["network.params={widht: [8, 16]}"])


def test_configs_stand_below_networks():
    import subprocess
    import sys

    code = "import sys, radseg.configs; radseg.configs.load_config('demo'); print('radseg.networks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_reports_unwritable_paths_in_one_line(tmp_path, capsys):
    from radseg.cli import main

    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    assert main(["phantom", str(blocked / "data"), "--cases", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("radseg phantom: error: ") and "blocked" in err[0]
