"""``radseg cache``: fingerprint a dataset, resolve its preprocessing and fill the disk cache.

Training reads the entries in both cache modes (``ram`` fills its RAM cache from them) and a new
run reuses the fingerprint stored here (:func:`stored_fingerprint_path`), so the command does work
training would otherwise repeat.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import Dataset

from radseg.configs.schema import CacheConfig, RadsegConfig
from radseg.pipeline.data.cache import (_nbytes, _writable_cache_dir, build_dataset, cached_bytes,
                                        preprocess_settings, resolve_cache_dir)
from radseg.pipeline.data.cache_keys import datalist_digest
from radseg.pipeline.data.datalist import discover_dataset, to_datalist
from radseg.progress import progress_bar
from radseg.transforms.fingerprint import compute_fingerprint, load_fingerprint, resolve_preprocess, save_fingerprint
from radseg.transforms.preprocess import build_preprocess_transforms

logger = logging.getLogger(__name__)


@dataclass
class CacheSummary:
    """What :func:`build_cache_for_dataset` did; ``str()`` gives a short table for people."""

    dataset: str
    root: str
    layout: str
    modality: str
    num_cases: int
    target_spacing: tuple[float, ...]
    ct_window: tuple[float, float] | None
    normalization: str
    mode: str
    where: str  # the disk folder, or the RAM budget
    cached_cases: int
    bytes_per_case: list[int]
    seconds: float
    fingerprint_path: str

    @property
    def total_bytes(self) -> int:
        return int(sum(self.bytes_per_case))

    def __str__(self) -> str:
        mib = 2**20
        sizes = self.bytes_per_case or [0]
        spacing = " x ".join(f"{s:.3g}" for s in self.target_spacing)
        window = f"[{self.ct_window[0]:.0f}, {self.ct_window[1]:.0f}] HU" if self.ct_window else "none"
        rows = [
            ("dataset", f"{self.dataset} ({self.root})"),
            ("cases", f"{self.num_cases} ({self.layout} layout, {self.modality})"),
            ("target spacing", f"{spacing} mm"),
            ("window", f"{window}, {self.normalization} normalisation"),
            ("cache", f"{self.mode}: {self.cached_cases} of {self.num_cases} cases cached ({self.where})"),
            ("bytes per case", f"mean {np.mean(sizes) / mib:.1f} MiB, max {max(sizes) / mib:.1f} MiB"),
            ("total", f"{self.total_bytes / mib:.1f} MiB"),
            ("time", f"{self.seconds:.1f} s"),
            ("fingerprint", self.fingerprint_path),
        ]
        return "\n".join(f"{name:<15} {value}" for name, value in rows)


def build_cache_for_dataset(dataset_path: str | Path, cfg: RadsegConfig) -> CacheSummary:
    """Fingerprint a dataset, resolve its preprocessing and fill the disk cache (``radseg cache``).

    The entries go to the disk cache folder (:func:`resolve_cache_dir`) whatever ``cache.mode``
    says: training reads them in both modes (``ram`` fills its RAM cache from them). The
    fingerprint is stored there too (never in the user's dataset), in a subfolder keyed by the
    dataset's files and modality, and reused (by training too) while they are unchanged.

    Args:
        dataset_path: dataset folder or CSV (see :func:`radseg.pipeline.data.datalist.discover_dataset`).
        cfg: the run config (``data.modality``, ``preprocess``, ``cache``).

    Returns:
        The summary: cases, target spacing, window, cached cases, bytes per case, time.

    Raises:
        DataError: the dataset cannot be discovered or read.
        ConfigError: a setting cannot be resolved (e.g. unknown modality with "auto" settings).
    """
    start = time.perf_counter()
    disk = dataclasses.replace(cfg.cache, mode="disk")
    _writable_cache_dir(disk)
    spec = discover_dataset(dataset_path)
    datalist = to_datalist(spec.training)
    modality = spec.modality if cfg.data.modality == "auto" else cfg.data.modality
    resolved, fingerprint_path = _resolve_for_dataset(spec.name, datalist, modality, cfg)
    transform = build_preprocess_transforms(resolved, with_label=True, image_dtype=cfg.cache.image_dtype)
    settings = preprocess_settings(resolved, cfg.cache.image_dtype)
    dataset = build_dataset(datalist, transform, disk, settings=settings)
    sizes = _fill(dataset, disk)
    return CacheSummary(
        dataset=spec.name, root=str(spec.root), layout=spec.layout, modality=resolved.modality,
        num_cases=len(datalist), target_spacing=tuple(resolved.target_spacing), ct_window=resolved.ct_window,
        normalization="zscore" if resolved.modality != "CT" else resolved.ct_normalization,
        mode=disk.mode, where=_where(disk),
        cached_cases=len(sizes), bytes_per_case=sizes, seconds=time.perf_counter() - start,
        fingerprint_path=str(fingerprint_path),
    )


def _where(cache_cfg: CacheConfig) -> str:
    if cache_cfg.mode == "disk":
        return str(resolve_cache_dir(cache_cfg))
    return f"budget {cache_cfg.ram_budget_gb:g} GiB" if cache_cfg.mode == "ram" else "no cache"


def stored_fingerprint_path(name: str, datalist: list[dict], modality: str, cache_cfg: CacheConfig) -> Path:
    """Where ``radseg cache`` keeps a dataset's fingerprint: a subfolder keyed by its files and modality."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name) or "dataset"
    digest = datalist_digest(datalist, extra={"modality": modality})[:12]
    return resolve_cache_dir(cache_cfg) / "datasets" / f"{slug}-{digest}" / "fingerprint.json"


def _resolve_for_dataset(name: str, datalist: list[dict], modality: str, cfg: RadsegConfig) -> tuple[Any, Path]:
    """Load (or compute and save) the fingerprint in the cache folder, then resolve preprocessing."""
    path = stored_fingerprint_path(name, datalist, modality, cfg.cache)
    if path.is_file():
        fingerprint = load_fingerprint(path)
        logger.info("reusing fingerprint %s", path)
    else:
        fingerprint = compute_fingerprint(datalist, modality)
        save_fingerprint(fingerprint, path)
        logger.info("wrote fingerprint %s", path)
    return resolve_preprocess(cfg.preprocess, fingerprint, modality), path


def _fill(dataset: Dataset, cache_cfg: CacheConfig) -> list[int]:
    """Fill a disk cache (RAM caches fill themselves on construction); bytes of each cached case."""
    if cache_cfg.mode == "ram":
        return cached_bytes(dataset)
    if cache_cfg.mode != "disk":
        return []
    workers = max(1, cache_cfg.num_workers)
    with ThreadPoolExecutor(workers) as pool:
        items = pool.map(lambda index: _nbytes(dataset[index]), range(len(dataset)))
        return list(progress_bar(items, total=len(dataset), desc="caching", unit="case"))
