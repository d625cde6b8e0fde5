"""The network registry: one dict filled by a decorator, one factory.

Every network module registers its entries with :func:`register_network`; ``radseg.networks``
imports each module explicitly, so the registry is complete as soon as the package is imported.
:func:`build_network` is the only way a network is built from a config.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union

from torch import nn

from radseg.configs.loader import build_dataclass
from radseg.configs.schema import NetworkConfig
from radseg.errors import ConfigError

logger = logging.getLogger(__name__)

Task = Literal["segmentation", "classification"]
#: a 1D index interval [low, high] (inclusive) along one axis
Interval = tuple[int, int]
Divisor = Union[int, Sequence[int], Callable[[Any], Union[int, Sequence[int]]]]


@dataclass(frozen=True)
class NetworkEntry:
    """What a caller must know about one registered network.

    Attributes:
        name: registry key, used as ``network.name`` in configs.
        spatial_dims: 3 for volumetric networks, 2 for slice networks.
        task: ``"segmentation"`` (dense logits ``(B, out_channels, *spatial)``) or
            ``"classification"`` (logits ``(B, out_channels)``).
        params_class: dataclass of the typed ``network.params`` fields, all with defaults.
        builder: ``builder(params, in_channels, out_channels) -> nn.Module``.
        divisor: what each input size must be a multiple of: an int, a per-axis tuple, or a
            callable of the params returning either (use :meth:`divisor_for`).
        rf_interval: optional analytic receptive field, ``rf_interval(params, (lo, hi))`` gives the
            input interval (along one axis) that output interval ``(lo, hi)`` depends on,
            computed layer by layer from kernel, stride, dilation and padding.
        fixed_size: the input must equal ``params.img_size`` exactly (UNETR's position embedding).
        min_size: the smallest input size per axis the network accepts.
        source: ``"radseg"`` for our implementations, ``"monai"`` for MONAI's.
        description: one line for the table.
        sequence: a slice network with context along z: it takes ``(B, L, C, H, W)`` (B
            sequences of L consecutive slices) and returns ``(B, L, out_channels)``; a 4D
            ``(L, C, H, W)`` input is one sequence.
    """

    name: str
    spatial_dims: int
    task: Task
    params_class: type
    builder: Callable[[Any, int, int], nn.Module]
    divisor: Divisor = 1
    rf_interval: Callable[[Any, Interval], Interval] | None = None
    fixed_size: bool = False
    min_size: int = 1
    source: str = "radseg"
    description: str = ""
    sequence: bool = False

    def default_params(self) -> Any:
        """The params dataclass with every default."""
        return self.params_class()

    def divisor_for(self, params: Any = None) -> tuple[int, ...]:
        """The per-axis divisor of the input shape for these params (defaults if None)."""
        value = self.divisor(params or self.default_params()) if callable(self.divisor) else self.divisor
        if isinstance(value, int):
            return (value,) * self.spatial_dims
        return tuple(int(v) for v in value)

    def deep_supervision(self, params: Any = None) -> bool:
        """True when the network returns a list of outputs in train mode (see :mod:`unet3d`)."""
        return bool(getattr(params or self.default_params(), "deep_supervision", False))

    def slices_in(self, params: Any = None) -> int:
        """Neighbouring slices fed as channels (2.5D networks); 1 for every other network."""
        return int(getattr(params or self.default_params(), "slices", 1))


_REGISTRY: dict[str, NetworkEntry] = {}


def register_network(name: str, **fields: Any) -> Callable[[Callable], Callable]:
    """Decorator registering ``builder(params, in_channels, out_channels)`` under ``name``.

    Args:
        name: registry key.
        **fields: the other :class:`NetworkEntry` fields (``spatial_dims``, ``task``, ``params_class``, ...).

    Raises:
        ValueError: ``name`` is registered already (a programming error, not a user error).
    """

    def decorate(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} is registered twice; registry names must be unique")
        _REGISTRY[name] = NetworkEntry(name=name, builder=builder, **fields)
        return builder

    return decorate


def list_networks(task: str | None = None, spatial_dims: int | None = None) -> list[str]:
    """Registered network names in registration order, optionally filtered by task and dims."""
    return [
        e.name
        for e in _REGISTRY.values()
        if (task is None or e.task == task) and (spatial_dims is None or e.spatial_dims == spatial_dims)
    ]


def get_entry(name: str | NetworkEntry) -> NetworkEntry:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown name, listing the registered names and the closest match.
    """
    if isinstance(name, NetworkEntry):
        return name
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.4)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"network.name {name!r} is not a registered network; {hint}registered: {', '.join(_REGISTRY)}")


def resolve_params(name: str | NetworkEntry, raw: Any = None, path: str = "network.params") -> Any:
    """Validate a ``network.params`` mapping (or params instance) against the entry's dataclass.

    Raises:
        ConfigError: an unknown key (with its dotted path and closest valid key), a wrong type,
            or an impossible value (each params class may define ``problems() -> list[str]``).
    """
    entry = get_entry(name)
    if isinstance(raw, entry.params_class):
        params = raw
    else:
        mapping = dataclasses.asdict(raw) if dataclasses.is_dataclass(raw) else raw
        params = build_dataclass(entry.params_class, mapping, path)
    problems = params.problems() if hasattr(params, "problems") else []
    if problems:
        raise ConfigError("; ".join(f"{path}.{p}" for p in problems))
    return params


