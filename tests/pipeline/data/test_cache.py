"""Caches: the RAM budget, disk keys (files, settings, versions), damaged entries, DDP shards, loader."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import CastToTyped, Compose, EnsureChannelFirstd, LoadImaged, RandSpatialCropSamplesd, Spacingd
from monai.transforms import Transform

from radseg.configs.schema import CacheConfig
from radseg.keys import CASE_ID, IMAGE, LABEL
from radseg.pipeline.data import cache as cache_module
from radseg.pipeline.data.cache import GIB, build_dataset, build_loader, cached_bytes, shard_for_rank
from radseg.pipeline.data.cache_keys import estimate_case_bytes

SETTINGS = {"target_spacing": [3.0, 3.0, 6.0], "image_dtype": "float16"}


class CountCalls(Transform):
    """A deterministic pass-through step that counts how often the cached head runs."""

    calls = 0

    def __call__(self, data):
        type(self).calls += 1
        return data


def _chain(target_spacing, random_tail: bool = False) -> Compose:
    from radseg.transforms.io import SimpleITKReader

    steps = [
        CountCalls(),
        LoadImaged(keys=[IMAGE, LABEL], reader=SimpleITKReader()),
        EnsureChannelFirstd(keys=[IMAGE, LABEL]),
        Spacingd(keys=[IMAGE, LABEL], pixdim=target_spacing, mode=("bilinear", "nearest")),
        CastToTyped(keys=[IMAGE, LABEL], dtype=(np.float16, np.uint8)),
    ]
    if random_tail:
        steps.append(RandSpatialCropSamplesd(keys=[IMAGE, LABEL], roi_size=(16, 16, 8), num_samples=2))
    return Compose(steps)


def _datalist(root: Path) -> list[dict]:
    images = sorted((root / "imagesTr").glob("*.nii.gz"))
    return [
        {IMAGE: str(p), LABEL: str(root / "labelsTr" / p.name), CASE_ID: p.name.split(".")[0]} for p in images
    ]


@pytest.fixture()
def data_copy(phantom_dataset, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_dataset, tmp_path / "data"))


@pytest.fixture(autouse=True)
def _reset_counter():
    CountCalls.calls = 0


def _disk_dataset(datalist, cache_dir, settings=SETTINGS):
    cfg = CacheConfig(mode="disk", cache_dir=str(cache_dir))
    return build_dataset(datalist, _chain(settings["target_spacing"]), cfg, settings=settings)


def test_ram_cache_respects_budget(phantom_dataset, caplog):
    datalist = _datalist(phantom_dataset)
    estimates = [estimate_case_bytes(item, SETTINGS["target_spacing"], 2) for item in datalist]
    budget_gb = (estimates[0] + estimates[1] + 0.5 * estimates[2]) / GIB
    cfg = CacheConfig(mode="ram", ram_budget_gb=budget_gb, num_workers=1)
    with caplog.at_level(logging.INFO, logger="radseg"):
        dataset = build_dataset(datalist, _chain(SETTINGS["target_spacing"]), cfg, settings=SETTINGS, progress=False)
    assert dataset.cache_num == 2 and len(dataset) == 4
    sizes = cached_bytes(dataset)
    assert len(sizes) == 2 and all(0 < size <= estimate for size, estimate in zip(sizes, estimates))
    cached = dataset._cache[0]
    assert cached[IMAGE].dtype == torch.float16 and cached[LABEL].dtype == torch.uint8
    assert "RAM cache: 2 of 4 cases" in caplog.text and "MiB per case" in caplog.text
    assert CountCalls.calls == 2
    dataset[3]  # beyond the budget: loaded and preprocessed on request
    assert CountCalls.calls == 3


def test_ram_cache_with_known_case_size(phantom_dataset):
    cfg = CacheConfig(mode="ram", ram_budget_gb=3.5 / GIB, num_workers=1)
    dataset = build_dataset(
        _datalist(phantom_dataset), _chain(SETTINGS["target_spacing"]), cfg,
        settings=SETTINGS, budget_bytes_per_case=1, progress=False,
    )
    assert dataset.cache_num == 3


def test_disk_cache_second_pass_loads_from_disk(phantom_dataset, tmp_path):
    datalist = _datalist(phantom_dataset)[:2]
    first = [_disk_dataset(datalist, tmp_path)[i] for i in range(2)]
    assert CountCalls.calls == 2
    entries = sorted((tmp_path / "entries").glob("*.pt"))
    assert len(entries) == 2 and not list((tmp_path / "entries").glob(".*tmp"))
    second = [_disk_dataset(datalist, tmp_path)[i] for i in range(2)]
    assert CountCalls.calls == 2, "second pass must load from disk, not preprocess again"
    for a, b in zip(first, second):
        assert torch.equal(torch.as_tensor(a[IMAGE]), torch.as_tensor(b[IMAGE]))
        assert b[IMAGE].dtype == torch.float16 and b[LABEL].dtype == torch.uint8


def test_changed_setting_makes_a_new_key(phantom_dataset, tmp_path):
    datalist = _datalist(phantom_dataset)[:1]
    _disk_dataset(datalist, tmp_path)[0]
    changed = {**SETTINGS, "target_spacing": [4.0, 4.0, 6.0]}
    item = _disk_dataset(datalist, tmp_path, settings=changed)[0]
    assert CountCalls.calls == 2, "a changed setting must not reuse the old entry"
    assert len(list((tmp_path / "entries").glob("*.pt"))) == 2
    assert tuple(item[IMAGE].shape) != tuple(_disk_dataset(datalist, tmp_path)[0][IMAGE].shape)


def test_modified_source_file_makes_a_new_key(data_copy, tmp_path):
    datalist = _datalist(data_copy)[:2]
    dataset = _disk_dataset(datalist, tmp_path / "cache")
    dataset[0], dataset[1]
    stat = os.stat(datalist[1][IMAGE])
    os.utime(datalist[1][IMAGE], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    dataset[0], dataset[1]
    assert CountCalls.calls == 3, "only the touched case is preprocessed again"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_entry_is_rebuilt_with_a_warning(phantom_dataset, tmp_path, caplog, damage):
    datalist = _datalist(phantom_dataset)[:1]
    expected = _disk_dataset(datalist, tmp_path)[0]
    (entry,) = (tmp_path / "entries").glob("*.pt")
    content = entry.read_bytes()
    damaged = {"garbage": os.urandom(1000), "truncated": content[: len(content) // 2], "empty": b""}[damage]
    entry.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="radseg"):
        item = _disk_dataset(datalist, tmp_path)[0]
    assert "damaged" in caplog.text and "phantom_000" in caplog.text
    assert torch.equal(torch.as_tensor(item[IMAGE]), torch.as_tensor(expected[IMAGE]))
    assert CountCalls.calls == 2
    assert torch.load(entry, weights_only=True)[IMAGE].dtype == torch.float16, "entry rewritten whole"


def test_failed_write_leaves_no_entry(phantom_dataset, tmp_path, caplog, monkeypatch):
    def broken_save(obj, f, **kwargs):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.torch, "save", broken_save)
    with caplog.at_level(logging.WARNING, logger="radseg"):
        item = _disk_dataset(_datalist(phantom_dataset)[:1], tmp_path)[0]
    assert item[IMAGE].dtype == torch.float16
    assert not any((tmp_path / "entries").iterdir()), "no partial entry and no temporary file left"
    assert "could not write cache entry" in caplog.text


def test_no_cache_mode_is_a_plain_dataset(phantom_dataset):
    cfg = CacheConfig(mode="none")
    dataset = build_dataset(_datalist(phantom_dataset)[:1], _chain([4.0, 4.0, 8.0]), cfg, settings={})
    dataset[0], dataset[0]
    assert CountCalls.calls == 2


@pytest.mark.parametrize("num_cases,world_size", [(10, 3), (2, 4), (7, 1)])
def test_shards_are_disjoint_and_cover_every_case(num_cases, world_size):
    cases = [f"case_{i}" for i in range(num_cases)]
    shards = [shard_for_rank(cases, rank, world_size) for rank in range(world_size)]
    flat = [c for shard in shards for c in shard]
    assert sorted(flat) == sorted(cases) and len(flat) == num_cases
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_rejects_a_bad_rank():
    from radseg.errors import ConfigError

    with pytest.raises(ConfigError, match="rank must be in"):
        shard_for_rank([1, 2], 2, 2)


def test_loader_is_reproducible_and_collates_samples(phantom_dataset):
    datalist = _datalist(phantom_dataset)[:2]
    cfg = CacheConfig(mode="ram", num_workers=1)
    dataset = build_dataset(datalist, _chain([4.0, 4.0, 8.0], random_tail=True), cfg, settings={}, progress=False)

    def batches(seed):
        loader = build_loader(dataset, batch_size=2, num_workers=0, shuffle=True, seed=seed)
        return [b[IMAGE].clone() for _ in range(2) for b in loader]

    first, again = batches(3), batches(3)
    assert first[0].shape[0] == 4, "2 cases x 2 samples each, flattened into one batch"
    assert all(torch.equal(a, b) for a, b in zip(first, again))

    def worker_batches(seed):
        loader = build_loader(dataset, batch_size=1, num_workers=2, shuffle=True, seed=seed)
        assert loader.persistent_workers
        return [b[IMAGE].clone() for _ in range(2) for b in loader]

    first, again = worker_batches(5), worker_batches(5)
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "worker seeds follow the loader seed"


def _config(tmp_path, mode):
    from radseg.configs import load_config

    return load_config("demo", [f"cache.mode={mode}", f"cache.cache_dir={tmp_path / 'cache'}",
                                "preprocess.target_spacing=[2.0, 2.0, 4.0]", "cache.num_workers=2"])


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_build_cache_for_dataset(phantom_dataset, tmp_path, mode):
    """`radseg cache` fills the disk cache whatever cache.mode says (a RAM cache would end with it)."""
    from radseg.pipeline.data.fill_cache import build_cache_for_dataset

    before = sorted(p.name for p in phantom_dataset.rglob("*"))
    summary = build_cache_for_dataset(phantom_dataset, _config(tmp_path, mode))
    assert summary.cached_cases == 4 and summary.num_cases == 4 and summary.modality == "CT"
    assert summary.target_spacing == (2.0, 2.0, 4.0) and summary.ct_window is not None
    assert len(summary.bytes_per_case) == 4 and summary.total_bytes == sum(summary.bytes_per_case) > 0
    text = str(summary)
    assert f"disk: 4 of 4 cases cached ({tmp_path / 'cache'})" in text and "bytes per case  mean" in text
    assert "MiB" in text
    fingerprint = Path(summary.fingerprint_path)
    assert fingerprint.is_file() and fingerprint.name == "fingerprint.json"
    assert (tmp_path / "cache") in fingerprint.parents
    assert sorted(p.name for p in phantom_dataset.rglob("*")) == before, "the user's dataset is untouched"
    assert len(list((tmp_path / "cache" / "entries").glob("*.pt"))) == 4
    if mode == "disk":
        again = build_cache_for_dataset(phantom_dataset, _config(tmp_path, mode))
        assert again.bytes_per_case == summary.bytes_per_case


def test_training_reads_what_radseg_cache_wrote(phantom_dataset, tmp_path, monkeypatch):
    """After `radseg cache` (folder from $RADSEG_CACHE_DIR), a RAM-cache training run loads every case from
    the disk entries and takes the stored fingerprint: no case is read or fingerprinted again."""
    from monai.transforms import LoadImaged as Load

    from radseg.configs import load_config
    from radseg.pipeline.core.distributed import DistInfo
    from radseg.pipeline.data.fill_cache import build_cache_for_dataset
    from radseg.pipeline.train.run_setup import prepare_data
    from radseg.transforms import fingerprint as fingerprint_module
    from conftest import TINY_TRAIN

    monkeypatch.setenv("RADSEG_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config("demo", [*TINY_TRAIN, "cache.mode=ram"])
    summary = build_cache_for_dataset(phantom_dataset, cfg)
    assert summary.where == str(tmp_path / "cache") and summary.cached_cases == 4
    assert len(list((tmp_path / "cache" / "entries").glob("*.pt"))) == 4

    reads, load = [], Load.__call__
    monkeypatch.setattr(Load, "__call__", lambda self, data, *a, **k: reads.append(1) or load(self, data, *a, **k))

    def measure_again(*args, **kwargs):
        raise AssertionError("the fingerprint radseg cache stored must be reused")

    monkeypatch.setattr(fingerprint_module, "compute_fingerprint", measure_again)
    run = tmp_path / "run"
    run.mkdir()
    data = prepare_data(cfg, phantom_dataset, run, DistInfo(), fresh=True, progress=False)
    assert data.train_dataset.loaded_from_disk + data.val_dataset.loaded_from_disk == 4
    assert reads == [], "no case is preprocessed again"
    assert (run / "fingerprint.json").read_text() == Path(summary.fingerprint_path).read_text()
    batch = next(iter(build_loader(data.train_dataset, 1, 0, True, 0)))
    assert batch[IMAGE].shape[1:] == (1, 32, 32, 16)


def test_cache_folder_that_is_a_file_is_refused(phantom_dataset, tmp_path, monkeypatch):
    from radseg.configs import load_config
    from radseg.errors import ConfigError
    from radseg.pipeline.data.fill_cache import build_cache_for_dataset

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("RADSEG_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"the cache folder .*cache \(cache.cache_dir, else "
                                          r"\$RADSEG_CACHE_DIR.* is a file"):
        build_cache_for_dataset(phantom_dataset, load_config("demo"))


def test_preprocess_chain_caches_float16_images_and_uint8_labels(phantom_dataset):
    from radseg.configs.schema import PreprocessConfig
    from radseg.pipeline.data.cache import preprocess_settings
    from radseg.transforms.fingerprint import resolve_preprocess
    from radseg.transforms.preprocess import build_preprocess_transforms

    preprocess = PreprocessConfig(target_spacing=[2.0, 2.0, 4.0], ct_window=[-100.0, 200.0], ct_normalization="window")
    resolved = resolve_preprocess(preprocess, None, "CT")
    transform = build_preprocess_transforms(resolved, with_label=True, image_dtype="float16")
    cfg = CacheConfig(mode="ram", num_workers=1)
    dataset = build_dataset(_datalist(phantom_dataset)[:1], transform, cfg,
                            settings=preprocess_settings(resolved, "float16"), progress=False)
    cached = dataset._cache[0]
    assert cached[IMAGE].dtype == torch.float16 and cached[LABEL].dtype == torch.uint8
    assert set(torch.unique(cached[LABEL]).tolist()) <= {0, 1, 2}
    assert 0.0 <= float(cached[IMAGE].min()) and float(cached[IMAGE].max()) <= 1.0


def test_key_covers_versions_settings_and_every_file_of_a_dicom_folder(tmp_path, monkeypatch):
    import radseg
    from radseg.pipeline.data.cache_keys import item_key, settings_digest

    series = tmp_path / "series"
    series.mkdir()
    for name in ("01.dcm", "02.dcm"):
        (series / name).write_bytes(b"slice")
    item = {IMAGE: str(series), CASE_ID: "ct"}
    key = item_key(item, settings_digest(SETTINGS))
    assert item_key(item, settings_digest(SETTINGS)) == key
    assert item_key(item, settings_digest({**SETTINGS, "image_dtype": "float32"})) != key
    (series / "02.dcm").write_bytes(b"other")  # same size, new mtime
    os.utime(series / "02.dcm", ns=(0, 10**9))
    assert item_key(item, settings_digest(SETTINGS)) != key
    key = item_key(item, settings_digest(SETTINGS))
    monkeypatch.setattr(radseg, "__version__", "99.0")
    assert item_key(item, settings_digest(SETTINGS)) != key


def test_key_covers_the_settings_of_every_cached_step(phantom_dataset):
    from monai.transforms import SpatialPadd

    from radseg.pipeline.data.cache_keys import describe_cached_steps, settings_digest

    def key(chain):
        return settings_digest({"cached_steps": describe_cached_steps(chain)})

    def padded(pad):
        return Compose(list(_chain([3.0, 3.0, 6.0]).transforms) + [SpatialPadd([IMAGE, LABEL], spatial_size=pad)])

    chain = padded((8, 8, 8))
    before = key(chain)
    chain(_datalist(phantom_dataset)[0])  # reading leaves state on the reader: not part of the key
    assert key(chain) == before == key(padded((8, 8, 8)))
    assert key(padded((16, 8, 8))) != before, "a pad size (cached by training chains) is in the key"
    assert key(_chain([3.0, 3.0, 5.0])) != key(_chain([3.0, 3.0, 6.0]))
    assert [step["class"] for step in describe_cached_steps(_chain([3.0] * 3, random_tail=True))][-1] == "CastToTyped"
