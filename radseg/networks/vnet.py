"""Our V-Net, after Milletari, Navab & Ahmadi, "V-Net" (3DV 2016).

Residual stages of 1-3 convolutions of 5×5×5 with PReLU; 2×2×2 stride-2 convolutions halve the
resolution and double the channels; transposed 2×2×2 convolutions bring it back, the skip is
concatenated, and the decoder stage at level ``l`` works on ``2 * widths[l]`` channels (as in the
paper: 256 after the first up-step). A 1×1×1 convolution gives the logits (the paper's softmax is
left to the loss). A normalisation layer after each convolution is optional (``norm``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from radseg.networks.receptive_field import conv_back, transposed_conv_back, union
from radseg.networks.registry import Interval, register_network


@dataclass
class VNetParams:
    """``network.params`` of ``vnet``."""

    #: channels per level; divisor = 2 ** (len(widths) - 1)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    #: 5×5×5 convolutions per stage, per level (the decoder stage of level l uses the same count)
    convs_per_stage: list[int] = field(default_factory=lambda: [1, 2, 3, 3, 3])
    norm: Literal["instance", "batch", "none"] = "instance"

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = []
        if len(self.widths) < 2 or min(self.widths) < 1:
            out.append(f"widths must be at least 2 positive channel counts, not {self.widths}")
        if len(self.convs_per_stage) != len(self.widths) or min(self.convs_per_stage, default=0) < 1:
            out.append(
                f"convs_per_stage must give one count >= 1 per level ({len(self.widths)}), not {self.convs_per_stage}"
            )
        return out


def _conv_unit(c_in: int, c_out: int, kernel: int, stride: int, norm: str) -> nn.Sequential:
    layers = [nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0)]
    if norm == "batch":
        layers.append(nn.BatchNorm3d(c_out))
    elif norm == "instance":
        layers.append(nn.InstanceNorm3d(c_out, affine=True))
    layers.append(nn.PReLU(c_out))
    return nn.Sequential(*layers)


class _ResidualStage(nn.Module):
    """``n`` 5×5×5 conv units; the stage input is added before the last PReLU's output (Milletari)."""

    def __init__(self, channels: int, num_convs: int, norm: str):
        super().__init__()
        self.convs = nn.Sequential(*(_conv_unit(channels, channels, 5, 1, norm) for _ in range(num_convs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + x


class VNet(nn.Module):
    """V-Net. Input ``(B, C, H, W, D)``, sizes divisible by ``2 ** (len(widths) - 1)``; output same size."""

    def __init__(self, in_channels: int, out_channels: int, params: VNetParams):
        super().__init__()
        w, n, norm = params.widths, params.convs_per_stage, params.norm
        self.stem = nn.Conv3d(in_channels, w[0], 1) if in_channels != w[0] else nn.Identity()
        self.enc = nn.ModuleList(_ResidualStage(w[i], n[i], norm) for i in range(len(w)))
        self.down = nn.ModuleList(_conv_unit(w[i], w[i + 1], 2, 2, norm) for i in range(len(w) - 1))
        up_in = [2 * w[i + 1] if i + 1 < len(w) - 1 else w[i + 1] for i in range(len(w) - 1)]
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose3d(up_in[i], w[i], 2, stride=2), nn.PReLU(w[i])) for i in range(len(w) - 1)
        )
        self.dec = nn.ModuleList(_ResidualStage(2 * w[i], n[i], norm) for i in range(len(w) - 1))
        self.head = nn.Conv3d(2 * w[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.enc[0](self.stem(x))
        skips = [x]
        for down, stage in zip(self.down, self.enc[1:]):
            x = stage(down(x))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(len(self.dec))):
            x = self.dec[level](torch.cat([skips[level], self.up[level](x)], dim=1))
        return self.head(x)


def vnet_rf_interval(params: VNetParams, iv: Interval) -> Interval:
    """Input interval (one axis) that the V-Net output interval ``iv`` depends on."""
    return _decoder_back(params, 0, iv)


def _decoder_back(params: VNetParams, level: int, iv: Interval) -> Interval:
    if level == len(params.widths) - 1:
        return _encoder_back(params, level, iv)
    for _ in range(params.convs_per_stage[level]):
        iv = conv_back(iv, 5, padding=2)
    below = transposed_conv_back(iv, 2, 2)
    return union(_encoder_back(params, level, iv), _decoder_back(params, level + 1, below))


def _encoder_back(params: VNetParams, level: int, iv: Interval) -> Interval:
    while level >= 0:
        for _ in range(params.convs_per_stage[level]):
            iv = conv_back(iv, 5, padding=2)
        if level > 0:
            iv = conv_back(iv, 2, stride=2)
        level -= 1
    return iv


@register_network(
    "vnet",
    spatial_dims=3,
    task="segmentation",
    params_class=VNetParams,
    divisor=lambda p: 2 ** (len(p.widths) - 1),
    rf_interval=vnet_rf_interval,
    description="our V-Net (Milletari 2016): 5^3 residual stages, PReLU, strided/transposed 2^3 convs",
)
def build_vnet(params: VNetParams, in_channels: int, out_channels: int) -> VNet:
    """The V-Net of ``params``."""
    return VNet(in_channels, out_channels, params)
