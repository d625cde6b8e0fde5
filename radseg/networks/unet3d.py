"""Our U-Net (Ronneberger et al. 2015; Çiçek et al. 2016 in 3D), in the nnU-Net style.

Encoder stages of ``convs_per_stage`` 3×3×3 convolutions (conv - norm - LeakyReLU); every stage
after the first starts with a stride-2 convolution instead of pooling. The decoder upsamples
(transposed convolution, or linear interpolation then a 1×1×1 convolution), concatenates the skip
and runs another stage. The same class serves 2D (``spatial_dims=2``) for :mod:`unet2p5d`.

Deep supervision: with ``deep_supervision=True`` the network returns, **in train mode only**, a
list ``[full_res, half_res, quarter_res, ...]`` of logits, one per decoder level except the
bottleneck (``len(widths) - 1`` tensors, each ``(B, out_channels, *spatial / 2**i)``). In eval mode
it returns the full-resolution tensor alone, so inference code never sees the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from radseg.networks.receptive_field import conv_back, linear_upsample_back, transposed_conv_back, union
from radseg.networks.registry import Interval, register_network


@dataclass
class UNetParams:
    """``network.params`` of ``unet3d``."""

    #: channels per resolution level; depth = len(widths), input divisor = 2 ** (depth - 1)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    convs_per_stage: int = 2
    norm: Literal["instance", "batch"] = "instance"
    upsample: Literal["transposed", "linear"] = "transposed"
    deep_supervision: bool = False
    negative_slope: float = 0.01

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = []
        if len(self.widths) < 2 or min(self.widths) < 1:
            out.append(f"widths must be at least 2 positive channel counts, not {self.widths}")
        if self.convs_per_stage < 1:
            out.append(f"convs_per_stage must be >= 1, not {self.convs_per_stage}")
        return out


def _norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d, nn.BatchNorm3d)[dims - 2](channels)
    return (nn.InstanceNorm2d, nn.InstanceNorm3d)[dims - 2](channels, affine=True)


def _stage(dims: int, c_in: int, c_out: int, params: UNetParams, first_stride: int) -> nn.Sequential:
    conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
    layers = []
    for i in range(params.convs_per_stage):
        stride = first_stride if i == 0 else 1
        layers += [
            conv(c_in if i == 0 else c_out, c_out, 3, stride=stride, padding=1),
            _norm(params.norm, dims, c_out),
            nn.LeakyReLU(params.negative_slope, inplace=True),
        ]
    return nn.Sequential(*layers)


def _upsampler(dims: int, c_in: int, c_out: int, mode: str) -> nn.Module:
    if mode == "transposed":
        return (nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 2](c_in, c_out, 2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=("bilinear", "trilinear")[dims - 2], align_corners=False),
        (nn.Conv2d, nn.Conv3d)[dims - 2](c_in, c_out, 1),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output classes (logits).
        params: widths, convs per stage, norm, upsampling, deep supervision.

    Input ``(B, in_channels, *spatial)`` with every spatial size divisible by ``2 ** (depth - 1)``;
    output ``(B, out_channels, *spatial)`` (a list in train mode with deep supervision).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, params: UNetParams):
        super().__init__()
        w, dims = params.widths, spatial_dims
        self.encoder = nn.ModuleList(
            _stage(dims, in_channels if i == 0 else w[i - 1], w[i], params, 1 if i == 0 else 2) for i in range(len(w))
        )
        self.upsamplers = nn.ModuleList(_upsampler(dims, w[i + 1], w[i], params.upsample) for i in range(len(w) - 1))
        self.decoder = nn.ModuleList(_stage(dims, 2 * w[i], w[i], params, 1) for i in range(len(w) - 1))
        conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
        self.heads = nn.ModuleList(
            conv(w[i], out_channels, 1) for i in range(len(w) - 1 if params.deep_supervision else 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = {}
        for level in reversed(range(len(self.decoder))):
            x = self.decoder[level](torch.cat([skips[level], self.upsamplers[level](x)], dim=1))
            if level < len(self.heads) and (self.training or level == 0):
                outputs[level] = self.heads[level](x)
        if self.training and len(self.heads) > 1:
            return [outputs[level] for level in range(len(self.heads))]
        return outputs[0]


def unet_rf_interval(params: UNetParams, iv: Interval) -> Interval:
    """Input interval (one axis) that the U-Net output interval ``iv`` depends on."""
    return _decoder_back(params, 0, iv)


def _decoder_back(params: UNetParams, level: int, iv: Interval) -> Interval:
    depth = len(params.widths)
    if level == depth - 1:
        return _encoder_back(params, level, iv)
    for _ in range(params.convs_per_stage):
        iv = conv_back(iv, 3, padding=1)
    if params.upsample == "transposed":
        below = transposed_conv_back(iv, 2, 2)
    else:
        below = linear_upsample_back(iv, 2)
    return union(_encoder_back(params, level, iv), _decoder_back(params, level + 1, below))


def _encoder_back(params: UNetParams, level: int, iv: Interval) -> Interval:
    while level >= 0:
        for i in reversed(range(params.convs_per_stage)):
            iv = conv_back(iv, 3, stride=2 if i == 0 and level > 0 else 1, padding=1)
        level -= 1
    return iv


@register_network(
    "unet3d",
    spatial_dims=3,
    task="segmentation",
    params_class=UNetParams,
    divisor=lambda p: 2 ** (len(p.widths) - 1),
    rf_interval=unet_rf_interval,
    description="our 3D U-Net: strided-conv encoder, skips, LeakyReLU, optional deep supervision",
)
def build_unet3d(params: UNetParams, in_channels: int, out_channels: int) -> UNet:
    """The 3D U-Net of ``params``."""
    return UNet(3, in_channels, out_channels, params)
