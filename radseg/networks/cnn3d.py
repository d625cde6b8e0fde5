"""A plain fully convolutional volumetric CNN: the seed article's "3D CNN".

Stacked 3×3×3 convolutions (conv - norm - ReLU) with growing dilation and no downsampling, then a
1×1×1 convolution to the logits. Every output voxel sees exactly
``1 + 2 * sum(dilations)`` input voxels per axis, whatever the input size, and any input size works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from radseg.networks.receptive_field import conv_back
from radseg.networks.registry import Interval, register_network


@dataclass
class CNN3DParams:
    """``network.params`` of ``cnn3d``."""

    #: output channels of each 3×3×3 layer
    widths: list[int] = field(default_factory=lambda: [16, 16, 32, 32, 32, 32])
    #: dilation of each layer (same length as widths); receptive field = 1 + 2 * sum(dilations)
    dilations: list[int] = field(default_factory=lambda: [1, 1, 2, 4, 8, 1])
    norm: Literal["instance", "batch", "none"] = "instance"

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        if not self.widths or len(self.widths) != len(self.dilations):
            return [f"widths and dilations must be non-empty and equally long, not {self.widths} and {self.dilations}"]
        if min(self.widths) < 1 or min(self.dilations) < 1:
            return [f"widths and dilations must be positive, not {self.widths} and {self.dilations}"]
        return []


def _layer(c_in: int, c_out: int, dilation: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, 3, padding=dilation, dilation=dilation)]
    if norm == "batch":
        layers.append(nn.BatchNorm3d(c_out))
    elif norm == "instance":
        layers.append(nn.InstanceNorm3d(c_out, affine=True))
    return layers + [nn.ReLU(inplace=True)]


class CNN3D(nn.Sequential):
    """Dilated 3D CNN. Input ``(B, C, H, W, D)`` of any size; output ``(B, out_channels, H, W, D)``."""

    def __init__(self, in_channels: int, out_channels: int, params: CNN3DParams):
        layers: list[nn.Module] = []
        c_in = in_channels
        for width, dilation in zip(params.widths, params.dilations):
            layers += _layer(c_in, width, dilation, params.norm)
            c_in = width
        layers.append(nn.Conv3d(c_in, out_channels, 1))
        super().__init__(*layers)


def cnn3d_rf_interval(params: CNN3DParams, iv: Interval) -> Interval:
    """Input interval (one axis) that the output interval ``iv`` depends on."""
    for dilation in reversed(params.dilations):
        iv = conv_back(iv, 3, dilation=dilation, padding=dilation)
    return iv


@register_network(
    "cnn3d",
    spatial_dims=3,
    task="segmentation",
    params_class=CNN3DParams,
    divisor=1,
    rf_interval=cnn3d_rf_interval,
    description="plain dilated 3D CNN, no downsampling (the seed's 3D CNN)",
)
def build_cnn3d(params: CNN3DParams, in_channels: int, out_channels: int) -> CNN3D:
    """The dilated 3D CNN of ``params``."""
    return CNN3D(in_channels, out_channels, params)
