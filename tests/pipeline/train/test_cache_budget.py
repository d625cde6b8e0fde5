"""The cache training uses: `radseg cache` warms every entry of it, and its RAM budget holds."""

from __future__ import annotations

import pytest

from radseg.configs.loader import load_config
from radseg.pipeline.core.distributed import DistInfo
from radseg.pipeline.data import persistent_cache
from radseg.pipeline.data.cache import GIB, cached_bytes
from radseg.pipeline.data.fill_cache import build_cache_for_dataset
from radseg.pipeline.data.cache_keys import estimate_case_bytes
from radseg.pipeline.data.datalist import discover_dataset, to_datalist
from radseg.pipeline.train.run_setup import prepare_data
from conftest import TINY_TRAIN


class _Counter:
    """Counts disk-cache hits (entries loaded) and misses (cases preprocessed) by wrapping the cache."""

    def __init__(self, monkeypatch):
        self.hits, self.misses = [], 0
        load, pre = persistent_cache._load_entry, persistent_cache.SafePersistentDataset._pre_transform

        def counted_load(entry, case_id):
            found = load(entry, case_id)
            if found is not None:
                self.hits.append(entry.name)
            return found

        def counted_pre(dataset, item):
            self.misses += 1
            return pre(dataset, item)

        monkeypatch.setattr(persistent_cache, "_load_entry", counted_load)
        monkeypatch.setattr(persistent_cache.SafePersistentDataset, "_pre_transform", counted_pre)


def test_radseg_cache_warms_every_entry_training_reads(phantom_dataset, tmp_path, monkeypatch):
    from radseg.pipeline.train.fit import fit

    cache_dir = tmp_path / "cache"
    cfg = load_config("demo", [*TINY_TRAIN, "train.max_epochs=1", "cache.mode=disk", f"cache.cache_dir={cache_dir}"])
    counter = _Counter(monkeypatch)
    summary = build_cache_for_dataset(phantom_dataset, cfg)
    written = sorted(p.name for p in (cache_dir / "entries").glob("*.pt"))
    assert summary.cached_cases == 4 and len(written) == 4 and counter.misses == 4
    counter.hits.clear()
    counter.misses = 0
    fit(cfg, phantom_dataset, tmp_path / "run", progress=False)
    assert counter.misses == 0, "training preprocessed cases that `radseg cache` had cached"
    assert sorted(set(counter.hits)) == written, "every training and validation case read its warm entry"
    assert sorted(p.name for p in (cache_dir / "entries").glob("*.pt")) == written, "no second copy on disk"


@pytest.mark.parametrize("roi_z", [16, 64])
def test_ram_cache_holds_no_more_than_its_estimate_and_budget(multichannel_dataset, tmp_path, roi_z):
    # 20-slice MR cases at their own spacing; a 64-slice patch used to be cached padded (3x)
    cfg = load_config("demo", [*TINY_TRAIN, "data.modality=auto", "preprocess.target_spacing=[1.5,1.5,3]",
                               f"train.roi_size=[32,32,{roi_z}]", "cache.mode=ram"])
    items = to_datalist(discover_dataset(multichannel_dataset).training)
    estimates = {item["case_id"]: estimate_case_bytes(item, (1.5, 1.5, 3.0), 2) for item in items}
    cfg.cache.ram_budget_gb = sum(estimates.values()) / GIB  # exactly what the estimate says all cases need
    data = prepare_data(cfg, multichannel_dataset, tmp_path / "run", DistInfo(), fresh=True, progress=False)
    held = cached_bytes(data.train_dataset) + cached_bytes(data.val_dataset)
    assert len(held) == len(items), "every case fits the budget its estimate asked for"
    assert sum(held) <= cfg.cache.ram_budget_gb * GIB
    for dataset in (data.train_dataset, data.val_dataset):
        for item, size in zip(dataset.data, cached_bytes(dataset)):
            assert size <= estimates[item["case_id"]]
            assert size >= 0.5 * estimates[item["case_id"]], "the estimate is close, not just an upper bound"
