"""Cache keys: a hash of the source files, the transform settings and the software versions.

A disk-cache entry is reused only when nothing it was made from has changed: every image and label
file (absolute path, size, ``mtime_ns``; every file of a DICOM folder), the resolved preprocessing
settings, the radseg, MONAI and SimpleITK versions, and radseg's reader sources.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import monai
import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import Compose, RandomizableTrait, Transform

import radseg
from radseg.errors import DataError
from radseg.keys import CASE_ID, IMAGE, LABEL
from radseg.transforms.io import read_header

_PATH_KEYS = (IMAGE, LABEL)
#: bytes a cached case holds besides its voxels (CropForegroundd's start/end coordinates: 48)
CASE_OVERHEAD_BYTES = 256


def file_identity(path: str | Path) -> list:
    """What identifies a source file's content cheaply: absolute path, size and ``mtime_ns``.

    A folder (a DICOM series) is identified by every file in it, recursively.

    Raises:
        DataError: the path does not exist.
    """
    path = Path(path).absolute()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [str(path), [_stat_identity(p, path) for p in files]]
    if not path.is_file():
        raise DataError(f"source file {path} does not exist; fix: restore it or remove its case from the dataset")
    return _stat_identity(path, path.parent)


def _stat_identity(path: Path, root: Path) -> list:
    stat = path.stat()
    return [str(path.relative_to(root)) if path != root else str(path), stat.st_size, stat.st_mtime_ns]


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A stable hex digest of the transform settings, the software versions and radseg's own readers.

    The SimpleITK version and a digest of ``radseg/transforms``' sources are included because a
    change to how files are read (geometry, casting) changes the cached arrays as much as a setting.
    """
    payload = {"settings": settings, "radseg": radseg.__version__, "monai": monai.__version__,
               "simpleitk": sitk.Version.VersionString(), "transforms_source": _transforms_source_digest()}
    text = json.dumps(payload, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _transforms_source_digest() -> str:
    folder = Path(__file__).resolve().parents[2] / "transforms"
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def item_key(item: Mapping[str, Any], settings_hash: str) -> bytes:
    """The cache key of one datalist item (a ``{IMAGE, LABEL, CASE_ID}`` dict), as hex bytes.

    Args:
        item: datalist entry; ``IMAGE`` is a path or a list of paths (one per channel).
        settings_hash: :func:`settings_digest` of the preprocessing settings.

    Returns:
        sha256 hex digest (bytes, as MONAI's ``hash_func`` returns).
    """
    identity: dict[str, Any] = {"settings": settings_hash}
    for key in sorted(item):
        value = item[key]
        if key in _PATH_KEYS and value is not None:
            paths = value if isinstance(value, (list, tuple)) else [value]
            identity[key] = [file_identity(p) for p in paths]
        else:
            identity[key] = value
    text = json.dumps(identity, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest().encode()


def describe_cached_steps(transform: Any) -> list[dict[str, Any]]:
    """The steps a cache holds (those before the first random or non-MONAI step), with their settings.

    Each step is its class name and its public plain-valued attributes, two levels deep (MONAI's
    dictionary transforms keep their settings on an inner array transform), so a changed pixdim,
    window or pad size changes the disk-cache key even when the caller's ``settings`` miss it.
    """
    steps = transform.flatten().transforms if isinstance(transform, Compose) else [transform]
    described = []
    for step in steps:
        if isinstance(step, RandomizableTrait) or not isinstance(step, Transform):
            break
        described.append(_describe(step, depth=2))
    return described


def _describe(obj: Any, depth: int) -> dict[str, Any]:
    found: dict[str, Any] = {"class": type(obj).__name__}
    for name, value in sorted(vars(obj).items()):
        if name.startswith("_"):  # private state (e.g. a reader's last file names) is not a setting
            continue
        plain = _plain(value)
        if plain is not None:
            found[name] = plain
        elif depth > 0 and hasattr(value, "__dict__") and not isinstance(value, type):
            found[name] = _describe(value, depth - 1)
    return found


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a setting-like value, or None when it is not one."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.dtype, np.dtype)) or (isinstance(value, type) and issubclass(value, np.generic)):
        return str(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)) and all(_plain(v) is not None for v in value):
        return [_plain(v) for v in value]
    return None


def datalist_digest(datalist: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> str:
    """A digest of a whole datalist's source files (for a dataset's fingerprint folder)."""
    digest = settings_digest(dict(extra or {}))
    keys = [item_key(item, digest).decode() for item in datalist]
    return hashlib.sha256("".join(keys).encode()).hexdigest()


def estimate_case_bytes(
    item: Mapping[str, Any], target_spacing: Sequence[float] | None, image_itemsize: int
) -> int:
    """Upper estimate of a cached case's size in memory, from its image header only.

    What a cache holds is the preprocessed volume itself (training pads patches after the cache,
    validation shares the entry): voxels after resampling = physical extent / target spacing along
    each RAS axis (the crop to the body can only shrink this); bytes = voxels x (channels x
    ``image_itemsize`` + 1 for a uint8 label), plus the small arrays kept beside them (crop
    coordinates).

    Args:
        item: datalist entry.
        target_spacing: mm per voxel (x, y, z) in RAS, or None to keep the original spacing.
        image_itemsize: bytes per cached image voxel (2 for float16).
    """
    paths = item[IMAGE] if isinstance(item[IMAGE], (list, tuple)) else [item[IMAGE]]
    header = read_header(paths[0])
    if target_spacing is None:
        voxels = math.prod(header.shape[:3])
    else:
        extent = [header.shape[a] * header.spacing[a] for a in header.ras_axes()]  # mm along R, A, S
        voxels = math.prod(max(1, math.ceil(e / s)) for e, s in zip(extent, target_spacing))
    channels = len(paths) * max(1, header.num_components)
    has_label = item.get(LABEL) is not None
    return int(voxels * (channels * image_itemsize + (1 if has_label else 0))) + CASE_OVERHEAD_BYTES


def case_id_of(item: Mapping[str, Any]) -> str:
    """The case id of a datalist item, or its first image path when it has none."""
    if CASE_ID in item:
        return str(item[CASE_ID])
    image = item[IMAGE]
    return str(image[0] if isinstance(image, (list, tuple)) else image)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)
