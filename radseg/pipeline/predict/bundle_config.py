"""A MONAI bundle's config read with MONAI's ConfigParser, on a short leash.

radseg reads the config, expands its ``%`` macros and relative ids, and never parses it as a whole:
each item prediction needs (``network_def``, ``preprocessing``, ``inferer``, the checkpoint loader's
``load_path``) is checked with every item it references (:mod:`.bundle_checks`), and only those
items are copied into a fresh ConfigParser that builds it. Items nothing needs (``imports``,
``evaluator``, ``run``) never reach MONAI's resolver, so none of them runs. Inside expressions
``torch.device`` is the CPU (or the device asked for), ``torch.load`` reads with
``weights_only=True`` and ``torch.jit.load`` reads only the bundle's own ``models/model.ts``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radseg.errors import DataError
from radseg.pipeline.predict.bundle_checks import check_macros, closure

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


def config_file(folder: Path) -> Path | None:
    """The bundle's inference config, or None when ``folder`` is not a bundle."""
    if not (folder / "configs" / "metadata.json").is_file():
        return None
    return next((folder / "configs" / n for n in CONFIG_NAMES if (folder / "configs" / n).is_file()), None)


@dataclass
class BundleConfig:
    """A bundle's config as read: plain values (macros expanded), never evaluated as a whole."""

    raw: Any  # a monai.bundle.ConfigParser; only its plain content is read
    folder: Path
    device: torch.device

    def get(self, item_id: str, default: Any = None) -> Any:
        """The item's plain config (nothing evaluated)."""
        return self.raw.get(item_id, default)


def read_bundle_config(folder: Path, device: torch.device) -> BundleConfig:
    """The bundle's inference config and metadata, macros expanded, ``bundle_root`` set to ``folder``.

    Raises:
        DataError: a macro reading another file, or one that does not expand.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file(folder)))
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    parser["bundle_root"] = str(folder)
    check_macros(parser.get(), folder)
    try:
        parser.resolve_macro_and_relative_ids()
    except Exception as err:  # a macro naming a missing item, or one that expands into itself
        raise DataError(f"bundle {folder}: its % macros do not expand ({type(err).__name__}: "
                        f"{(str(err).splitlines() or [''])[0][:200]}); fix: correct the macro") from err
    return BundleConfig(parser, folder, device)


def checked_content(config: BundleConfig, item_id: str, source: Path, *, instantiate: bool = True) -> Any:
    """The built ``item_id`` once it and every item it references pass :mod:`.bundle_checks`."""
    from monai.bundle import ConfigParser

    ids = closure(config.raw.get(), item_id, source)
    parser = ConfigParser(config=_subset(config.raw.get(), ids),
                          globals={"torch": _BundleTorch(config.device, config.folder), "os": "os"})
    try:
        content = parser.get_parsed_content(item_id, instantiate=instantiate)
    except Exception as err:  # MONAI raises what the config's callables raise, wrapped
        cause = _data_error(err)
        if cause is not None:
            raise cause from err
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"bundle {source}: cannot build {item_id!r} ({type(err).__name__}: {detail}); fix: "
                        "check the bundle's files (models/) and its config") from err
    return content if instantiate else _plain_config(content)


def _data_error(err: BaseException | None) -> DataError | None:
    while err is not None and not isinstance(err, DataError):
        err = err.__cause__ or err.__context__
    return err


def _subset(raw: dict, ids: set[str]) -> dict:
    """A config holding only ``ids`` (copies; other list entries are None, other keys absent)."""
    fresh: dict = {}
    for item_id in sorted(ids, key=lambda i: i.count("::")):
        parts = item_id.split("::")
        if any("::".join(parts[:n]) in ids for n in range(1, len(parts))):
            continue  # copied with an enclosing item
        node, raw_node = fresh, raw
        for depth, part in enumerate(parts):
            key = int(part) if isinstance(raw_node, list) else part
            raw_node = raw_node[key]
            if depth == len(parts) - 1:
                node[key] = copy.deepcopy(raw_node)
            elif (node[key] if isinstance(node, list) else node.get(key)) is None:
                node[key] = [None] * len(raw_node) if isinstance(raw_node, list) else {}
            node = node[key]
    return fresh


def _plain_config(value):
    """A resolved config item as plain dicts and lists (MONAI keeps nested components as objects)."""
    if hasattr(value, "get_config"):
        value = value.get_config()
    if isinstance(value, dict):
        return {k: _plain_config(v) for k, v in value.items()}
    return [_plain_config(v) for v in value] if isinstance(value, list) else value


class _BundleTorch:
    """``torch`` for bundle expressions: one device, files read with ``weights_only=True``, and
    ``jit.load`` of the bundle's own ``models/model.ts`` only (a TorchScript file is code)."""

    def __init__(self, device: torch.device, folder: Path):
        self._device = device
        self.jit = _BundleJit(folder)

    def __getattr__(self, name: str):
        return getattr(torch, name)

    def device(self, *args, **kwargs) -> torch.device:
        return self._device

    def from_numpy(self, array) -> torch.Tensor:
        return torch.as_tensor(array)

    def load(self, path, *args, **kwargs):
        return load_weights(path)


class _BundleJit:
    def __init__(self, folder: Path):
        self._model = (folder / "models" / "model.ts").resolve()

    def load(self, path, map_location=None, **kwargs) -> torch.jit.ScriptModule:
        if Path(str(path)).resolve() != self._model:
            raise DataError(f"bundle {self._model.parents[1]}: torch.jit.load({str(path)!r}) reads a file other than "
                            "the bundle's models/model.ts; radseg loads TorchScript only from there; fix: move the "
                            "network to models/model.ts")
        return torch.jit.load(str(self._model), map_location=map_location)


def load_weights(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, numpy arrays allowed (DiNTS' arch codes hold them).

    Raises:
        DataError: the file is missing or holds other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"bundle file {path} is missing; a bundle keeps its weights under models/; fix: copy the "
                        "bundle's models/ folder (the zoo downloads it separately) or point to the full bundle")
    arrays = [np.ndarray, np.dtype, _reconstruct(), *{type(np.dtype(t)) for t in "fdilbB?"}]
    try:
        with torch.serialization.safe_globals(arrays):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"bundle file {path} cannot be read with weights_only=True ({type(err).__name__}: "
                        f"{(str(err).splitlines() or [''])[0][:200]}); fix: save the weights as a state dict") from err


def _reconstruct():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct
