"""Patch-based caches of preprocessed cases: in RAM under a budget, or on disk keyed by content.

The deterministic preprocessing chain runs once per case; the random tail (patch sampling,
augmentation) runs every epoch on the cached result.

* ``ram``: MONAI's ``CacheDataset`` holds as many cases as fit in ``cache.ram_budget_gb``; the rest
  are loaded and preprocessed each epoch.
* ``disk``: a ``PersistentDataset`` whose entries are keyed by the source files, the preprocessing
  settings and the radseg/MONAI versions (:mod:`radseg.pipeline.data.cache_keys`). A damaged entry is
  rebuilt with a warning; entries are written atomically, so all DDP ranks can share one folder.

``radseg cache`` (:mod:`radseg.pipeline.data.fill_cache`) fills the disk folder whatever ``cache.mode`` says
(a RAM cache would end with the command) and stores the dataset's fingerprint there; training then
reads both: a RAM cache fills itself from the disk entries it finds instead of preprocessing again.
The folder is ``cache.cache_dir``, else ``$RADSEG_CACHE_DIR``, else ``./.radseg-cache``.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler
from monai.data import CacheDataset, DataLoader, Dataset, list_data_collate

from radseg.configs.schema import CacheConfig
from radseg.errors import ConfigError
from radseg.pipeline.data.cache_keys import (
    describe_cached_steps, estimate_case_bytes, item_key, settings_digest,
)
from radseg.pipeline.data.persistent_cache import DiskBackedCacheDataset, SafePersistentDataset
from radseg.progress import terminal_progress

logger = logging.getLogger(__name__)

GIB = 2**30
#: the disk cache folder when neither ``cache.cache_dir`` nor :data:`CACHE_DIR_ENV` is set
DEFAULT_CACHE_DIR = ".radseg-cache"
#: environment variable naming the disk cache folder (as nnU-Net's ``nnUNet_preprocessed``)
CACHE_DIR_ENV = "RADSEG_CACHE_DIR"
_ITEMSIZE = {"float16": 2, "float32": 4}


def resolve_cache_dir(cache_cfg: CacheConfig) -> Path:
    """The cache folder: ``cache.cache_dir``, else ``$RADSEG_CACHE_DIR``, else ``.radseg-cache`` here."""
    return Path(cache_cfg.cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).absolute()


def _writable_cache_dir(cache_cfg: CacheConfig) -> Path:
    """:func:`resolve_cache_dir`, refused when a file stands where the folder should be.

    Raises:
        ConfigError: the cache folder is a file.
    """
    folder = resolve_cache_dir(cache_cfg)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"the cache folder {folder} (cache.cache_dir, else ${CACHE_DIR_ENV}, else "
                          f"./{DEFAULT_CACHE_DIR}) is a file; move it away or set cache.cache_dir to a folder")
    return folder


def _entry_key(settings: Mapping[str, Any], transform: Any):
    """``hash_func`` of the disk entries: the source files, ``settings`` and the cached steps."""
    keyed = {"settings": dict(settings), "cached_steps": describe_cached_steps(transform)}
    return functools.partial(item_key, settings_hash=settings_digest(keyed))


def build_dataset(
    datalist: Sequence[Mapping[str, Any]],
    transform: Any,
    cache_cfg: CacheConfig,
    *,
    settings: Mapping[str, Any],
    budget_bytes_per_case: int | None = None,
    progress: bool = True,
) -> Dataset:
    """A dataset over ``datalist`` that caches the deterministic head of ``transform``.

    Args:
        datalist: ``{IMAGE, LABEL, CASE_ID}`` dicts (see :func:`radseg.pipeline.data.datalist.to_datalist`).
        transform: a MONAI ``Compose``: deterministic steps first, random steps after.
        cache_cfg: ``cache`` section of the config (mode, budget, folder, image dtype, workers).
        settings: the resolved preprocessing (spacing, window, normalisation, crop, dtype); hashed
            into disk-cache keys and used for the RAM estimate (``target_spacing``).
        budget_bytes_per_case: a known size of one cached case; None estimates it per case from
            the image headers.
        progress: show a progress bar while filling the RAM cache.

    Returns:
        ``CacheDataset`` (ram), :class:`SafePersistentDataset` (disk) or plain ``Dataset`` (none).

    Raises:
        ConfigError: an unknown cache mode.
    """
    datalist = list(datalist)
    if cache_cfg.mode == "none":
        return Dataset(datalist, transform)
    if cache_cfg.mode == "disk":
        cache_dir = _writable_cache_dir(cache_cfg) / "entries"
        logger.info("disk cache of %d cases in %s", len(datalist), cache_dir)
        return SafePersistentDataset(datalist, transform, cache_dir=cache_dir,
                                     hash_func=_entry_key(settings, transform))
    if cache_cfg.mode == "ram":
        return _build_ram_dataset(datalist, transform, cache_cfg, settings, budget_bytes_per_case, progress)
    raise ConfigError(f"cache.mode must be 'ram', 'disk' or 'none', not {cache_cfg.mode!r}")


def _build_ram_dataset(datalist, transform, cache_cfg, settings, bytes_per_case, progress) -> CacheDataset:
    budget = int(cache_cfg.ram_budget_gb * GIB)
    itemsize = _ITEMSIZE[cache_cfg.image_dtype]
    cache_num, estimated = 0, 0
    for item in datalist:
        size = bytes_per_case
        if size is None:
            size = estimate_case_bytes(item, settings.get("target_spacing"), itemsize)
        if estimated + size > budget:
            break
        cache_num, estimated = cache_num + 1, estimated + size
    options = {"cache_num": cache_num, "num_workers": max(1, cache_cfg.num_workers),
               "progress": terminal_progress(progress)}  # MONAI's own bar: on a terminal only
    entries = resolve_cache_dir(cache_cfg) / "entries"
    if entries.is_dir():  # `radseg cache` filled it: load its entries instead of preprocessing again
        dataset = DiskBackedCacheDataset(datalist, transform, entries=entries,
                                         hash_func=_entry_key(settings, transform), **options)
        logger.info("RAM cache: %d of %d cases loaded from the disk cache %s", dataset.loaded_from_disk,
                    cache_num, entries)
    else:
        dataset = CacheDataset(datalist, transform, **options)
    sizes = cached_bytes(dataset)
    logger.info(
        "RAM cache: %d of %d cases fit in %.2f GiB (estimated %.1f MiB); cached %.1f MiB, %.1f MiB per case",
        cache_num, len(datalist), cache_cfg.ram_budget_gb, estimated / 2**20,
        sum(sizes) / 2**20, (np.mean(sizes) if sizes else 0.0) / 2**20,
    )
    return dataset


def cached_bytes(dataset: Dataset) -> list[int]:
    """Bytes held by each case in a filled ``CacheDataset`` (tensors and arrays only)."""
    return [_nbytes(item) for item in getattr(dataset, "_cache", []) if item is not None]


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, Mapping):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def shard_for_rank(datalist: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """The disjoint share of ``datalist`` a DDP rank caches: every case on exactly one rank.

    Cases go round-robin (rank r gets items r, r + world_size, ...), so shard sizes differ by at
    most one; nothing is padded or repeated.

    Raises:
        ConfigError: ``world_size`` < 1 or ``rank`` outside ``[0, world_size)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, world_size={world_size}"
        )
    return list(datalist)[rank::world_size]


