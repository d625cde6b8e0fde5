"""The disk cache's datasets: MONAI's ``PersistentDataset`` made safe to share and to damage, and a
RAM cache that fills itself from the disk entries ``radseg cache`` wrote.

Entries are keyed by :mod:`radseg.pipeline.data.cache_keys`; a damaged entry (garbage, truncated,
empty, wrong content) is deleted, rebuilt and logged as a warning, never an exception; entries are
written beside their final name and renamed, so a reader (another DDP rank) sees a whole entry or
none.
"""

from __future__ import annotations

import logging
import threading
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from monai.data import CacheDataset, PersistentDataset
from monai.utils import convert_to_tensor

from radseg.atomic import atomic_path

from radseg.keys import IMAGE
from radseg.pipeline.data.cache_keys import case_id_of

logger = logging.getLogger(__name__)


class SafePersistentDataset(PersistentDataset):
    """A ``PersistentDataset`` whose damaged entries are rebuilt, never fatal, and written atomically.

    MONAI's own check only recovers from some load errors, and it writes the temporary file in the
    system temp folder, so the final move may be a copy across file systems (not atomic).
    """

    def _cachecheck(self, item_transformed: Mapping[str, Any]) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        entry = self.cache_dir / f"{self.hash_func(item_transformed).decode('utf-8')}.pt"
        if entry.is_file():
            cached = _load_entry(entry, case_id_of(item_transformed))
            if cached is not None:
                return cached
        result = self._pre_transform(deepcopy(item_transformed))
        result = convert_to_tensor(result, convert_numeric=False, track_meta=self.track_meta)
        _write_entry(entry, result, self.pickle_protocol)
        return result


class DiskBackedCacheDataset(CacheDataset):
    """MONAI's ``CacheDataset`` whose cases come from the disk entries where present (read only).

    A case without a usable entry is preprocessed as usual; every cached case is held as plain
    tensors, as the disk entries are, so the random tail sees one kind of item.

    Args:
        data, transform, **kwargs: as ``CacheDataset``.
        entries: the folder of disk entries (``<cache folder>/entries``).
        hash_func: the entries' key function (as the disk cache's).
    """

    def __init__(self, data, transform, *, entries: Path, hash_func: Callable[[Any], bytes], **kwargs) -> None:
        self.entries, self.entry_hash = Path(entries), hash_func
        #: how many cases came from disk entries
        self.loaded_from_disk = 0
        self._count_lock = threading.Lock()  # CacheDataset fills its cache from a thread pool
        super().__init__(data, transform, **kwargs)

    def _load_cache_item(self, idx: int) -> Any:
        item = self.data[idx]
        entry = self.entries / f"{self.entry_hash(item).decode('utf-8')}.pt"
        if entry.is_file():
            cached = _load_entry(entry, case_id_of(item))
            if cached is not None:
                with self._count_lock:
                    self.loaded_from_disk += 1
                return cached
        return convert_to_tensor(super()._load_cache_item(idx), convert_numeric=False, track_meta=False)


def _load_entry(entry: Path, case_id: str) -> Any:
    """The cached item, or None (after a warning and deleting the file) when it cannot be used."""
    try:
        cached = torch.load(entry, weights_only=True, map_location="cpu")
        if not isinstance(cached, dict) or IMAGE not in cached:
            raise ValueError(f"expected a dict with key {IMAGE!r}, got {type(cached).__name__}")
        return cached
    except Exception as err:  # noqa: BLE001 - any damage (truncated zip, garbage, EOF) means rebuild
        logger.warning(
            "cache entry %s of case %s is damaged (%s: %s); deleting and rebuilding it",
            entry, case_id, type(err).__name__, str(err).splitlines()[0] if str(err) else "",
        )
        try:
            entry.unlink(missing_ok=True)
        except OSError:
            pass
        return None


def _write_entry(entry: Path, item: Any, pickle_protocol: int) -> None:
    """Write beside the target then rename: readers see a whole entry or none."""
    try:
        with atomic_path(entry) as tmp:
            torch.save(item, tmp, pickle_protocol=pickle_protocol)
    except OSError as err:
        logger.warning("could not write cache entry %s (%s); the case is recomputed next time", entry, err)
