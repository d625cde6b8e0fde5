"""What radseg lets a MONAI bundle's config run: the checks :mod:`.bundle_config` applies before building.

A bundle config is code. radseg builds an item only when every item it reaches (through ``@``
references, after ``%`` macros are expanded) passes these checks:

* ``_target_``: for ``network_def``, a class in ``monai.networks.nets`` that is a ``torch.nn.Module``;
  for ``preprocessing``, ``Compose`` and the transforms radseg maps (:mod:`.bundle_transforms`);
  for ``inferer``, ``SlidingWindowInferer``; nothing anywhere else. ``_mode_`` only ``default``.
* ``$`` expressions: constants, ``@`` references, indexing, arithmetic, comparisons and calls of
  :data:`CALLS` only; attributes only in those calls and in dtypes (``torch.float32``); no imports.
* ``%`` macros only within the config itself (a macro naming another file is refused).

Each refusal is one line naming the item and the reason.
"""

from __future__ import annotations

import ast
import pydoc
import re
from pathlib import Path
from typing import Any, Iterator

import torch

from radseg.errors import DataError

#: dotted names a bundle expression may call
CALLS = {"torch.load", "torch.from_numpy", "torch.device", "torch.jit.load", "torch.cuda.is_available",
         "os.path.join", "list", "tuple", "int", "float", "str", "len", "sorted", "dict", "bool"}
#: dotted names a bundle expression may read (dtypes: never callables that do work)
VALUES = ({f"torch.{n}" for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)}
          | {f"{m}.{t}" for m in ("np", "numpy") for t in ("float16", "float32", "float64", "int8", "int16", "int32",
                                                           "int64", "uint8", "bool_")} | {"os.sep"})
