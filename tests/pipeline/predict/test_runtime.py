"""predict --runtime/--precision: each runtime agrees with torch fp32, auto chooses by measurement and caches it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from predict_helpers import DIRECTIONS, oracle_model, phantom_scan, write_checkpoint
from radseg.cli import main
from radseg.errors import ConfigError
from radseg.pipeline.predict import runtime
from radseg.pipeline.predict.inference import cpu_has_native_bf16
from radseg.pipeline.predict.model import load_predict_model
from radseg.pipeline.predict.predict import PredictOptions, predict_many
from radseg.pipeline.predict.runtime_backends import Candidate, build_forward, installed

NATIVE_BF16 = pytest.mark.skipif(not cpu_has_native_bf16(),
                                 reason="this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 is refused here")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RADSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    return load_predict_model(write_checkpoint(tmp_path / "best.pt"), "cpu")


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand((1, 1, 40, 36, 20), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["torch-fp32-channels-last", "onnxruntime-fp32", "openvino-fp32"])
def test_each_fp32_runtime_agrees_with_torch_fp32(name, tiny, cache_dir):
    everything = runtime.candidates("cpu", "fp32", runtimes=runtime.RUNTIMES)
    candidate = next((c for c in everything if c.name == name), None)
    if candidate is None:
        pytest.skip(f"{name.split('-')[0]} is not installed (pip install 'radseg[fast]')")
    windows = runtime.sample_windows(_image(), [32, 32, 16], 2)
    with torch.inference_mode():
        expected = build_forward(Candidate("torch", "fp32"), tiny, None)(windows)
        got = build_forward(candidate, tiny, lambda: runtime._onnx_path(tiny))(windows)
    assert got.dtype == torch.float32 and got.shape == expected.shape == (2, 3, 32, 32, 16)
    assert float((got - expected).abs().max()) < 1e-3
    assert runtime.class_dice(expected, got) >= runtime.MIN_DICE["fp32"]


@NATIVE_BF16
def test_bf16_autocast_gives_float32_logits_close_to_fp32(tiny):
    windows = runtime.sample_windows(_image(), [32, 32, 16], 2)
    with torch.inference_mode():
        expected = build_forward(Candidate("torch", "fp32"), tiny, None)(windows)
        got = build_forward(Candidate("torch", "bf16", channels_last=True), tiny, None)(windows)
    assert got.dtype == torch.float32
    assert float((got - expected).abs().max()) < 0.1 * float(expected.abs().max())


def test_sample_windows_pads_a_small_image_and_keeps_the_window_shape():
    windows = runtime.sample_windows(_image()[..., :10], [32, 32, 16], 3)
    assert windows.shape == (3, 1, 32, 32, 16)


def _tagged(monkeypatch, wrong: set[str] = frozenset()):
    """build_forward whose functions carry their candidate's name; those in ``wrong`` negate the logits."""
    real = runtime.build_forward

    def fake(candidate, model, onnx_file):
        inner = real(Candidate("torch", "fp32"), model, onnx_file)
        forward = (lambda w: -inner(w)) if candidate.name in wrong else (lambda w: inner(w))
        forward.name = candidate.name
        return forward

    monkeypatch.setattr(runtime, "build_forward", fake)
    found = [Candidate("torch", "fp32"), Candidate("torch", "fp32", True), Candidate("onnxruntime", "fp32")]
    monkeypatch.setattr(runtime, "candidates", lambda device, precision="auto": found)


