"""Builders for MONAI's networks: typed params mapped onto each constructor, no open ``**kwargs``.

Names carry a ``monai_`` prefix so they never clash with our own implementations (``unet3d``,
``vnet``). Defaults follow MONAI's own, except where MONAI has none (UNETR's ``img_size``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from monai.networks import nets
from monai.utils import optional_import
from torch import nn

from radseg.errors import ConfigError
from radseg.networks.registry import register_network

Norm = Literal["instance", "batch"]


def _require_einops(name: str) -> None:
    """MONAI's transformer blocks import einops optionally and fail late; fail early and clearly."""
    _, found = optional_import("einops")
    if not found:
        raise ConfigError(f"network {name!r} needs the einops package, which is not installed; pip install einops")


@dataclass
class MonaiUNetParams:
    """``network.params`` of ``monai_unet`` (every stride 2, 3×3×3 kernels)."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    num_res_units: int = 2
    norm: Norm = "instance"
    dropout: float = 0.0


@register_network(
    "monai_unet", spatial_dims=3, task="segmentation", params_class=MonaiUNetParams,
    divisor=lambda p: 2 ** (len(p.channels) - 1), source="monai", description="MONAI UNet (residual units)",
)
def build_monai_unet(p: MonaiUNetParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's UNet."""
    return nets.UNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=p.channels,
        strides=[2] * (len(p.channels) - 1), num_res_units=p.num_res_units, norm=p.norm, dropout=p.dropout,
    )


@dataclass
class BasicUNetParams:
    """``network.params`` of ``monai_basic_unet`` (six feature counts: five levels and the last decoder)."""

    features: list[int] = field(default_factory=lambda: [32, 32, 64, 128, 256, 32])
    norm: Norm = "instance"
    upsample: Literal["deconv", "pixelshuffle", "nontrainable"] = "deconv"
    dropout: float = 0.0

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        return [] if len(self.features) == 6 else [f"features must hold 6 channel counts, not {self.features}"]


@register_network(
    "monai_basic_unet", spatial_dims=3, task="segmentation", params_class=BasicUNetParams, divisor=16,
    source="monai", description="MONAI BasicUNet (two convs per level, 4 poolings)",
)
def build_basic_unet(p: BasicUNetParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's BasicUNet."""
    return nets.BasicUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, features=p.features,
        norm=(p.norm, {"affine": True}), dropout=p.dropout, upsample=p.upsample,
    )


@dataclass
class MonaiVNetParams:
    """``network.params`` of ``monai_vnet`` (fixed widths 16-256; in_channels must divide 16)."""

    act: Literal["elu", "prelu", "relu"] = "elu"
    #: dropout of the two deepest down- and up-transitions
    dropout: float = 0.5


@register_network(
    "monai_vnet", spatial_dims=3, task="segmentation", params_class=MonaiVNetParams, divisor=16,
    source="monai", description="MONAI VNet",
)
def build_monai_vnet(p: MonaiVNetParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's VNet."""
    if 16 % in_channels:
        raise ConfigError(f"monai_vnet needs in_channels dividing 16, not {in_channels}; use 'vnet' for other counts")
    return nets.VNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, act=p.act,
        dropout_prob_down=p.dropout, dropout_prob_up=(p.dropout, p.dropout),
    )


@dataclass
class SegResNetParams:
    """``network.params`` of ``monai_segresnet``."""

    init_filters: int = 8
    blocks_down: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    blocks_up: list[int] = field(default_factory=lambda: [1, 1, 1])
    num_groups: int = 8
    dropout_prob: Union[float, None] = None
    upsample_mode: Literal["deconv", "nontrainable", "pixelshuffle"] = "nontrainable"

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        if len(self.blocks_up) != len(self.blocks_down) - 1:
            return [f"blocks_up must be one shorter than blocks_down ({len(self.blocks_down)}), not {self.blocks_up}"]
        return []


