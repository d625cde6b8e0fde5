"""The table ``radseg networks`` prints: every registered network with its costs and reach."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from radseg.networks.flops import count_gflops
from radseg.networks.receptive_field import analytic_receptive_field, empirical_receptive_field
from radseg.configs.schema import NetworkConfig
from radseg.networks.registry import NetworkEntry, build_network, get_entry, list_networks, resolve_params
from radseg.progress import progress_bar

#: FLOPs are counted on one patch of this size
FLOP_PATCH = {3: (96, 96, 96), 2: (256, 256)}
#: empirical receptive fields are probed on a long, thin input: the field along the long axis is
#: measured (networks are isotropic) at the cost of a small cube
PROBE_LENGTH = 160


@dataclass
class NetworkRow:
    """One line of the table."""

    name: str
    spatial_dims: int
    task: str
    parameters: int
    receptive_field: int
    rf_exact: bool  # False: the field reaches the whole probe, so it is at least this size
    rf_method: str  # "analytic" or "empirical"
    divisor: tuple[int, ...]
    gflops: float


def network_rows(names: Sequence[str] | None = None) -> list[NetworkRow]:
    """Measure every registered network (or ``names``) with default params, one input channel, 2 classes."""
    names = list(names or list_networks())
    return [_row(get_entry(name)) for name in progress_bar(names, desc="networks", unit="network", leave=False)]


def _row(entry: NetworkEntry) -> NetworkRow:
    params = resolve_params(entry, None)
    model = build_network(NetworkConfig(name=entry.name, params=_as_dict(params)), 1, 2)
    channels = model.slices_in
    gflops = count_gflops(model, FLOP_PATCH[entry.spatial_dims], channels)
    if entry.rf_interval is not None:
        rf, exact, method = analytic_receptive_field(entry, params)[0], True, "analytic"
    else:
        probe = _probe_shape(entry, params)
        probe_model = build_network(NetworkConfig(name=entry.name, params=_as_dict(params, probe)), 1, 2)
        rf = empirical_receptive_field(probe_model, probe, channels)[0]
        exact, method = rf < probe[0], "empirical"
    count = sum(p.numel() for p in model.parameters())
    divisor = entry.divisor_for(params)
    return NetworkRow(entry.name, entry.spatial_dims, entry.task, count, rf, exact, method, divisor, gflops)


def _probe_shape(entry: NetworkEntry, params: object) -> tuple[int, ...]:
    # long along axis 0, as thin as the network allows across: the cost of a small cube
    width = max(max(entry.divisor_for(params)), entry.min_size, 8)
    return (PROBE_LENGTH,) + (width,) * (entry.spatial_dims - 1)


def _as_dict(params: object, img_size: Sequence[int] | None = None) -> dict:
    raw = asdict(params)
    if img_size is not None and "img_size" in raw:
        raw["img_size"] = list(img_size)
    return raw


def network_table(spacing: Sequence[float] = (1.0, 1.0, 1.0), names: Sequence[str] | None = None) -> str:
    """The registry as a text table: name, dims, task, parameters, receptive field, divisor, GFLOPs.

    Args:
        spacing: mm per voxel (x, y, z) used to state the receptive field in mm (2D: x, y).
        names: networks to list (default: all registered).

    Returns:
        The table with a footnote on how each column was obtained.
    """
    torch.manual_seed(0)
    head = f"{'name':<18}{'dims':>5}  {'task':<15}{'params':>9}  {'RF voxels':>11}  {'RF mm':<22}"
    head += f"{'divisor':>8}{'GFLOPs':>9}"
    lines = [head, "-" * len(head)]
    lines += [_format_row(row, spacing) for row in network_rows(names)]
    return "\n".join(lines + ["", *_footnotes(spacing)])


def _format_row(row: NetworkRow, spacing: Sequence[float]) -> str:
    mark = "" if row.rf_exact else ">="
    rf_text = f"{mark}{row.receptive_field}{'*' if row.rf_method == 'empirical' else ''}"
    mm = "x".join(f"{row.receptive_field * s:.0f}" for s in spacing[: row.spatial_dims])
    return (
        f"{row.name:<18}{row.spatial_dims:>5}  {row.task:<15}{row.parameters / 1e6:>8.2f}M  {rf_text:>11}  "
        f"{mark + mm:<22}{row.divisor[0]:>8}{row.gflops:>9.1f}"
    )


def _footnotes(spacing: Sequence[float]) -> list[str]:
    spacing_text = " x ".join(f"{s:g}" for s in spacing)
    return [
        f"RF: receptive field per axis of one output voxel, in voxels and in mm at spacing {spacing_text}; "
        "analytic (layer by layer) for our networks; * = empirical (input extent with a non-zero gradient, "
        f"probed on an input {PROBE_LENGTH} long and as thin across as the divisor allows); '>=': the field "
        "fills the whole probe, so it is at least that. Classifiers pool globally: their field is the whole slice.",
        "GFLOPs: one forward pass on a 96^3 patch (3D) or a 256^2 slice (2D), batch 1, one channel "
        "(k slices for unet2p5d), 2 outputs, counted by torch FlopCounterMode (multiply-add = 2).",
        "divisor: every input size must be a multiple of it; monai_unetr also needs input = params.img_size.",
    ]
