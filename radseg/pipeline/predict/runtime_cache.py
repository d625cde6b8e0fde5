"""Where ``--runtime auto`` keeps its measurements: one JSON file per network, machine and library versions.

The key holds what changes which runtime is fastest: the network (a hash of its weights and the
run's config), the CPU (model name and the flags that pick kernels: AVX2, AVX-512, AVX512-BF16,
AMX), the thread count, the device, the window batch, and the versions of torch, onnxruntime and
OpenVINO. Another machine, another thread count or an upgraded library measures afresh. The files
live under the radseg cache folder (``$RADSEG_CACHE_DIR``, else ``./.radseg-cache``) in ``runtime/``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import torch

from radseg.atomic import write_text_atomic
from radseg.configs.schema import CacheConfig
from radseg.pipeline.data.cache import resolve_cache_dir

logger = logging.getLogger(__name__)

#: CPU flags that decide which kernels oneDNN, onnxruntime and OpenVINO run
_KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
_LIBRARIES = ("torch", "onnxruntime", "openvino")


def runtime_folder() -> Path:
    """``<radseg cache folder>/runtime`` (not created here)."""
    return resolve_cache_dir(CacheConfig()) / "runtime"


def network_digest(network: torch.nn.Module, config: Any = None) -> str:
    """SHA-256 of the network's weights (names, shapes, dtypes, bytes) and of ``config`` (JSON-able)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in network.state_dict().items():
        plain = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(plain.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def machine_facts(device: torch.device) -> dict[str, Any]:
    """The CPU model, its kernel flags, torch's thread count, the device and the library versions."""
    model, flags = _cpu_info()
    facts = {"cpu": model, "flags": [f for f in _KERNEL_FLAGS if f in flags],
             "threads": torch.get_num_threads(), "device": str(device), "versions": library_versions()}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def library_versions() -> dict[str, str | None]:
    """Installed versions of torch, onnxruntime and openvino (None: not installed)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cache_key(digest: str, facts: dict[str, Any], window_shape: Sequence[int], precision: str,
              candidates: Sequence[str]) -> str:
    """The file name stem of one measurement: a hash of everything it depends on."""
    keyed = {"network": digest, "machine": facts, "window": list(window_shape), "precision": precision,
             "candidates": list(candidates)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:24]


def read_choice(key: str) -> dict[str, Any] | None:
    """The stored measurement for ``key``, or None (absent or unreadable: measured again)."""
    path = runtime_folder() / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("runtime measurement %s is unreadable (%s); measuring again", path, err)
        return None


def write_choice(key: str, record: dict[str, Any]) -> Path | None:
    """Store a measurement atomically; a cache folder that cannot be written only costs a warning."""
    folder = runtime_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(folder / f"{key}.json", json.dumps(record, indent=2, sort_keys=True))
    except OSError as err:
        logger.warning("cannot store the runtime measurement in %s (%s); it is measured again next time",
                       folder, err.strerror or err)
        return None


def _cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine(), flags


def cpu_description() -> str:
    """One line naming this CPU, its usable cores and its native-bf16 support, for benchmark tables."""
    model, flags = _cpu_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    kernels = ", ".join(f for f in _KERNEL_FLAGS if f in flags) or "no AVX2"
    return f"{model}, {cores} usable cores ({kernels})"