_NODES = (ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Name, ast.Attribute, ast.Call,
          ast.Subscript, ast.Slice, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare, ast.BoolOp, ast.keyword,
          ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_DOTTED = re.compile(r"monai(?:\.\w+)+")
_ROLES = {"network_def": "a network class of monai.networks.nets",
          "preprocessing": "Compose and the transforms radseg maps",
          "inferer": "SlidingWindowInferer"}


def closure(config: dict, item_id: str, source: Path) -> set[str]:
    """The ids ``item_id`` needs (itself and every item it references), each checked.

    Args:
        config: the bundle's config, macros and relative ids resolved.
        item_id: the item to build (``network_def``, ``preprocessing``, ``inferer``, a ``load_path``).
        source: the bundle folder, for messages.

    Raises:
        DataError: one line naming the first item that radseg will not run, and why.
    """
    from monai.bundle.reference_resolver import ReferenceResolver

    role = ReferenceResolver.split_id(item_id)[0]
    allowed = _allowed_targets(role)
    seen, todo = set(), [ReferenceResolver.normalize_id(item_id)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            value = _lookup(config, ReferenceResolver.split_id(current))
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise DataError(f"bundle {source}: {item_id} refers to @{current}, which the config does not have; "
                            "fix: correct the reference") from err
        for problem, refs in _walk(value, allowed, role):
            if problem:
                raise DataError(f"bundle {source}: {current} {problem}; radseg runs no other code from a bundle; "
                                "fix: run this bundle with MONAI (python -m monai.bundle run)")
            todo.extend(refs)
    return seen


def check_macros(value: Any, source: Path, where: str = "") -> None:
    """Refuse ``%`` macros that read another file (MONAI would load it while expanding)."""
    from monai.bundle import ConfigParser

    if isinstance(value, dict):
        for key, child in value.items():
            check_macros(child, source, f"{where}#{key}" if where else str(key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            check_macros(child, source, f"{where}#{index}")
    elif isinstance(value, str) and value.startswith("%") and ConfigParser.split_path_id(value[1:])[0]:
        raise DataError(f"bundle {source}: {where} holds the macro {value!r}, which reads another file; radseg reads "
                        "only the bundle's inference config; fix: copy that item into the config")


def _lookup(config: Any, parts: list[str]) -> Any:
    for part in parts:
        config = config[int(part)] if isinstance(config, list) else config[part]
    return config


def _walk(value, allowed: dict, role: str) -> Iterator[tuple[str | None, list[str]]]:
    """(problem or None, references) for every part of ``value``."""
    from monai.bundle.reference_resolver import ReferenceResolver

    if isinstance(value, dict):
        if "_target_" in value:
            yield _target_problem(value["_target_"], allowed, role), []
        if value.get("_mode_", "default") != "default":
            yield f"sets _mode_ {value['_mode_']!r} (radseg builds components only in the default mode)", []
        for key, child in value.items():
            if key != "_target_":
                yield from _walk(child, allowed, role)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child, allowed, role)
    elif isinstance(value, str) and value.startswith("%"):
        yield f"holds the macro {value!r}, which does not expand to an item of the config", []
    elif isinstance(value, str) and value.startswith("$"):
        yield _expression_problem(value[1:]), list(ReferenceResolver.match_refs_pattern(value))
    elif isinstance(value, str):
        yield None, list(ReferenceResolver.match_refs_pattern(value))


def _allowed_targets(role: str) -> dict[str, Any]:
    """The classes a ``_target_`` may name under ``role``, by name."""
    from monai import inferers, transforms
    from monai.networks import nets

    from radseg.pipeline.predict.bundle_transforms import MAPPED_TRANSFORMS

    if role == "network_def":
        return {n: c for n in dir(nets) if isinstance(c := getattr(nets, n), type) and issubclass(c, torch.nn.Module)}
    if role == "preprocessing":
        return {n: getattr(transforms, n) for n in (*MAPPED_TRANSFORMS, "Compose") if hasattr(transforms, n)}
    return {"SlidingWindowInferer": inferers.SlidingWindowInferer} if role == "inferer" else {}


def _target_problem(target: Any, allowed: dict, role: str) -> str | None:
    """Why radseg will not build ``target`` under ``role`` (None: it will)."""
    from monai.bundle.config_item import ComponentLocator

    if not isinstance(target, str) or target[:1] in ("$", "@", "%"):
        return f"names _target_ {target!r}, which is not a class name"
    if "." in target and not _DOTTED.fullmatch(target):
        return f"names _target_ {target!r}, outside MONAI"
    module = ComponentLocator().get_component_module_name(target) if "." not in target else None
    if "." not in target and module is None:
        return f"names {target!r}, which MONAI {_monai_version()} does not have (check the name or the MONAI version)"
    module = module[0] if isinstance(module, list) else module  # MONAI takes the first, and warns
    found = pydoc.locate(f"{module}.{target}" if module else target)
    if not any(found is cls for cls in allowed.values()):
        where = _ROLES.get(role)
        only = f"{role} may name only {where}" if where else "radseg builds no component there"
        return f"names _target_ {target!r}, which radseg will not build ({only})"
    return None


def _expression_problem(expression: str) -> str | None:
    """Why radseg will not evaluate ``expression`` (None: it only reads, indexes, computes and calls CALLS)."""
    from monai.bundle.reference_resolver import ReferenceResolver

    text = ReferenceResolver.id_matcher.sub("_ref", ReferenceResolver.normalize_id(expression)).strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        tree = None
    if tree is None or _bad_node(tree):
        return (f"holds the expression {expression.strip()[:120]!r}, which radseg will not run (it runs only reads, "
                f"indexing, arithmetic and {', '.join(sorted(c for c in CALLS if '.' in c))})")
    return None


def _bad_node(node: ast.AST) -> bool:
    if not isinstance(node, _NODES):
        return True
    if isinstance(node, ast.Call):
        children = [*node.args, *node.keywords]
        return _dotted(node.func) not in CALLS or any(_bad_node(child) for child in children)
    if isinstance(node, (ast.Attribute, ast.Name)):
        return not (_dotted(node) in VALUES or (isinstance(node, ast.Name) and node.id == "_ref"))
    return any(_bad_node(child) for child in ast.iter_child_nodes(node))


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else "?"


def _monai_version() -> str:
    import monai

    return monai.__version__
