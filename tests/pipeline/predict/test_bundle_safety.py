"""A bundle config is code: radseg refuses every item that would run anything but its safe subset,
and refuses it before running it (each payload would create a file; none may exist afterwards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bundle_helpers import SPLEEN, edit_config, zoo_bundle
from radseg.errors import DataError
from radseg.pipeline.predict.model import load_predict_model


def _bundle(tmp_path: Path, change) -> Path:
    bundle = zoo_bundle(SPLEEN, tmp_path / "bundle")
    edit_config(bundle, change)
    return bundle


def _refused(bundle: Path, marker: Path, expected: str) -> str:
    with pytest.raises(DataError) as caught:
        load_predict_model(bundle, "cpu")
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and expected in message, message
    assert not marker.exists(), f"the payload ran: {marker} exists"
    return message


def _touch(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def _network(item: dict):
    return lambda config: config.update({"network_def": item})


def _in_channels(value):
    return lambda config: config["network_def"].update({"in_channels": value})


def _run_config(tmp_path: Path, marker: Path) -> Path:
    """A config whose ``run`` item creates ``marker`` (what monai.bundle.scripts.run would execute)."""
    path = tmp_path / "evil.json"
    path.write_text(json.dumps({"run": [f"${_touch(marker)}"]}))
    return path


CASES = {
    "run_cmd": lambda t, m: (_network({"_target_": "run_cmd", "cmd_list": ["touch", str(m)]}),
                             "'run_cmd', which radseg will not build (network_def may name only a network class"),
    "dotted monai function": lambda t, m: (
        _network({"_target_": "monai.bundle.scripts.run", "config_file": str(_run_config(t, m))}),
        "'monai.bundle.scripts.run', which radseg will not build"),
    "macro to a network": lambda t, m: (
        lambda c: c.update({"evil": {"_target_": "os.system", "command": f"touch {m}"}, "network_def": "%#evil"}),
        "names _target_ 'os.system', outside MONAI"),
    "macro to a preprocessing": lambda t, m: (
        lambda c: c.update({"pre": {**c["preprocessing"], "transforms": [*c["preprocessing"]["transforms"], {
            "_target_": "Identityd", "keys": "image", "allow_missing_keys": f"${_touch(m)}"}]},
                            "preprocessing": "%#pre"}), "which radseg will not run"),
    "macro reading another file": lambda t, m: (
        _network(f"%{_run_config(t, m)}#run"), "which reads another file"),
    "import used by the network": lambda t, m: (
        lambda c: c.update({"imports": ["$import os"], "network_def": {**c["network_def"], "act": "@imports#0"}}),
        "holds the expression 'import os'"),
    "mode debug": lambda t, m: (_network({"_target_": "UNet", "_mode_": "debug", "spatial_dims": 3, "in_channels": 1,
                                          "out_channels": 2, "channels": [4, 8], "strides": [2]}),
                                "sets _mode_ 'debug'"),
    "mode callable": lambda t, m: (_network({"_target_": "UNet", "_mode_": "callable"}), "sets _mode_ 'callable'"),
    "dunder attribute": lambda t, m: (_in_channels(f"$os.__dict__['system']('touch {m}') * 0 + 1"),
                                      "which radseg will not run"),
    "dunder call": lambda t, m: (_in_channels(f"${_touch(m)} * 0 + 1"), "which radseg will not run"),
    "getattr chain": lambda t, m: (_in_channels(f"$getattr(getattr(os, 'sys'), 'exit')(0) or 1"),
                                   "which radseg will not run"),
    "reference to a callable": lambda t, m: (
        lambda c: c.update({"run_it": "$os.system", "network_def": {**c["network_def"],
                                                                  "act": ["@run_it", {"command": f"touch {m}"}]}}),
        "holds the expression 'os.system'"),
    "target from an expression": lambda t, m: (
        lambda c: c.update({"run_it": "$os.system", "network_def": {"_target_": "@run_it", "command": f"touch {m}"}}),
        "which is not a class name"),
    "unmapped transform": lambda t, m: (
        lambda c: c["preprocessing"]["transforms"].insert(2, {"_target_": "Lambdad", "keys": "image",
                                                              "func": f"${_touch(m)}"}),
        "'Lambdad', which radseg will not build"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bundle_running_code_is_refused_before_it_runs(case, tmp_path):
    marker = tmp_path / "payload_ran"
    change, expected = CASES[case](tmp_path, marker)
    _refused(_bundle(tmp_path, change), marker, expected)


def test_items_prediction_does_not_need_never_run(tmp_path, monkeypatch):
    """``imports``, ``initialize`` and ``run`` stay out of the parser that builds the network."""
    marker = tmp_path / "payload_ran"
    (tmp_path / "evil_module.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bundle = _bundle(tmp_path, lambda c: c.update({"imports": ["$import evil_module", "$import this"],
                                                   "initialize": [f"${_touch(marker)}"]}))
    model = load_predict_model(bundle, "cpu")
    assert type(model.network).__name__ == "UNet"
    assert not marker.exists()


def test_torchscript_is_read_only_from_the_bundles_own_model_file(tmp_path):
    bundle = zoo_bundle(SPLEEN, tmp_path / "bundle")
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 2, 1)), tmp_path / "elsewhere.ts")
    network_def = "$torch.jit.load(@bundle_root + '/../elsewhere.ts')"
    edit_config(bundle, lambda c: c.update({"network_def": network_def}))
    _refused(bundle, tmp_path / "none", "reads a file other than the bundle's models/model.ts")
