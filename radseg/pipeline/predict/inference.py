"""The one sliding-window predictor, shared by validation and by inference.

:func:`sliding_window_predict` runs a network over a whole volume in ``roi_size`` windows
(MONAI's :func:`~monai.inferers.sliding_window_inference`), blends overlapping windows with a
Gaussian or constant weight, optionally averages mirrored copies (test-time augmentation), and
keeps only the full-resolution head of a deep-supervision network. Given a body mask, windows
that hold no body voxel are not run (their logits are zero, which leaves every argmax that a run
window covers unchanged and makes voxels covered by skipped windows only background); the log
says how many windows ran of the full tiling.
:class:`SlidingWindowPredictor` is a thin class holding the same arguments.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any, Sequence

import torch
from monai.inferers import sliding_window_inference

from radseg.configs.schema import InferenceConfig
from radseg.errors import ConfigError
from radseg.pipeline.core.memory_format import (  # noqa: F401 (re-exported)
    contiguous_weights, plain_tensor, use_channels_last)

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting on a device, or None for full precision.

    On CUDA, ``"auto"`` picks bf16 where the GPU supports it, else fp16. On CPU, ``"auto"``
    means float32: bf16 autocast is only worth it with native bf16 arithmetic (AVX512-BF16 or
    AMX, see :func:`cpu_has_native_bf16`) and has not been measured faster there yet; an explicit
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
        body_mask: optional boolean ``(B, 1, X, Y, Z)`` (or ``(X, Y, Z)``) mask of the body on
            the image's grid; windows without a body voxel are skipped (zero logits).

    Returns:
        ``(B, out_channels, X, Y, Z)`` float32 logits (or probabilities), the image's spatial shape.

    Raises:
        ConfigError: no window size is given, or it has the wrong number of dimensions.
    """
    window = _window_size(inference_cfg, roi_size, image)
    if device is None:
        device = next(network.parameters()).device
    output_device = image.device if output_device is None else output_device
    spatial_dims = image.ndim - 2
    runner = _WindowRunner(network, device, amp, channels_last and spatial_dims == 3)

    def _one_pass(volume: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = None if mask is None else _pad_like_monai(mask, window)
        return sliding_window_inference(
            volume, window, inference_cfg.sw_batch_size, runner,
            overlap=inference_cfg.overlap, mode=inference_cfg.blend_mode,
            sw_device=device, device=output_device, progress=progress, with_coord=True, mask=mask,
        )

    mask = _batched_mask(body_mask, image)
    with torch.inference_mode():
        if inference_cfg.mirror:
            logits = _mirrored_average(_one_pass, image, spatial_dims, mask)
        else:
            logits = _one_pass(image, mask)
        logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits
        if mask is not None:
            logger.info("sliding window: ran %d of %d windows (%d outside the body skipped)",
                        runner.ran, runner.total, runner.total - runner.ran)
        return torch.softmax(logits, dim=1) if softmax else logits


class _WindowRunner:
    """Runs the network on the windows that hold body and counts how many ran of the tiling.

    Called by MONAI's sliding window with each batch of windows and their coordinates; windows
    without a body voxel get zero logits without a forward pass.
    """

    def __init__(self, network: torch.nn.Module, device, amp: torch.dtype | None, channels_last: bool = False) -> None:
        self.network, self.device, self.amp = network, device, amp
        self.channels_last = channels_last
        self.ran = 0
        self.total = 0
        self.channels: int | None = None

    def __call__(self, patch: torch.Tensor, coords: list, mask: torch.Tensor | None) -> torch.Tensor:
        keep = _windows_with_body(mask, coords, patch.shape[0])
        if self.channels is None and not bool(keep.any()):
            keep[0] = True  # one window runs to learn the output channels
        self.ran += int(keep.sum())
        self.total += patch.shape[0]
        if not bool(keep.any()):
            return patch.new_zeros((patch.shape[0], self.channels, *patch.shape[2:]), dtype=torch.float32)
        windows = patch if bool(keep.all()) else patch[keep]
        if self.channels_last:
            windows = windows.contiguous(memory_format=torch.channels_last_3d)
        with autocast(self.device, self.amp):
            ran = full_resolution_output(self.network(windows)).float()
        self.channels = ran.shape[1]
        if bool(keep.all()):
            return ran
        out = ran.new_zeros((patch.shape[0], *ran.shape[1:]))
        out[keep] = ran
        return out


def _batched_mask(body_mask: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor | None:
    """The body mask as a boolean CPU tensor ``(B, 1, *spatial)`` matching the image."""
    if body_mask is None:
        return None
    mask = plain_tensor(body_mask).bool().cpu()
    while mask.ndim < image.ndim:
        mask = mask[None]
    if tuple(mask.shape[2:]) != tuple(image.shape[2:]):
        raise ValueError(f"body_mask has spatial shape {tuple(mask.shape[2:])} but the image has "
                         f"{tuple(image.shape[2:])}; expected the same grid")
    return mask.expand(image.shape[0], 1, *image.shape[2:])


def _pad_like_monai(mask: torch.Tensor, window: list[int]) -> torch.Tensor:
    """Pad the mask as sliding_window_inference pads a volume smaller than the window."""
    pad = []
    for size, roi in reversed(list(zip(mask.shape[2:], window))):
        diff = max(roi - size, 0)
        pad += [diff // 2, diff - diff // 2]
    return torch.nn.functional.pad(mask, pad) if any(pad) else mask


def _windows_with_body(mask: torch.Tensor | None, coords: list, count: int) -> torch.Tensor:
    """Boolean ``(count,)``: which windows of the batch hold a body voxel (all, without a mask)."""
    if mask is None:
        return torch.ones(count, dtype=torch.bool)
    return torch.tensor([bool(mask[tuple(window)].any()) for window in coords], dtype=torch.bool)


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


def _mirrored_average(one_pass, image: torch.Tensor, spatial_dims: int,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average predictions over every combination of flipped spatial axes (nnU-Net's mirroring)."""
    axes = list(range(2, 2 + spatial_dims))
    total = None
    count = 0
    for n in range(len(axes) + 1):
        for flip in itertools.combinations(axes, n):
            flipped = torch.flip(image, flip) if flip else image
            flipped_mask = None if mask is None else (torch.flip(mask, flip) if flip else mask)
            out = one_pass(flipped, flipped_mask)
            out = torch.flip(out, flip) if flip else out
            total = out if total is None else total + out
            count += 1
    return total / count


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
