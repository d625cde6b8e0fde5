"""Phantom scans in chosen geometries, an oracle network, and checkpoints made without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from radseg.configs.loader import config_to_dict, load_config
from radseg.networks import build_network
from radseg.pipeline.core.checkpoint import save_checkpoint
from radseg.pipeline.predict.model import PredictModel
from radseg.transforms.fingerprint import ResolvedPreprocess

#: HU of air, body, class 1 (organ) and class 2 (lesion inside the organ)
AIR, BODY, ORGAN, LESION = -1000.0, 0.0, 300.0, 600.0
#: after the [-1000, 1000] -> [0, 1] window: the intensity each class has
LEVELS = {0: [0.0, 0.5], 1: [0.65], 2: [0.8]}
RESOLVED = ResolvedPreprocess(modality="CT", target_spacing=(1.25, 1.25, 2.0), ct_window=(-1000.0, 1000.0),
                              ct_normalization="window", crop_foreground=True, crop_margin=2)

#: SimpleITK (LPS) direction matrices: RAS-stored, LPS-stored, and oblique (rotated 20 and 10 degrees)
def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = np.radians(z_deg), np.radians(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


DIRECTIONS = {
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LPS": np.eye(3),
    "oblique": _rotation(20, 10) @ np.diag([1.0, -1.0, 1.0]),
}


def phantom_scan(direction: np.ndarray, shape=(61, 57, 27), spacing=(1.0, 0.9, 1.6),
                 origin=(-20.0, 13.0, 7.0)) -> tuple[sitk.Image, sitk.Image]:
    """An image (int16 HU) and its label (uint8): a body box in air, an organ sphere with a lesion."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    mm = idx * np.asarray(spacing)
    centre = (np.asarray(shape) - 1) * np.asarray(spacing) / 2
    label = np.zeros(shape, dtype=np.uint8)
    image = np.full(shape, AIR)
    body = np.all(np.abs(mm - centre) < centre * np.array([0.8, 0.75, 1.01]), axis=-1)
    image[body] = BODY
    organ = np.linalg.norm(mm - centre - [4, -3, 0], axis=-1) < 17
    lesion = np.linalg.norm(mm - centre - [8, 0, 2], axis=-1) < 8
    image[organ], label[organ] = ORGAN, 1
    image[lesion], label[lesion] = LESION, 2
    return _image(image.astype(np.int16), direction, spacing, origin), _image(label, direction, spacing, origin)


def _image(array: np.ndarray, direction, spacing, origin) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    return image


class Oracle(torch.nn.Module):
    """Logits that recover the label from the window's intensities (each class has its own level)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [torch.stack([-(x[:, 0] - v) ** 2 for v in levels]).amax(0) for levels in LEVELS.values()]
        return torch.stack(logits, dim=1) * 100 + self.dummy


def oracle_model(roi=(32, 32, 16)) -> PredictModel:
    """A PredictModel around :class:`Oracle` with the test preprocessing."""
    cfg = load_config("demo", [f"train.roi_size={list(roi)}", "train.device=cpu", "inference.overlap=0.25"])
    return PredictModel(network=Oracle().eval(), cfg=cfg, preprocess=RESOLVED,
                        label_names={0: "background", 1: "organ", 2: "lesion"}, in_channels=1, num_classes=3,
                        device=torch.device("cpu"), amp=None, source="oracle")


def write_checkpoint(path: Path, overrides=(), preprocess: ResolvedPreprocess = RESOLVED) -> Path:
    """A radseg checkpoint of an untrained tiny network (the format fit writes)."""
    cfg = load_config("demo", ["train.roi_size=[32,32,16]", "network.params.widths=[4,8,16]", *overrides])
    network = build_network(cfg.network, in_channels=1, out_channels=3)
    return save_checkpoint(path, {
        "config": config_to_dict(cfg), "fingerprint": None, "preprocess": preprocess.to_dict(),
        "label_names": {0: "background", 1: "organ", 2: "lesion"}, "network_name": cfg.network.name,
        "in_channels": 1, "out_channels": 3, "model": network.state_dict(), "epoch": 0,
    })
