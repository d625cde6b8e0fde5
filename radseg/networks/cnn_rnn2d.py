"""A CNN+RNN slice classifier: per-slice CNN features, then a GRU or LSTM along z.

The seed article pairs CNNs with RNNs for context between slices: a slice whose neighbours show
liver probably shows liver too. Each slice of a sequence is encoded by the seed's CNN blocks (the
same conv-BN-ReLU-pool stack as ``simple_cnn2d``), projected, and the sequence of features runs
through a (by default bidirectional) recurrent layer; every slice gets its own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from radseg.networks.registry import register_network
from radseg.networks.simple_cnn2d import SimpleCNN2D, SimpleCNN2DParams


@dataclass
class CNNRNN2DParams:
    """``network.params`` of ``cnn_rnn2d``."""

    widths: list[int] = field(default_factory=lambda: [16, 32])
    pool_size: int = 4
    rnn: Literal["gru", "lstm"] = "gru"
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.0

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = SimpleCNN2DParams(self.widths, self.pool_size, self.dropout).problems()
        if self.hidden_size < 1 or self.num_layers < 1:
            out.append(f"hidden_size and num_layers must be >= 1, not {self.hidden_size} and {self.num_layers}")
        return out


class CNNRNN2D(nn.Module):
    """Sequence slice classifier.

    Input ``(B, L, C, H, W)``: B sequences of L consecutive axial slices (in z order); output
    ``(B, L, num_classes)``. A 4D input ``(L, C, H, W)`` is one sequence; output ``(L, num_classes)``.
    """

    def __init__(self, in_channels: int, num_classes: int, params: CNNRNN2DParams):
        super().__init__()
        cnn = SimpleCNN2DParams(list(params.widths), params.pool_size, params.dropout)
        self.features = SimpleCNN2D(in_channels, num_classes, cnn).features
        self.project = nn.Sequential(
            nn.Flatten(), nn.Dropout(params.dropout),
            nn.Linear(params.widths[-1] * params.pool_size**2, params.hidden_size), nn.ReLU(inplace=True),
        )
        rnn_class = nn.GRU if params.rnn == "gru" else nn.LSTM
        self.rnn = rnn_class(params.hidden_size, params.hidden_size, num_layers=params.num_layers,
                             batch_first=True, bidirectional=params.bidirectional)
        self.head = nn.Linear(params.hidden_size * (2 if params.bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 4
        if single:
            x = x.unsqueeze(0)
        batch, length = x.shape[:2]
        features = self.project(self.features(x.flatten(0, 1))).view(batch, length, -1)
        context, _ = self.rnn(features)
        logits = self.head(context)
        return logits[0] if single else logits


@register_network(
    "cnn_rnn2d",
    spatial_dims=2,
    task="classification",
    params_class=CNNRNN2DParams,
    divisor=1,
    min_size=4,
    sequence=True,
    description="per-slice CNN features, then a GRU/LSTM along z (context between slices)",
)
def build_cnn_rnn2d(params: CNNRNN2DParams, in_channels: int, out_channels: int) -> CNNRNN2D:
    """The sequence classifier of ``params``; ``out_channels`` is the number of classes."""
    return CNNRNN2D(in_channels, out_channels, params)
