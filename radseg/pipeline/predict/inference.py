"""The one sliding-window predictor, shared by validation and by inference.

:func:`sliding_window_predict` runs a network over a whole volume in ``roi_size`` windows
(MONAI's :func:`~monai.inferers.sliding_window_inference`), blends overlapping windows with a
Gaussian or constant weight, optionally averages mirrored copies over the axes flipped in training
(test-time augmentation, :mod:`.mirroring`), and keeps only the full-resolution head of a
deep-supervision network. Given a body mask, windows that hold no body voxel are not run
(:mod:`.window_skip`): each voxel is the blend of the windows that did run over it, and voxels no
window ran on are background with probability 1; the log says how many windows ran of the full
tiling.
:class:`SlidingWindowPredictor` is a thin class holding the same arguments.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

from radseg.configs.schema import InferenceConfig
from radseg.errors import ConfigError
from radseg.pipeline.core.memory_format import (  # noqa: F401 (re-exported)
    contiguous_weights, plain_tensor, use_channels_last)
from radseg.progress import terminal_progress
from radseg.pipeline.predict.mirroring import mirror_flips
from radseg.pipeline.predict.window_skip import WindowRunner, batched_mask, pad_like_monai, ran_only

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting on a device, or None for full precision.

    On CUDA, ``"auto"`` picks bf16 where the GPU supports it, else fp16. On CPU, ``"auto"``
    means float32: bf16 autocast is only worth it with native bf16 arithmetic (AVX512-BF16 or
    AMX, see :func:`cpu_has_native_bf16`), and there (an AMD EPYC with AVX512-BF16,
    ``benchmarks/bf16_training.py``, 3 seeds) it trained the demo 1.57x faster but lost 0.109
    held-out tumour Dice against float32 (liver -0.004), outside the 0.01 allowed; an explicit
    ``"bf16"`` turns it on (with a warning where the CPU would emulate it: conv3d ran about 300x
    slower than float32 on a 2-core AVX2 CPU), and ``"fp16"`` means float32. The loss and the Dice
    are computed in float32 either way.

    Args:
        amp: ``"auto"``, ``"none"``, ``"bf16"`` or ``"fp16"`` (``train.amp``).
        device: the device the network runs on.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or None.

    Raises:
        ConfigError: an unknown setting.
    """
    if amp not in ("auto", "none", *_AMP_DTYPES):
        raise ConfigError(f"amp must be one of auto, none, bf16, fp16, not {amp!r}")
    device = torch.device(device)
    if amp == "none" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cpu":
        if amp == "bf16" and not cpu_has_native_bf16():
            logger.warning("amp=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): PyTorch emulates it, "
                           "far slower than float32 (conv3d about 300x on an AVX2 CPU); use amp=auto for float32")
        return torch.bfloat16 if amp == "bf16" else None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _AMP_DTYPES[amp]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX tiles, as PyTorch detects them)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def full_resolution_output(output: Any) -> torch.Tensor:
    """The full-resolution head of a network output.

    Deep-supervision networks in eval mode return either the full-resolution tensor (MONAI's
    DynUNet) or a list/tuple of heads, full resolution first; a plain ``(B, C, X, Y, Z)``
    tensor passes through.
    """
    if isinstance(output, (list, tuple)):
        return output[0]
    if isinstance(output, dict):
        raise TypeError("network returned a dict; radseg networks must return a tensor or a list of heads")
    return output


