"""Checkpoints: atomic writes, weights_only loading, RNG states that round-trip exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from radseg.errors import DataError
from radseg.pipeline.core.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = _draws()
    _draws()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == expected


def test_model_optimizer_and_plain_state_round_trip(tmp_path):
    model = torch.nn.Conv3d(1, 2, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 1, 5, 5, 5)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": {"train": {"roi_size": [32, 32, 16], "amp": "none"}},
        "label_names": {0: "background", 1: "liver"},
        "epoch": 3,
    }
    path = save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["config"] == state["config"] and loaded["label_names"] == state["label_names"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    fresh = torch.optim.AdamW(torch.nn.Conv3d(1, 2, 3).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_save_is_atomic_when_serialisation_fails(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})

    class _Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"epoch": 2, "bad": _Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_foreign_objects_are_refused_with_weights_only(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"array": np.zeros(3)}, path)  # a numpy array needs unpickling
    with pytest.raises(DataError, match="cannot be read as a radseg checkpoint"):
        load_checkpoint(path)
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(DataError, match="damaged"):
        load_checkpoint(tmp_path / "torn.pt")
