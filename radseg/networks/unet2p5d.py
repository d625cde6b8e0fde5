"""The seed article's "stacked 2D" (2.5D) network: a 2D U-Net fed ``k`` neighbouring slices.

The network takes ``(B, in_channels * slices, H, W)``: for each image channel, the ``slices``
axial slices centred on the target slice, channel-major (channel 0's slices first), and predicts
the centre slice ``(B, out_channels, H, W)``. :func:`forward_volume` runs it over a whole volume
``(B, C, H, W, D)`` slice by slice (edge slices repeat the border), for 3D segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from radseg.networks.registry import Interval, register_network
from radseg.networks.unet3d import UNet, UNetParams, unet_rf_interval


@dataclass
class UNet2p5DParams:
    """``network.params`` of ``unet2p5d``."""

    #: neighbouring slices fed as channels (odd: the centre one is predicted)
    slices: int = 5
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    convs_per_stage: int = 2
    norm: Literal["instance", "batch"] = "instance"
    upsample: Literal["transposed", "linear"] = "transposed"
    negative_slope: float = 0.01

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = self.unet_params().problems()
        if self.slices < 1 or self.slices % 2 == 0:
            out.append(f"slices must be a positive odd number (the centre slice is predicted), not {self.slices}")
        return out

    def unet_params(self) -> UNetParams:
        """The 2D U-Net part of these params."""
        return UNetParams(self.widths, self.convs_per_stage, self.norm, self.upsample, False, self.negative_slope)


def forward_volume(model: nn.Module, volume: torch.Tensor, slices: int, batch_slices: int = 16) -> torch.Tensor:
    """Run a 2.5D network over every axial slice of a volume.

    Args:
        model: a ``unet2p5d`` network (input ``(N, C * slices, H, W)``).
        volume: ``(B, C, H, W, D)``; slices are taken along the last axis.
        slices: neighbouring slices per prediction (the model's ``slices_in``).
        batch_slices: slices per forward pass (bounds memory).

    Returns:
        ``(B, out_channels, H, W, D)`` logits.
    """
    b, c, h, w, d = volume.shape
    half = slices // 2
    padded = F.pad(volume, (half, half, 0, 0, 0, 0), mode="replicate") if half else volume
    # windows: (B, C, H, W, D, slices) -> (B * D, C * slices, H, W), channel-major
    windows = padded.unfold(-1, slices, 1).permute(0, 4, 1, 5, 2, 3).reshape(b * d, c * slices, h, w)
    outputs = [model(windows[i : i + batch_slices]) for i in range(0, b * d, batch_slices)]
    out = torch.cat(outputs, dim=0)
    return out.reshape(b, d, -1, h, w).permute(0, 2, 3, 4, 1)


def unet2p5d_rf_interval(params: UNet2p5DParams, iv: Interval) -> Interval:
    """In-plane input interval that the output interval ``iv`` depends on (through-plane: ``slices``)."""
    return unet_rf_interval(params.unet_params(), iv)


@register_network(
    "unet2p5d",
    spatial_dims=2,
    task="segmentation",
    params_class=UNet2p5DParams,
    divisor=lambda p: 2 ** (len(p.widths) - 1),
    rf_interval=unet2p5d_rf_interval,
    description="2.5D: 2D U-Net on k neighbouring slices as channels, predicts the centre slice",
)
def build_unet2p5d(params: UNet2p5DParams, in_channels: int, out_channels: int) -> UNet:
    """The 2D U-Net taking ``in_channels * params.slices`` channels."""
    return UNet(2, in_channels * params.slices, out_channels, params.unet_params())