def sliding_window_predict(
    network: torch.nn.Module,
    image: torch.Tensor,
    inference_cfg: InferenceConfig,
    roi_size: Sequence[int] | None = None,
    *,
    device: torch.device | str | None = None,
    amp: torch.dtype | None = None,
    softmax: bool = False,
    output_device: torch.device | str | None = None,
    progress: bool = False,
    channels_last: bool = False,
    body_mask: torch.Tensor | None = None,
    mirror_axes: Sequence[int] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Predict a whole volume window by window.

    Args:
        network: the model, already on ``device`` and in eval mode.
        image: ``(B, C, X, Y, Z)`` (or ``(B, C, X, Y)`` for 2D networks), any device.
        inference_cfg: ``overlap``, ``sw_batch_size``, ``blend_mode``, ``mirror`` and,
            when set, ``roi_size``.
        roi_size: the window size when ``inference_cfg.roi_size`` is None (``train.roi_size``).
        device: where the windows run (default: the network's device).
        amp: autocast dtype (see :func:`resolve_amp`); None for full precision.
        softmax: return class probabilities instead of logits.
        output_device: where the blended volume is kept (default: the image's device), so a
            large scan can stay in CPU memory while windows run on the GPU.
        progress: show a tqdm bar over the windows.
        channels_last: feed 3D windows as ``channels_last_3d`` tensors (see :func:`use_channels_last`).
        body_mask: optional boolean ``(B, 1, X, Y, Z)`` (or ``(X, Y, Z)``) mask on the image's grid;
            windows without a True voxel are not run. Each voxel is the blend of the windows that
            ran over it; voxels no window ran on are background with probability 1.
        mirror_axes: the spatial axes to mirror when ``inference_cfg.mirror`` is set (the ones
            flipped in training, :func:`radseg.pipeline.predict.mirroring.trained_mirror_axes`);
            None mirrors every axis, ``()`` none.
        forward: a ready ``forward(windows) -> float32 logits`` that replaces the network, ``amp``
            and ``channels_last`` (a runtime from :func:`radseg.pipeline.predict.runtime.choose_runtime`).

    Returns:
        ``(B, out_channels, X, Y, Z)`` float32 logits (or probabilities), the image's spatial shape.

    Raises:
        ConfigError: no window size is given, it has the wrong number of dimensions, or a mirror
            axis is not a spatial axis.
    """
    window = _window_size(inference_cfg, roi_size, image)
    if device is None:
        device = next(network.parameters()).device
    output_device = image.device if output_device is None else output_device
    spatial_dims = image.ndim - 2
    flips = mirror_flips(mirror_axes, spatial_dims) if inference_cfg.mirror else [()]
    runner = WindowRunner(forward or _forward(network, device, amp, channels_last and spatial_dims == 3))

    def _one_pass(volume: torch.Tensor, mask: torch.Tensor | None):
        mask = None if mask is None else pad_like_monai(mask, window)
        return sliding_window_inference(
            volume, window, inference_cfg.sw_batch_size, runner,
            overlap=inference_cfg.overlap, mode=inference_cfg.blend_mode,
            sw_device=device, device=output_device, progress=terminal_progress(progress), with_coord=True,
            mask=mask,
        )

    mask = batched_mask(body_mask, image)
    with torch.inference_mode():
        logits = _blend_passes(_one_pass, image, mask, flips)
        if mask is not None:
            logger.info("sliding window: ran %d of %d windows (%d outside the body skipped)",
                        runner.ran, runner.total, runner.total - runner.ran)
        return torch.softmax(logits, dim=1) if softmax else logits


def _forward(network: torch.nn.Module, device, amp: torch.dtype | None, channels_last: bool):
    """``forward(windows) -> float32 logits`` of the full-resolution head, under autocast."""

    def forward(windows: torch.Tensor) -> torch.Tensor:
        if channels_last:
            windows = windows.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, amp):
            return full_resolution_output(network(windows)).float()

    return forward


def _blend_passes(one_pass, image: torch.Tensor, mask: torch.Tensor | None,
                  flips: list[tuple[int, ...]]) -> torch.Tensor:
    """Sum one pass per flip (each flipped back); divide by the weight of the windows that ran.

    Without a mask every window runs and this is the plain mean over the flips.
    """
    total = ran = None
    for flip in flips:
        out = one_pass(_flip(image, flip), None if mask is None else _flip(mask, flip))
        logits, covered = out if isinstance(out, (tuple, list)) else (out, None)
        logits = _flip(_plain(logits), flip)
        total = logits if total is None else total.add_(logits)
        if covered is not None:
            covered = _flip(_plain(covered), flip)
            ran = covered if ran is None else ran.add_(covered)
    if ran is None:
        return total / len(flips) if len(flips) > 1 else total
    return ran_only(total, ran)


def _flip(tensor: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return torch.flip(tensor, dims) if dims else tensor


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def _window_size(inference_cfg: InferenceConfig, roi_size: Sequence[int] | None, image: torch.Tensor) -> list[int]:
    window = inference_cfg.roi_size if inference_cfg.roi_size is not None else roi_size
    if window is None:
        raise ConfigError("no sliding-window size: set inference.roi_size or pass train.roi_size")
    if len(window) != image.ndim - 2:
        raise ConfigError(
            f"the window {list(window)} has {len(window)} sizes but the image {tuple(image.shape)} has "
            f"{image.ndim - 2} spatial dimensions; give one size per spatial axis"
        )
    return [int(s) for s in window]


class SlidingWindowPredictor:
    """A network with its sliding-window settings: ``predictor(image) -> logits``.

    A thin holder around :func:`sliding_window_predict`, so validation and inference
    pass one object around instead of six arguments.

    Args:
        network: the model (moved to ``device`` by the caller).
        inference_cfg: the ``inference`` config section.
        roi_size: the window size used when ``inference_cfg.roi_size`` is None.
        device: where the windows run.
        amp: autocast dtype or None.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inference_cfg: InferenceConfig,
        roi_size: Sequence[int] | None = None,
        *,
        device: torch.device | str | None = None,
        amp: torch.dtype | None = None,
    ) -> None:
        self.network = network
        self.inference_cfg = inference_cfg
        self.roi_size = roi_size
        self.device = device
        self.amp = amp

    def __call__(self, image: torch.Tensor, *, softmax: bool = False, **kwargs: Any) -> torch.Tensor:
        """Predict ``image`` ``(B, C, X, Y, Z)``; see :func:`sliding_window_predict`."""
        was_training = self.network.training
        self.network.eval()
        try:
            return sliding_window_predict(
                self.network, image, self.inference_cfg, self.roi_size,
                device=self.device, amp=self.amp, softmax=softmax, **kwargs,
            )
        finally:
            self.network.train(was_training)
