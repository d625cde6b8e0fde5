"""The ways to run a network on a batch of windows: ``forward(windows) -> float32 logits``, one per candidate.

torch eager (contiguous or ``channels_last_3d``, float32 or bf16 autocast) runs the network itself;
onnxruntime and OpenVINO (``pip install radseg[fast]``, CPU only) run the ONNX file that
:func:`radseg.pipeline.export.network_files.write_onnx` writes (dynamic batch axis, checked against
the network's logits), kept under the radseg cache folder so it is exported once per network.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from radseg.atomic import atomic_path

logger = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Candidate:
    """One way to run the network: ``runtime`` ("torch", "onnxruntime", "openvino"), ``precision``
    ("fp32", "bf16", "fp16") and, for torch, the memory format."""

    runtime: str
    precision: str
    channels_last: bool = False

    @property
    def name(self) -> str:
        """E.g. ``torch-bf16-channels-last``, ``openvino-fp32``."""
        return f"{self.runtime}-{self.precision}" + ("-channels-last" if self.channels_last else "")


def installed(runtime: str) -> bool:
    """Whether the library ``runtime`` needs is importable (torch always is)."""
    return runtime == "torch" or importlib.util.find_spec(runtime) is not None


def build_forward(candidate: Candidate, model, onnx_file: Callable[[], Path]) -> Forward:
    """The forward function of ``candidate`` for a :class:`~radseg.pipeline.predict.model.PredictModel`.

    Args:
        candidate: what to build.
        model: the model (its ``network``, ``device``).
        onnx_file: returns the network's ONNX file, exporting it on first use (ONNX runtimes only).
    """
    if candidate.runtime == "torch":
        return _torch_forward(candidate, model.network, model.device)
    if candidate.runtime == "onnxruntime":
        return _onnxruntime_forward(onnx_file())
    if candidate.runtime == "openvino":
        return _openvino_forward(onnx_file(), candidate.precision)
    raise ValueError(f"unknown runtime {candidate.runtime!r}")


def export_onnx(model, path: Path) -> Path:
    """The network as ONNX at ``path`` (written atomically once, reused after)."""
    from radseg.pipeline.export.network_files import write_onnx

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:
        difference = write_onnx(model, tmp)
    logger.info("network exported to %s for onnxruntime/OpenVINO (logits within %.1e of torch's)", path, difference)
    return path


def _torch_forward(candidate: Candidate, network: torch.nn.Module, device: torch.device) -> Forward:
    from radseg.pipeline.predict.inference import _forward

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[candidate.precision]
    if candidate.channels_last:  # weights channels-last too, so oneDNN does not reorder them every call
        network = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)
    return _forward(network, device, dtype, candidate.channels_last)


def _onnxruntime_forward(path: Path) -> Forward:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(windows: torch.Tensor) -> torch.Tensor:
        logits = session.run(None, {"image": _numpy(windows)})[0]
        return torch.from_numpy(logits).to(windows.device)

    return forward


def _openvino_forward(path: Path, precision: str) -> Forward:
    import openvino

    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    request, output = compiled.create_infer_request(), compiled.output(0)

    def forward(windows: torch.Tensor) -> torch.Tensor:
        logits = request.infer({0: _numpy(windows)})[output]
        return torch.from_numpy(np.array(logits, dtype=np.float32, copy=True)).to(windows.device)

    return forward


def _numpy(windows: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(windows.detach().float().cpu().numpy())