def build_loader(
    dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int,
    weights: Sequence[float] | None = None,
) -> DataLoader:
    """A MONAI ``DataLoader`` with reproducible shuffling and per-worker random states.

    The seeded generator fixes the order and, through MONAI's ``worker_init_fn``, each worker's
    transform seeds. Workers persist across epochs (no restart cost, caches stay warm).
    ``list_data_collate`` flattens the ``num_samples`` patches each case yields into the batch.

    Args:
        dataset: from :func:`build_dataset`.
        batch_size: cases per batch (each gives ``num_samples`` patches).
        num_workers: worker processes; 0 loads in the main process.
        shuffle: reshuffle every epoch.
        seed: seed of the shuffling and augmentation random streams.
        weights: sampling weight of each case (a DDP shard's, see
            :func:`radseg.pipeline.data.shards.weighted_shard`); unequal weights draw
            ``len(dataset)`` cases per pass with replacement, in proportion to them.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if weights is not None and len(set(weights)) > 1:
        sampler = WeightedRandomSampler(list(weights), len(dataset), replacement=True, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=list_data_collate,
    )


def preprocess_settings(resolved: Any, image_dtype: str) -> dict[str, Any]:
    """The settings a cached case depends on: the resolved preprocessing and the image dtype."""
    return {**resolved.to_dict(), "image_dtype": image_dtype}
