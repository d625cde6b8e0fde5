"""A MONAI bundle's config read with MONAI's ConfigParser, on a short leash.

Only what prediction needs is resolved: ``network_def``, ``preprocessing``, ``inferer`` and the
checkpoint loader's ``load_path``, with the items they reference. Before anything is built, every
``_target_`` among them must be a MONAI class and every ``$`` expression may only read values,
index, do arithmetic and call the few functions bundles use to find their files (``torch.load``,
``torch.from_numpy``, ``torch.device``, ``torch.jit.load``, ``os.path.join``): bundle configs are
code, and radseg runs none but these. Inside them ``torch.device`` is the CPU (or the device asked
for) and ``torch.load`` reads with ``weights_only=True``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radseg.errors import DataError

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
_REFERENCE = re.compile(r"@(\w+(?:(?:#|::)\w+)*)")
#: dotted names a bundle expression may call
_CALLS = {"torch.load", "torch.from_numpy", "torch.device", "torch.jit.load", "torch.cuda.is_available",
          "os.path.join", "list", "tuple", "int", "float", "str", "len", "sorted", "dict"}
_NAMES = {"torch", "os", "np", "numpy", "monai", "_ref", "True", "False", "None"}
_NODES = (ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Name, ast.Attribute, ast.Call,
          ast.Subscript, ast.Slice, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare, ast.BoolOp, ast.keyword,
          ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def config_file(folder: Path) -> Path | None:
    """The bundle's inference config, or None when ``folder`` is not a bundle."""
    if not (folder / "configs" / "metadata.json").is_file():
        return None
    return next((folder / "configs" / n for n in CONFIG_NAMES if (folder / "configs" / n).is_file()), None)


def read_bundle_config(folder: Path, device: torch.device):
    """A ConfigParser over the bundle's inference config and metadata, ``bundle_root`` set to ``folder``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(globals={"torch": _BundleTorch(device), "os": "os"})
    parser.read_config(str(config_file(folder)))
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    parser["bundle_root"] = str(folder)
    return parser


def checked_content(parser, item_id: str, source: Path, *, instantiate: bool = True) -> Any:
    """``parser.get_parsed_content(item_id)`` once its targets and expressions are checked."""
    for target, expression, where in _closure(parser, item_id):
        if target is not None:
            _check_target(target, where, source)
        if expression is not None:
            _check_expression(expression, where, source)
    try:
        content = parser.get_parsed_content(item_id, instantiate=instantiate)
    except Exception as err:  # MONAI raises what the config's callables raise, wrapped
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"bundle {source}: cannot build {item_id!r} ({type(err).__name__}: {detail}); fix: "
                        "check the bundle's files (models/) and its config") from err
    return content if instantiate else _plain_config(content)


def _plain_config(value):
    """A resolved config item as plain dicts and lists (MONAI keeps nested components as objects)."""
    if hasattr(value, "get_config"):
        value = value.get_config()
    if isinstance(value, dict):
        return {k: _plain_config(v) for k, v in value.items()}
    return [_plain_config(v) for v in value] if isinstance(value, list) else value


def _closure(parser, item_id: str):
    """(target, expression, id) of ``item_id`` and every item it references, each once."""
    seen, todo = set(), [item_id]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for target, expression, refs in _walk(parser[current]):
            todo.extend(refs)
            yield target, expression, current


def _walk(value):
    if isinstance(value, dict):
        yield value.get("_target_"), None, []
        for key, child in value.items():
            if key != "_target_":
                yield from _walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child)
    elif isinstance(value, str) and value.startswith("$"):
        yield None, value[1:], [r for r in _REFERENCE.findall(value)]
    elif isinstance(value, str) and value.startswith("@"):
        yield None, None, [value[1:]]


def _check_target(target: str, where: str, source: Path) -> None:
    from monai.bundle.config_item import ComponentLocator

    if "." in target:
        if not target.startswith("monai."):
            raise DataError(f"bundle {source}: {where} names _target_ {target!r}, outside MONAI; radseg builds only "
                            "MONAI classes from a bundle; fix: run this bundle with MONAI")
        return
    if ComponentLocator().get_component_module_name(target) is None:
        raise DataError(f"bundle {source}: {where} names {target!r}, which MONAI {_monai_version()} does not have; "
                        "fix: correct the name (e.g. UNet, SegResNet, DiNTS) or use the MONAI version the bundle names")


def _check_expression(expression: str, where: str, source: Path) -> None:
    text = _REFERENCE.sub("_ref", expression)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        tree = None
    for node in ast.walk(tree) if tree is not None else [None]:
        bad = node is None or not isinstance(node, _NODES)
        bad = bad or (isinstance(node, ast.Name) and node.id not in _NAMES)
        bad = bad or (isinstance(node, ast.Attribute) and node.attr.startswith("_"))
        bad = bad or (isinstance(node, ast.Call) and _dotted(node.func) not in _CALLS)
        if bad:
            raise DataError(f"bundle {source}: {where} holds the expression {expression.strip()!r}, which radseg "
                            "will not run (it runs only reads, arithmetic and torch.load/from_numpy/device, "
                            "torch.jit.load, os.path.join); fix: run this bundle with MONAI")


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else "?"


def _monai_version() -> str:
    import monai

    return monai.__version__


class _BundleTorch:
    """``torch`` for bundle expressions: one device, and files read with ``weights_only=True``."""

    def __init__(self, device: torch.device):
        self._device = device

    def __getattr__(self, name: str):
        return getattr(torch, name)

    def device(self, *args, **kwargs) -> torch.device:
        return self._device

    def from_numpy(self, array) -> torch.Tensor:
        return torch.as_tensor(array)

    def load(self, path, *args, **kwargs):
        return load_weights(path)


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
