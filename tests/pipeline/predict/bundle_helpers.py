"""The three MONAI zoo configurations shipped in ../shared/data/monai_bundles, with weights made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

#: the zoo bundles' configs and licences (their weights are not shipped)
ZOO = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "monai_bundles"
SPLEEN, WHOLE_BODY, DINTS = "spleen_ct_segmentation", "wholeBody_ct_segmentation", "multi_organ_segmentation"


def zoo_bundle(name: str, folder: Path, weights: dict | None = None) -> Path:
    """A copy of a zoo bundle's configs in ``folder`` with random weights (or ``weights``) in models/."""
    source = ZOO / name
    if not source.is_dir():
        pytest.skip(f"zoo bundle {source} is absent (it lives in ../shared/data/monai_bundles beside the project)")
    shutil.copytree(source, folder)
    (folder / "models").mkdir(exist_ok=True)
    network = zoo_network(name, folder)
    torch.save(weights if weights is not None else network.state_dict(), folder / "models" / "model.pt")
    return folder


def zoo_network(name: str, folder: Path) -> torch.nn.Module:
    """The network a zoo bundle's network_def describes (DiNTS: a searched architecture saved first)."""
    from monai.networks import nets

    if name == SPLEEN:
        return nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=[16, 32, 64, 128, 256],
                         strides=[2, 2, 2, 2], num_res_units=2, norm="batch")
    if name == WHOLE_BODY:
        return nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=105, init_filters=32,
                              blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], dropout_prob=0.2)
    torch.manual_seed(0)
    space = nets.TopologySearch(channel_mul=1, num_blocks=12, num_depths=4, use_downsample=True, device="cpu")
    node_a, code_a, code_c, _ = space.decode()
    # numpy arrays, as the zoo's search_code_18590.pt holds them
    (folder / "models").mkdir(exist_ok=True)
    torch.save({"node_a": node_a, "arch_code_a": code_a, "arch_code_c": code_c},  # numpy arrays, as the zoo's
               folder / "models" / "search_code_18590.pt")
    instance = nets.TopologyInstance(channel_mul=1, num_blocks=12, num_depths=4, use_downsample=True,
                                     arch_code=[code_a, code_c], device="cpu")
    return nets.DiNTS(dints_space=instance, in_channels=1, num_classes=8, use_downsample=True,
                      node_a=torch.as_tensor(node_a))


def edit_config(bundle: Path, change) -> None:
    """Apply ``change(config_dict)`` to a bundle's configs/inference.json."""
    path = bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