def build_network(
    network_cfg: NetworkConfig,
    in_channels: int | None = None,
    out_channels: int | None = None,
    roi_size: Sequence[int] | None = None,
) -> nn.Module:
    """Build the network a config names: the only way radseg builds a network.

    Args:
        network_cfg: ``cfg.network``: ``name``, ``in_channels``, ``out_channels``, ``params``.
        in_channels: image channels (used when ``network_cfg.in_channels`` is None). For 2.5D
            networks this is per slice; the network itself takes ``in_channels * slices``.
        out_channels: classes (used when ``network_cfg.out_channels`` is None).
        roi_size: optional patch size; if given it is checked with :func:`check_roi_size`.

    Returns:
        The module, with attributes ``network_name``, ``spatial_dims``, ``task``,
        ``deep_supervision`` and ``slices_in`` set from the entry.

    Raises:
        ConfigError: unknown name or params, missing channel counts, or a patch the divisor rejects.
    """
    entry = get_entry(network_cfg.name)
    params = resolve_params(entry, network_cfg.params)
    in_ch = network_cfg.in_channels if network_cfg.in_channels is not None else in_channels
    out_ch = network_cfg.out_channels if network_cfg.out_channels is not None else out_channels
    for key, value in (("in_channels", in_ch), ("out_channels", out_ch)):
        if value is None or value < 1:
            raise ConfigError(
                f"network.{key} must be a positive int, not {value!r}; "
                "set it in the config or let the dataset provide it"
            )
    if roi_size is not None:
        check_roi_size(entry, params, roi_size)
    model = entry.builder(params, in_ch, out_ch)
    model.network_name = entry.name
    model.spatial_dims = entry.spatial_dims
    model.task = entry.task
    model.deep_supervision = entry.deep_supervision(params)
    model.slices_in = entry.slices_in(params)
    return model


def check_network_config(cfg: Any) -> None:
    """The config's network exists, its params are valid, and it can take the patches (divisor, size).

    Args:
        cfg: a :class:`~radseg.configs.schema.RadsegConfig` (its ``network``, ``train.roi_size`` and
            ``inference.roi_size``).

    Raises:
        ConfigError: an unknown network or parameter (with the closest name), or a patch the network
            cannot take (with the nearest valid sizes).
    """
    params = resolve_params(cfg.network.name, cfg.network.params)
    check_roi_size(cfg.network.name, params, cfg.train.roi_size)
    if cfg.inference.roi_size is not None:
        check_roi_size(cfg.network.name, params, cfg.inference.roi_size)


def nearest_valid_sizes(size: int, divisor: int, min_size: int = 1) -> tuple[int | None, int]:
    """The multiples of ``divisor`` (at least ``min_size``) just below and above ``size``."""
    smallest = max(divisor, -(-min_size // divisor) * divisor)
    below = (size // divisor) * divisor
    return (below if below >= smallest else None), max(smallest, -(-size // divisor) * divisor)


def check_roi_size(
    name: str | NetworkEntry,
    params: Any,
    roi_size: Sequence[int],
    spacing: Sequence[float] | None = None,
) -> None:
    """Refuse a patch the network cannot take; warn when it is smaller than the receptive field.

    Args:
        name: network name or entry.
        params: params instance, raw ``network.params`` mapping, or None for the defaults.
        roi_size: patch size per spatial axis (``train.roi_size``).
        spacing: mm per voxel, only used to state the receptive field in mm in the warning.

    Raises:
        ConfigError: wrong number of axes, or a size the divisor rejects, naming for each bad axis
            the nearest valid sizes below and above.
    """
    entry = get_entry(name)
    params = resolve_params(entry, params)
    roi = [int(s) for s in roi_size]
    if len(roi) != entry.spatial_dims:
        raise ConfigError(
            f"roi_size {roi} has {len(roi)} axes but network {entry.name!r} is {entry.spatial_dims}D; "
            f"give {entry.spatial_dims} sizes"
        )
    if entry.fixed_size and roi != list(params.img_size):
        raise ConfigError(
            f"roi_size {roi} must equal network.params.img_size {list(params.img_size)} for {entry.name!r}; "
            f"set network.params.img_size={roi} or change the roi_size"
        )
    problems = _divisor_problems(roi, entry.divisor_for(params), entry.min_size)
    if problems:
        raise ConfigError(
            f"roi_size {roi} does not suit network {entry.name!r}, whose input sizes must be multiples of "
            f"{list(entry.divisor_for(params))} (at least {entry.min_size}): {'; '.join(problems)}"
        )
    _warn_if_below_receptive_field(entry, params, roi, spacing)


def _divisor_problems(roi: list[int], divisor: tuple[int, ...], min_size: int) -> list[str]:
    problems = []
    for axis, (size, div) in enumerate(zip(roi, divisor)):
        if size % div or size < min_size:
            below, above = nearest_valid_sizes(size, div, min_size)
            options = " or ".join(str(s) for s in (below, above) if s is not None)
            problems.append(f"axis {axis}: {size} (nearest valid: {options})")
    return problems


#: (network, roi_size, receptive field) already warned about in this process
_RECEPTIVE_FIELD_WARNED: set[tuple] = set()


def _warn_if_below_receptive_field(entry: NetworkEntry, params: Any, roi: list[int], spacing: Any) -> None:
    from radseg.networks.receptive_field import analytic_receptive_field

    if entry.rf_interval is None:
        return
    rf = analytic_receptive_field(entry, params)
    if any(r < f for r, f in zip(roi, rf)):
        said = (entry.name, tuple(roi), tuple(rf))
        if said in _RECEPTIVE_FIELD_WARNED:  # the CLI, fit and predict check the same patch: say it once
            return
        _RECEPTIVE_FIELD_WARNED.add(said)
        mm = f" ({', '.join(f'{f * s:.0f}' for f, s in zip(rf, spacing))} mm)" if spacing else ""
        logger.warning(
            "roi_size %s is smaller than the receptive field of %s, %s voxels%s: the network sees less context "
            "than it could; use a larger patch or a shallower network",
            roi, entry.name, list(rf), mm,
        )