@register_network(
    "monai_segresnet", spatial_dims=3, task="segmentation", params_class=SegResNetParams,
    divisor=lambda p: 2 ** (len(p.blocks_down) - 1), source="monai", description="MONAI SegResNet",
)
def build_segresnet(p: SegResNetParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's SegResNet."""
    return nets.SegResNet(
        spatial_dims=3, init_filters=p.init_filters, in_channels=in_channels, out_channels=out_channels,
        dropout_prob=p.dropout_prob, norm=("GROUP", {"num_groups": p.num_groups}), blocks_down=tuple(p.blocks_down),
        blocks_up=tuple(p.blocks_up), upsample_mode=p.upsample_mode,
    )


@dataclass
class DynUNetParams:
    """``network.params`` of ``monai_dynunet``: 3×3×3 kernels, stride 2 below the first of ``depth`` levels."""

    depth: int = 5
    #: channels per level; None = MONAI's 32, 64, ... capped at 320
    filters: Union[list[int], None] = None
    norm: Norm = "instance"
    res_block: bool = False

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        if self.depth < 2:
            return [f"depth must be >= 2, not {self.depth}"]
        if self.filters is not None and len(self.filters) != self.depth:
            return [f"filters must hold depth={self.depth} channel counts, not {self.filters}"]
        return []


@register_network(
    "monai_dynunet", spatial_dims=3, task="segmentation", params_class=DynUNetParams,
    divisor=lambda p: 2 ** (p.depth - 1), source="monai", description="MONAI DynUNet (nnU-Net style)",
)
def build_dynunet(p: DynUNetParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's DynUNet without deep supervision."""
    strides = [1] + [2] * (p.depth - 1)
    return nets.DynUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, kernel_size=[3] * p.depth,
        strides=strides, upsample_kernel_size=strides[1:], filters=p.filters, norm_name=p.norm, res_block=p.res_block,
    )


@dataclass
class UNETRParams:
    """``network.params`` of ``monai_unetr``; the input must be exactly ``img_size``."""

    img_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    feature_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12
    norm: Norm = "instance"
    res_block: bool = True
    dropout_rate: float = 0.0

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = []
        if len(self.img_size) != 3 or any(s % 16 for s in self.img_size):
            out.append(f"img_size must be 3 multiples of 16 (UNETR's patch), not {self.img_size}")
        if self.hidden_size % self.num_heads:
            out.append(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        return out


@register_network(
    "monai_unetr", spatial_dims=3, task="segmentation", params_class=UNETRParams, divisor=16, fixed_size=True,
    source="monai", description="MONAI UNETR (ViT encoder, 16^3 patches; input = img_size)",
)
def build_unetr(p: UNETRParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's UNETR.

    MONAI's transformer blocks build a cross-attention LayerNorm even without cross-attention; it
    never gets a gradient (and DDP refuses parameters that get none), so it is frozen.
    """
    _require_einops("monai_unetr")
    network = nets.UNETR(
        in_channels=in_channels, out_channels=out_channels, img_size=p.img_size, feature_size=p.feature_size,
        hidden_size=p.hidden_size, mlp_dim=p.mlp_dim, num_heads=p.num_heads, norm_name=p.norm,
        res_block=p.res_block, dropout_rate=p.dropout_rate, spatial_dims=3,
    )
    for block in network.vit.blocks:
        if not getattr(block, "with_cross_attention", False) and hasattr(block, "norm_cross_attn"):
            block.norm_cross_attn.requires_grad_(False)
    return network


@dataclass
class SwinUNETRParams:
    """``network.params`` of ``monai_swinunetr`` (input sizes multiples of 32)."""

    feature_size: int = 24
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    norm: Norm = "instance"
    dropout_path_rate: float = 0.0
    use_checkpoint: bool = False
    use_v2: bool = False

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        out = []
        if self.feature_size % 12:
            out.append(f"feature_size must be a multiple of 12, not {self.feature_size}")
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            out.append(f"depths and num_heads must hold 4 stages each, not {self.depths} and {self.num_heads}")
        return out


@register_network(
    "monai_swinunetr", spatial_dims=3, task="segmentation", params_class=SwinUNETRParams, divisor=32,
    source="monai", description="MONAI SwinUNETR (shifted-window transformer encoder)",
)
def build_swinunetr(p: SwinUNETRParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's SwinUNETR."""
    _require_einops("monai_swinunetr")
    return nets.SwinUNETR(
        in_channels=in_channels, out_channels=out_channels, depths=p.depths, num_heads=p.num_heads,
        window_size=p.window_size, feature_size=p.feature_size, norm_name=p.norm,
        dropout_path_rate=p.dropout_path_rate, use_checkpoint=p.use_checkpoint, spatial_dims=3, use_v2=p.use_v2,
    )


@dataclass
class DenseNet121Params:
    """``network.params`` of ``monai_densenet121`` (2D slice classifier)."""

    init_features: int = 64
    growth_rate: int = 32
    block_config: list[int] = field(default_factory=lambda: [6, 12, 24, 16])
    dropout_prob: float = 0.0


@register_network(
    "monai_densenet121", spatial_dims=2, task="classification", params_class=DenseNet121Params, min_size=32,
    source="monai", description="MONAI DenseNet121, 2D slice classifier",
)
def build_densenet121(p: DenseNet121Params, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's DenseNet121 in 2D (no pretrained weights: nothing is downloaded)."""
    return nets.DenseNet121(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels, init_features=p.init_features,
        growth_rate=p.growth_rate, block_config=tuple(p.block_config), dropout_prob=p.dropout_prob,
    )


@dataclass
class ResNetParams:
    """``network.params`` of ``monai_resnet`` (2D slice classifier; defaults = ResNet-18)."""

    block: Literal["basic", "bottleneck"] = "basic"
    layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    block_inplanes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    conv1_t_size: int = 7
    conv1_t_stride: int = 2
    no_max_pool: bool = False

    def problems(self) -> list[str]:
        """Impossible values, each with its fix."""
        if len(self.layers) != 4 or len(self.block_inplanes) != 4:
            return [f"layers and block_inplanes must hold 4 stages each, not {self.layers} and {self.block_inplanes}"]
        return []


@register_network(
    "monai_resnet", spatial_dims=2, task="classification", params_class=ResNetParams, min_size=32,
    source="monai", description="MONAI ResNet (default ResNet-18), 2D slice classifier",
)
def build_resnet(p: ResNetParams, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's ResNet in 2D."""
    return nets.ResNet(
        block=p.block, layers=p.layers, block_inplanes=p.block_inplanes, spatial_dims=2,
        n_input_channels=in_channels, conv1_t_size=p.conv1_t_size, conv1_t_stride=p.conv1_t_stride,
        no_max_pool=p.no_max_pool, num_classes=out_channels,
    )
