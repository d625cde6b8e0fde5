"""The network alone as TorchScript or ONNX, checked against the checkpoint's own logits.

Both are traced on one window of the run's ``roi_size`` (the sliding window only ever feeds such
windows); TorchScript keeps every axis free, ONNX keeps the batch axis dynamic
(opset :data:`~radseg.pipeline.export.describe.ONNX_OPSET`, the TorchScript-based exporter, which
needs no ``onnxscript`` and works offline). After writing, the file is run on a random window and
its logits compared with the network's: more than :data:`TOLERANCE` apart is refused.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from radseg.errors import DataError
from radseg.pipeline.export.describe import ONNX_OPSET, window_settings

logger = logging.getLogger(__name__)

#: largest absolute logit difference accepted between the exported network and the checkpoint (fp32)
TOLERANCE = 1e-4


def example_window(model, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random float32 window ``(batch, in_channels, *roi_size)``, as the sliding window feeds."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, model.in_channels, *window_settings(model)["roi_size"])
    return torch.randn(shape, generator=generator)


def network_logits(model, window: torch.Tensor) -> torch.Tensor:
    """The checkpoint network's full-resolution logits on ``window`` (CPU, float32)."""
    from radseg.pipeline.predict.inference import full_resolution_output

    with torch.no_grad():
        return full_resolution_output(model.network.cpu()(window)).float()


def write_torchscript(model, path: Path) -> float:
    """Trace the network to ``path`` (TorchScript); returns the max logit difference on a random window."""
    network = model.network.cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice and tracer hints
        traced = torch.jit.trace(network, example_window(model, batch=1), check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
        window = example_window(model, seed=1)
        return _check(path, loaded(window), network_logits(model, window))


def write_onnx(model, path: Path) -> float:
    """Export the network to ``path`` (ONNX, dynamic batch); returns the max logit difference.

    Raises:
        DataError: the ``onnx`` package is missing (``pip install radseg[export]``).
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise DataError("--format onnx needs the onnx package, which is not installed; fix: "
                        "pip install 'radseg[export]' (onnx, onnxruntime)") from err
    network = model.network.cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(network, (example_window(model, batch=1),), str(path), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    window = example_window(model, seed=1)
    exported = onnx_logits(path, window)
    if exported is None:
        logger.warning("onnxruntime is not installed: %s was written but not run against the checkpoint", path)
        return float("nan")
    return _check(path, torch.from_numpy(exported), network_logits(model, window))


def onnx_logits(path: Path, window: torch.Tensor) -> np.ndarray | None:
    """The ONNX network's logits on ``window`` through onnxruntime (None when it is not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": window.numpy()})[0]


def _check(path: Path, exported: torch.Tensor, expected: torch.Tensor) -> float:
    difference = float((exported.float() - expected).abs().max())
    logger.info("%s: logits within %.2e of the checkpoint's on a random window", path.name, difference)
    if not difference <= TOLERANCE:
        raise DataError(f"the exported network {path.name} gives logits {difference:.2e} away from the "
                        f"checkpoint's (tolerance {TOLERANCE:g}); the network has input-dependent control flow "
                        "the tracer cannot keep; fix: export --format monai-bundle of a MONAI network, or report it")
    return difference
