"""A MONAI bundle folder (a zoo bundle, or one radseg exported) as a :class:`PredictModel`.

The network comes from the bundle's ``network_def`` (MONAI network classes only, :mod:`.bundle_checks`)
and its weights from the checkpoint loader's ``load_path`` (``models/model.pt``); the
preprocessing and the sliding window are mapped onto radseg's own (:mod:`.bundle_transforms`), and
the label names come from ``metadata.json``. Then radseg's predictor runs it like any run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from radseg.errors import DataError
from radseg.pipeline.predict.bundle_config import checked_content, config_file, load_weights, read_bundle_config
from radseg.pipeline.predict.bundle_transforms import map_inferer, map_preprocessing, transform_name

logger = logging.getLogger(__name__)


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a MONAI bundle folder (``configs/metadata.json`` and an inference config)."""
    return Path(path).is_dir() and config_file(Path(path)) is not None


def load_bundle_model(folder: str | Path, device: str = "auto"):
    """Read a MONAI bundle for radseg's predictor.

    Args:
        folder: the bundle (``configs/``, ``models/``).
        device: "auto", "cpu" or "cuda".

    Returns:
        A :class:`~radseg.pipeline.predict.model.PredictModel`.

    Raises:
        DataError: weights missing or not fitting, a network MONAI does not have, a ``_target_``
            outside MONAI, or a transform radseg cannot map (each in one line naming it).
    """
    from radseg.pipeline.core.distributed import pick_device
    from radseg.pipeline.predict.model import PredictModel

    folder = Path(folder)
    run_device = pick_device(device)
    parser = read_bundle_config(folder, run_device)
    meta = parser.get("_meta_") or {}
    resolved, window = _exported_settings(parser, meta) or _mapped_settings(parser, meta, folder)
    network = _network(parser, folder)
    labels, in_channels, num_classes = _interface(meta, parser)
    network.to(run_device).eval()
    logger.info("bundle %s: %s, %d classes, window %s, preprocessing %s", folder, type(network).__name__, num_classes,
                window["roi_size"], resolved.to_dict())
    return PredictModel(network=network, cfg=_config(window), preprocess=resolved, label_names=labels,
                        in_channels=in_channels, num_classes=num_classes, device=run_device, amp=None,
                        source=str(folder))


def _mapped_settings(parser, meta: dict, folder: Path):
    """The bundle's preprocessing and inferer mapped onto radseg's (refusing what does not map)."""
    items = checked_content(parser, "preprocessing", folder, instantiate=False)["transforms"]
    resolved = map_preprocessing(items, _modality(meta), str(folder))
    return resolved, map_inferer(checked_content(parser, "inferer", folder, instantiate=False), str(folder))


def _exported_settings(parser, meta: dict):
    """A bundle radseg exported, unedited: the run's own settings from metadata.json (else None)."""
    from radseg.transforms.fingerprint import ResolvedPreprocess
    from radseg.transforms.preprocess_items import preprocessing_items

    saved = meta.get("radseg") or {}
    if not isinstance(saved.get("preprocess"), dict) or not isinstance(saved.get("window"), dict):
        return None
    resolved = ResolvedPreprocess.from_dict(saved["preprocess"])
    window = dict(saved["window"])
    preprocessing, inferer = parser.get("preprocessing") or {}, parser.get("inferer")
    if preprocessing.get("transforms") != preprocessing_items(resolved) or inferer != {"_target_": "SlidingWindowInferer",
                                                                                        **window}:
        return None  # edited since the export: map what it says now
    window["blend_mode"] = window.pop("mode")
    return resolved, window


def _network(parser, folder: Path) -> torch.nn.Module:
    network = checked_content(parser, "network_def", folder)
    if not isinstance(network, torch.nn.Module):
        raise DataError(f"bundle {folder}: network_def gives a {type(network).__name__}, not a network")
    load_path = _load_path(parser, folder, network)
    if load_path is None:  # a TorchScript network (radseg's export) carries its weights
        return network
    state = load_weights(load_path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])
        raise DataError(f"bundle {folder}: the weights in {load_path} do not fit the network network_def builds "
                        f"({' '.join(d.strip() for d in detail[:2])[:300]}); fix: use the weights that came with "
                        "this configuration") from err
    return network


def _load_path(parser, folder: Path, network: torch.nn.Module) -> Path | None:
    """Where the checkpoint loader reads the weights; ``models/model.pt`` when the config names none."""
    for item_id in ("checkpointloader", *(f"handlers#{i}" for i in range(len(parser.get("handlers") or [])))):
        item = parser.get(item_id)
        if isinstance(item, dict) and transform_name(item.get("_target_", "")) == "CheckpointLoader":
            return Path(checked_content(parser, f"{item_id}#load_path", folder))
    if isinstance(network, torch.jit.ScriptModule):
        return None
    return folder / "models" / "model.pt"


def _interface(meta: dict, parser) -> tuple[dict[int, str], int, int]:
    """Label names, input channels and classes from metadata.json (the network_def where it says)."""
    formats = meta.get("network_data_format", {})
    pred = formats.get("outputs", {}).get("pred", {})
    labels = {int(k): str(v) for k, v in (pred.get("channel_def") or {}).items()}
    definition = parser.get("network_def")
    definition = definition if isinstance(definition, dict) else {}
    num_classes = pred.get("num_channels") or len(labels)
    in_channels = formats.get("inputs", {}).get("image", {}).get("num_channels", 1)
    for key, value in (("in_channels", definition.get("in_channels")),
                       ("out_channels", definition.get("out_channels", definition.get("num_classes")))):
        if isinstance(value, int):
            in_channels, num_classes = (value, num_classes) if key == "in_channels" else (in_channels, value)
    labels = {c: labels.get(c, str(c)) for c in range(int(num_classes))}
    return labels, int(in_channels), int(num_classes)


def _modality(meta: dict) -> str:
    tag = str(meta.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("modality", "CT")).upper()
    return "MRI" if tag in ("MR", "MRI") else "CT"


def _config(window: dict):
    from radseg.configs.loader import load_config

    cfg = load_config(None)
    cfg.train = dataclasses.replace(cfg.train, roi_size=list(window["roi_size"]), amp="none")
    cfg.inference = dataclasses.replace(cfg.inference, **window, mirror=False, largest_component=[],
                                        min_component_ml=[], inside=[])
    return cfg
