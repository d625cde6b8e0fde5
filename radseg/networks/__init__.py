"""The network registry: our own networks and builders for MONAI's.

Every network module is imported here explicitly, so importing ``radseg.networks`` fills the
registry (no import side effects elsewhere).
"""

# registration order is the table's order: our networks first, then MONAI's
from radseg.networks import unet3d, vnet, cnn3d, unet2p5d, simple_cnn2d  # noqa: F401, I001
from radseg.networks import cnn_rnn2d  # noqa: F401, I001
from radseg.networks import monai_nets  # noqa: F401, I001
from radseg.networks.flops import count_gflops
from radseg.networks.receptive_field import analytic_receptive_field, empirical_receptive_field
from radseg.networks.registry import (
    NetworkEntry,
    build_network,
    check_network_config,
    check_roi_size,
    get_entry,
    list_networks,
    nearest_valid_sizes,
    register_network,
    resolve_params,
)
from radseg.networks.table import network_rows, network_table
from radseg.networks.unet2p5d import forward_volume

__all__ = [
    "NetworkEntry",
    "analytic_receptive_field",
    "build_network",
    "check_network_config",
    "check_roi_size",
    "count_gflops",
    "empirical_receptive_field",
    "forward_volume",
    "get_entry",
    "list_networks",
    "nearest_valid_sizes",
    "network_rows",
    "network_table",
    "register_network",
    "resolve_params",
]
