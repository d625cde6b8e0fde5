"""A trained run's checkpoint as everything prediction needs: network, preprocessing, label names.

The checkpoint alone is enough (nanoGPT's rule: the config travels inside it). It is read with
``weights_only=True`` and checked for the keys this version of radseg writes before any scan is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from radseg.configs.schema import RadsegConfig
from radseg.errors import DataError, RadsegError

logger = logging.getLogger(__name__)

#: what every radseg checkpoint holds besides the weights (``best.pt`` and ``last.pt``)
REQUIRED_KEYS = ("config", "preprocess", "label_names", "in_channels", "out_channels", "model")


@dataclass
class PredictModel:
    """A network in eval mode on its device, with what it was trained with.

    Attributes:
        network: the model, on ``device``, in eval mode.
        cfg: the run's resolved config (``inference`` and ``train.roi_size`` drive the window).
        preprocess: the resolved preprocessing (a ``ResolvedPreprocess``).
        label_names: class index -> name, background included.
        in_channels: image channels the network takes.
        num_classes: output channels (background included).
        device: where the windows run.
        amp: autocast dtype on CUDA, else None.
        source: the checkpoint path ("ensemble of N" for several).
        members: an ensemble's checkpoints (empty for one model).
        grid_members: an ensemble whose members preprocess differently: each predicts on its own grid
            and the probabilities are averaged on the scan's (empty otherwise; see :mod:`.ensemble`).
        runtimes: the runtimes chosen for this network, by (runtime, precision, sw_batch_size)
            (:func:`radseg.pipeline.predict.runtime.choose_runtime` fills it on the first case; a copy
            made with ``dataclasses.replace`` starts empty).
    """

    network: torch.nn.Module
    cfg: RadsegConfig
    preprocess: object
    label_names: dict[int, str]
    in_channels: int
    num_classes: int
    device: torch.device
    amp: torch.dtype | None
    source: str
    members: tuple[str, ...] = ()
    grid_members: tuple["PredictModel", ...] = ()
    runtimes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def modality(self) -> str:
        """"CT" or "MRI": what the model was trained on."""
        return self.preprocess.modality

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The spatial axes test-time mirroring may flip: those flipped in training (none: no mirroring).

        Derived from the training config inside the checkpoint (``augment.flip_prob`` and
        ``augment.flip_axes``); see :func:`radseg.pipeline.predict.mirroring.trained_mirror_axes`.
        """
        from radseg.pipeline.predict.mirroring import trained_mirror_axes

        return trained_mirror_axes(self.cfg.augment)

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number when the checkpoint has no name for it)."""
        return str(self.label_names.get(index, index))


def load_predict_model(checkpoint: str | Path, device: str = "auto") -> PredictModel:
    """Load a run's ``best.pt`` (or ``last.pt``) for prediction.

    Args:
        checkpoint: the checkpoint file, a run folder (its ``best.pt``, else its ``last.pt``;
            see :func:`radseg.pipeline.core.checkpoint.resolve_checkpoint`), or a MONAI bundle
            folder (:func:`radseg.pipeline.predict.bundle.load_bundle_model`).
        device: "auto" (CUDA when present), "cpu" or "cuda".

    Returns:
        The :class:`PredictModel`.

    Raises:
        DataError: the file is missing (or the folder holds no checkpoint), unreadable, or
            written by another radseg version (keys missing), or the network is not a 3D
            segmentation network.
    """
    from radseg.networks import build_network
    from radseg.pipeline.core.checkpoint import load_checkpoint, resolve_checkpoint
    from radseg.pipeline.core.distributed import pick_device
    from radseg.pipeline.predict.bundle import is_bundle, load_bundle_model
    from radseg.pipeline.predict.inference import resolve_amp

    if is_bundle(checkpoint):  # a MONAI bundle folder: network, weights and preprocessing from its configs
        return load_bundle_model(checkpoint, device)
    checkpoint = resolve_checkpoint(checkpoint)
    saved = load_checkpoint(checkpoint)
    _check_format(saved, checkpoint)
    cfg, resolved = _settings(saved, checkpoint)
    network = build_network(cfg.network, in_channels=saved["in_channels"], out_channels=saved["out_channels"])
    try:
        network.load_state_dict(saved["model"])
    except RuntimeError as err:
        raise DataError(f"checkpoint {checkpoint}: the weights do not fit the network its config names "
                        f"({str(err).splitlines()[0]}); the file is damaged or from another radseg "
                        "version; fix: use the run's own best.pt") from err
    run_device = pick_device(device)
    network.to(run_device).eval()
    return PredictModel(
        network=network, cfg=cfg, preprocess=resolved,
        label_names={int(k): str(v) for k, v in saved["label_names"].items()},
        in_channels=int(saved["in_channels"]), num_classes=int(saved["out_channels"]),
        device=run_device, amp=resolve_amp(cfg.train.amp, run_device), source=str(checkpoint),
    )


def _settings(saved: dict, checkpoint: str | Path):
    """The config and resolved preprocessing in a checkpoint, checked for a 3D segmentation network."""
    from radseg.configs.loader import load_config
    from radseg.networks.registry import get_entry
    from radseg.transforms.fingerprint import ResolvedPreprocess

    try:
        cfg = load_config(saved["config"])
        resolved = ResolvedPreprocess.from_dict(saved["preprocess"])
    except (RadsegError, TypeError, KeyError) as err:
        raise DataError(f"checkpoint {checkpoint} holds a config or preprocessing this radseg version cannot "
                        f"read ({err}); it was written by another radseg version; fix: predict with that "
                        "version or retrain") from err
    entry = get_entry(cfg.network.name)
    if entry.spatial_dims != 3 or entry.task != "segmentation":
        raise DataError(f"checkpoint {checkpoint} holds {cfg.network.name!r}, a {entry.spatial_dims}D "
                        f"{entry.task} network; radseg predict needs a 3D segmentation network")
    return cfg, resolved


def _check_format(saved: object, checkpoint: str | Path) -> None:
    if not isinstance(saved, dict):
        raise DataError(f"checkpoint {checkpoint} holds a {type(saved).__name__}, not a radseg checkpoint "
                        "(a dict with config, preprocessing and weights); fix: pass a run's best.pt")
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise DataError(f"checkpoint {checkpoint} lacks {', '.join(missing)}: it was written by another "
                        f"radseg version or another tool (expected keys {', '.join(REQUIRED_KEYS)}); "
                        "fix: predict with the radseg version that trained it, or retrain")
