"""The seed article's 2D liver-slice classifier, corrected to work at any input size.

As printed in the seed, two conv(3×3)-BN-ReLU-maxpool(2) blocks feed ``nn.Linear(32 * 4 * 4, 2)``;
a 64×64 slice leaves 32×16×16 features, so the first forward pass fails with a shape mismatch.
Here an adaptive average pool brings any feature map to ``pool_size × pool_size`` first, so the
linear layer always gets ``widths[-1] * pool_size ** 2`` features (inputs of at least 4×4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from radseg.networks.registry import register_network


@dataclass
class SimpleCNN2DParams:
    """``network.params`` of ``simple_cnn2d``."""

    widths: list[int] = field(default_factory=lambda: [16, 32])
    #: side of the adaptive pooling grid before the linear layer
    pool_size: int = 4
    dropout: float = 0.0

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = []
        if not self.widths or min(self.widths) < 1:
            out.append(f"widths must be positive channel counts, not {self.widths}")
        if self.pool_size < 1:
            out.append(f"pool_size must be >= 1, not {self.pool_size}")
        if not 0 <= self.dropout < 1:
            out.append(f"dropout must be in [0, 1), not {self.dropout}")
        return out


class SimpleCNN2D(nn.Module):
    """Slice classifier. Input ``(B, C, H, W)`` with H, W >= 2 ** len(widths); output ``(B, num_classes)``."""

    def __init__(self, in_channels: int, num_classes: int, params: SimpleCNN2DParams):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for width in params.widths:
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            c_in = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(params.pool_size))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(params.dropout), nn.Linear(c_in * params.pool_size**2, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_network(
    "simple_cnn2d",
    spatial_dims=2,
    task="classification",
    params_class=SimpleCNN2DParams,
    divisor=1,
    min_size=4,
    description="the seed's 2D slice classifier (conv-BN-ReLU-pool x2, linear), any input size",
)
def build_simple_cnn2d(params: SimpleCNN2DParams, in_channels: int, out_channels: int) -> SimpleCNN2D:
    """The slice classifier of ``params``; ``out_channels`` is the number of classes."""
    return SimpleCNN2D(in_channels, out_channels, params)