def test_auto_takes_the_fastest_measured_and_reuses_the_stored_choice(tiny, cache_dir, monkeypatch, caplog):
    _tagged(monkeypatch)
    seconds = {"torch-fp32": 1.0, "torch-fp32-channels-last": 0.4, "onnxruntime-fp32": 0.7}
    with caplog.at_level(logging.INFO, logger="radseg.pipeline.predict.runtime"):
        chosen = runtime.choose_runtime(tiny, _image(), "auto", timer=lambda f, w: seconds[f.name])
    assert chosen.name == "torch-fp32-channels-last" and "2.50x" in chosen.reason
    assert "runtime torch-fp32-channels-last: fastest" in caplog.text
    (stored,) = (cache_dir / "runtime").glob("*.json")
    assert json.loads(stored.read_text())["choice"] == "torch-fp32-channels-last"
    assert runtime.choose_runtime(tiny, _image(), "auto") is chosen  # remembered for the next case

    again = load_predict_model(Path(tiny.source), "cpu")
    reused = runtime.choose_runtime(again, _image(1), "auto", timer=lambda f, w: pytest.fail("measured again"))
    assert reused.name == "torch-fp32-channels-last" and "measured earlier" in reused.reason
    changed = load_predict_model(Path(tiny.source), "cpu")
    with torch.no_grad():  # other weights: another stored key, measured afresh
        next(changed.network.parameters()).add_(1)
    runtime.choose_runtime(changed, _image(), "auto", timer=lambda f, w: seconds[f.name])
    assert len(list((cache_dir / "runtime").glob("*.json"))) == 2


def test_auto_excludes_a_runtime_whose_masks_disagree_and_says_so(tiny, cache_dir, monkeypatch, caplog):
    _tagged(monkeypatch, wrong={"torch-fp32-channels-last"})
    seconds = {"torch-fp32": 1.0, "torch-fp32-channels-last": 0.1, "onnxruntime-fp32": 0.7}
    with caplog.at_level(logging.INFO, logger="radseg.pipeline.predict.runtime"):
        chosen = runtime.choose_runtime(tiny, _image(), "auto", timer=lambda f, w: seconds[f.name])
    assert chosen.name == "onnxruntime-fp32"
    assert "runtime torch-fp32-channels-last excluded: mask Dice" in caplog.text


def test_impossible_runtimes_are_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr("radseg.pipeline.predict.runtime.installed", lambda name: name == "torch")
    with pytest.raises(ConfigError, match=r"openvino is not installed; fix: pip install 'radseg\[fast\]'"):
        runtime.check_runtime("openvino", "auto", "cpu")
    monkeypatch.setattr("radseg.pipeline.predict.runtime.installed", lambda name: True)
    with pytest.raises(ConfigError, match="runs on CPU only"):
        runtime.check_runtime("onnxruntime", "fp32", "cuda")
    with pytest.raises(ConfigError, match="no bf16 CPU kernels"):
        runtime.check_runtime("onnxruntime", "bf16", "cpu")
    monkeypatch.setattr("radseg.pipeline.predict.inference.cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        runtime.check_runtime("torch", "bf16", "cpu")
    assert all(c.precision == "fp32" for c in runtime.candidates("cpu"))
    assert "onnxruntime-fp32" not in [c.name for c in runtime.candidates("cpu")]  # never the fastest: asked for only


def test_cli_refuses_a_missing_runtime_in_one_line_before_reading_scans(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("radseg.pipeline.predict.runtime.installed", lambda name: name == "torch")
    code = main(["predict", "--model", str(tmp_path / "nowhere.pt"), "--input", str(tmp_path / "none.nii.gz"),
                 "--output", str(tmp_path / "out"), "--runtime", "onnxruntime"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'radseg[fast]'" in err


def test_the_case_record_names_the_runtime(tmp_path):
    image, _ = phantom_scan(DIRECTIONS["LPS"])
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    out = tmp_path / "out"
    options = PredictOptions(progress=False, runtime="torch", precision="fp32")
    assert predict_many(oracle_model(), [tmp_path / "scan.nii.gz"], out, options).count("done") == 1
    assert json.loads((out / "scan.json").read_text())["runtime"] == "torch-fp32"


def test_installed_knows_torch():
    assert installed("torch")


def test_auto_runs_an_ensemble_of_two_models_and_its_choice_agrees_with_torch(tmp_path, cache_dir):
    from radseg.pipeline.predict.ensemble import load_models

    torch.manual_seed(1)
    paths = [write_checkpoint(tmp_path / f"{k}.pt") for k in range(2)]
    model = load_models(paths, "cpu")
    chosen = runtime.choose_runtime(model, _image(), "auto", precision="fp32")
    assert chosen.name in {c.name for c in runtime.candidates("cpu", "fp32")}
    windows = runtime.sample_windows(_image(2), [32, 32, 16], 2)
    with torch.inference_mode():
        assert runtime.class_dice(model.network(windows), chosen.forward(windows)) >= runtime.MIN_DICE["fp32"]
