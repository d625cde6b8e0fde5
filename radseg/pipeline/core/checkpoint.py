"""Checkpoints written atomically and read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain containers (dict, list, tuple, str, int, float, bool,
None) only, so it loads without unpickling arbitrary objects. Random-number-generator states
are converted to that form by :func:`capture_rng_state` and back by :func:`restore_rng_state`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radseg.atomic import atomic_path
from radseg.errors import DataError

logger = logging.getLogger(__name__)

#: what a run folder holds: the full training state, and the weights inference loads
LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash or SIGKILL at any moment leaves either the old file or the new one, never a torn file.

    Args:
        path: destination, e.g. ``RUN/last.pt``.
        state: tensors and plain containers only (see the module docstring).

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Args:
        path: a checkpoint file, or a run folder (see :func:`resolve_checkpoint`).
        map_location: where the tensors land.

    Raises:
        DataError: the file is missing, truncated or holds objects other than tensors and
            plain containers.
    """
    path = resolve_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for torn or foreign files
        raise DataError(
            f"checkpoint {path} cannot be read as a radseg checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}); "
            "it may be damaged or written by another tool"
        ) from err


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``--model`` names: the file itself, or a run folder's checkpoint.

    A run folder gives its ``best.pt`` (the best validated epoch), else its ``last.pt`` (the latest
    epoch, with a warning), as nnU-Net and MONAI bundles take a folder.

    Args:
        path: a ``.pt`` file or a run folder.

    Returns:
        The checkpoint file.

    Raises:
        DataError: the path does not exist, or the folder holds neither ``best.pt`` nor ``last.pt``.
    """
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                if name == LAST:
                    logger.warning("run folder %s has no %s; using %s (the latest epoch, not the best "
                                   "validated one)", path, BEST, LAST)
                return path / name
        raise DataError(f"run folder {path} holds no {BEST} or {LAST} ({_other_checkpoints(path)}); "
                        "expected the folder radseg train wrote, or a checkpoint file; fix: pass the run "
                        f"folder itself or its {BEST}")
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; check the run folder or train first")
    return path


def _other_checkpoints(folder: Path) -> str:
    """The .pt files in ``folder`` and its sub-folders' best.pt, as a hint ("found: ..." or "no .pt file")."""
    found = sorted(p.relative_to(folder).as_posix() for p in [*folder.glob("*.pt"), *folder.glob(f"*/{BEST}")])
    if not found:
        return "no .pt file in it"
    return "found: " + ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")


def _first_line(err: Exception) -> str:
    """The first line of an error message (torch's unpickling errors run to a dozen lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA random states as tensors and plain containers."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng_state` (CUDA only where present on both sides)."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
         numpy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
