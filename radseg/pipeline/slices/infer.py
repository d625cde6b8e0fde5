"""Per-slice probabilities from a slice network, and a trained slice model loaded from its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radseg.configs.loader import load_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import DataError
from radseg.pipeline.predict.inference import autocast, resolve_amp
from radseg.transforms.slices import with_context

#: slices per forward pass of a slice (non-sequence) network at inference
INFERENCE_BATCH = 64


@dataclass
class SliceModel:
    """A trained slice classifier, ready for inference.

    Attributes:
        network: in eval mode, on ``device``.
        cfg: the run's config (``train.roi_size`` in-plane size, ``slices`` settings).
        preprocess: the resolved preprocessing (``ResolvedPreprocess.to_dict()``).
        threshold: chosen on validation (or ``slices.threshold``).
        sequence: the network takes z sequences (``cnn_rnn2d``).
        device: where the network runs.
        amp: autocast dtype or None.
    """

    network: torch.nn.Module
    cfg: RadsegConfig
    preprocess: dict
    threshold: float
    sequence: bool
    device: torch.device
    amp: torch.dtype | None = None

    @property
    def context(self) -> int:
        """2.5D slices per sample."""
        return self.cfg.slices.context_slices


def load_slice_model(checkpoint: str | Path | dict, device: str | torch.device = "auto") -> SliceModel:
    """Build a slice run's network from its ``best.pt`` (read with ``weights_only=True``).

    Args:
        checkpoint: the path, or the loaded checkpoint dict.
        device: "auto" (CUDA when present), "cpu", "cuda" or a device.

    Raises:
        DataError: unreadable, or not a checkpoint of ``radseg slices train``.
    """
    from radseg.networks import build_network, get_entry
    from radseg.pipeline.core.checkpoint import load_checkpoint
    from radseg.pipeline.core.distributed import pick_device

    saved = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if "threshold" not in saved or "slices" not in saved.get("config", {}):
        raise DataError(f"checkpoint {checkpoint if not isinstance(checkpoint, dict) else ''} is not a slice "
                        "classifier (no threshold or slices config); pass RUN/best.pt of `radseg slices train`")
    cfg = load_config(saved["config"])
    network = build_network(cfg.network, in_channels=saved["in_channels"] * cfg.slices.context_slices,
                            out_channels=saved["out_channels"])
    network.load_state_dict(saved["model"])
    run_device = device if isinstance(device, torch.device) else pick_device(device)
    network.to(run_device).eval()
    return SliceModel(network, cfg, dict(saved["preprocess"]), float(saved["threshold"]),
                      get_entry(cfg.network.name).sequence, run_device, resolve_amp(cfg.train.amp, run_device))


def slice_probabilities(network: torch.nn.Module, stack: torch.Tensor, context: int, sequence: bool, *,
                        device: torch.device, amp: torch.dtype | None = None) -> np.ndarray:
    """The positive-class probability of every slice of a stack.

    Args:
        network: a 2-class slice network in eval mode.
        stack: ``(Z, C, H, W)`` resized slices (see :func:`radseg.transforms.slices.slice_stack`).
        context: 2.5D slices per sample.
        sequence: the network takes the whole stack as one z sequence.
        device, amp: where and in which precision to run.

    Returns:
        ``(Z,)`` float64 probabilities.
    """
    chunks = [torch.arange(len(stack))] if sequence else torch.arange(len(stack)).split(INFERENCE_BATCH)
    out = []
    with torch.no_grad():
        for chunk in chunks:
            batch = with_context(stack, chunk, context).float().to(device)
            with autocast(device, amp):
                logits = network(batch)
            out.append(torch.softmax(logits.float(), dim=-1)[..., 1].cpu())
    return torch.cat(out).double().numpy()
