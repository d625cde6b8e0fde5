"""The run-long training stream: batch j depends only on the seed, the rank and j."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped, MapTransform, RandScaleIntensityd, RandSpatialCropd

from radseg import keys
from radseg.configs.schema import AugmentConfig
from radseg.errors import RadsegError
from radseg.pipeline.data.stream import SeededItems, StreamSampler, training_stream
from radseg.transforms.preprocess import build_augment_transforms


def _dataset(cases: int = 5) -> CacheDataset:
    """Cached volumes with a random crop and a random intensity scale after the cached head."""
    items = [{"image": np.full((1, 12, 12, 6), float(i + 1), dtype=np.float32), "case": i} for i in range(cases)]
    transform = Compose([EnsureTyped(keys="image"),
                         RandSpatialCropd(keys="image", roi_size=(4, 4, 4), random_size=False),
                         RandScaleIntensityd(keys="image", factors=0.5, prob=1.0)])
    for step in transform.transforms:
        if hasattr(step, "set_random_state"):
            step.set_random_state(seed=123)
    return CacheDataset(items, transform, progress=False)


def _take(stream, count: int, key: str = "image") -> list[torch.Tensor]:
    return [batch[key].as_tensor().clone() for batch in itertools.islice(stream, count)]


class _GlobalNoise(MapTransform):
    """A transform drawing from numpy's global generator instead of its own (as some user code does)."""

    def __call__(self, data):
        out = dict(data)
        out[keys.IMAGE] = out[keys.IMAGE] + float(np.random.rand())
        return out


def _planned_chain_dataset(extra=()) -> CacheDataset:
    """Six cases through the training chain a plan builds (class-balanced crops, flips, rotations,
    affine, intensity), two of them cached and four run through the whole chain on every access."""
    rng = np.random.default_rng(0)
    items = []
    for case in range(6):
        label = np.zeros((1, 24, 24, 12), dtype=np.uint8)
        label[:, 4:16, 6:18, 2:9] = 1
        label[:, 8 + case % 3:11 + case % 3, 9:12, 4:7] = 2
        items.append({keys.IMAGE: rng.normal(size=(1, 24, 24, 12)).astype(np.float32), keys.LABEL: label})
    augment = AugmentConfig(sampler="label_classes", class_ratios=[1.0, 1.0, 1.0], num_samples=2, flip_prob=0.5,
                            rotate90_prob=0.5, affine_prob=0.5, intensity_prob=0.5)
    chain = Compose([EnsureTyped(keys=[keys.IMAGE, keys.LABEL]),
                     *build_augment_transforms(augment, (16, 16, 8), 3).transforms, *extra])
    return CacheDataset(items, chain, cache_num=2, progress=False)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stream_resumed_at_a_step_draws_what_the_uninterrupted_one_drew(workers):
    whole = _take(training_stream(_dataset(), 2, workers, seed=7), 9)
    resumed = _take(training_stream(_dataset(), 2, workers, seed=7, start_step=4), 5)
    for expected, got in zip(whole[4:], resumed):
        assert torch.equal(expected, got)
    # the random tail did run: crops and scales differ between batches of the same cases
    assert len({tuple(b.flatten()[:8].tolist()) for b in whole}) == len(whole)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_training_chain_resumes_exactly_for_cached_and_uncached_cases(workers):
    whole = _take(training_stream(_planned_chain_dataset(), 2, workers, seed=4), 10, keys.LABEL)
    resumed = _take(training_stream(_planned_chain_dataset(), 2, workers, seed=4, start_step=6), 4, keys.LABEL)
    assert all(torch.equal(a, b) for a, b in zip(whole[6:], resumed))
    assert whole[0].shape == (4, 1, 16, 16, 8)  # 2 cases x 2 patches


def test_a_worker_reseeds_its_global_generators_for_each_case():
    dataset = _planned_chain_dataset([_GlobalNoise(keys.IMAGE)])
    whole = _take(training_stream(dataset, 1, 1, seed=2), 7)
    resumed = _take(training_stream(_planned_chain_dataset([_GlobalNoise(keys.IMAGE)]), 1, 1, seed=2,
                                    start_step=5), 2)
    assert all(torch.equal(a, b) for a, b in zip(whole[5:], resumed))


def test_an_unseedable_transform_is_refused():
    class Plain:
        transform = staticmethod(lambda item: item)

    with pytest.raises(RadsegError, match="cannot be seeded per case"):
        SeededItems(Plain())
    with pytest.raises(RadsegError, match="one sampling weight per training case"):
        StreamSampler(3, 0, weights=[1.0, 2.0])


def test_workers_do_not_change_the_batches():
    assert all(torch.equal(a, b) for a, b in zip(_take(training_stream(_dataset(), 2, 0, seed=3), 6),
                                                  _take(training_stream(_dataset(), 2, 1, seed=3), 6)))


def test_each_pass_draws_every_case_once_and_ranks_and_seeds_differ():
    sampler = StreamSampler(5, seed=1)
    drawn = [index for index, _ in itertools.islice(iter(sampler), 15)]
    assert all(sorted(drawn[k:k + 5]) == list(range(5)) for k in (0, 5, 10))
    assert drawn[:5] != drawn[5:10] or drawn[5:10] != drawn[10:]  # a new order each pass
    other_rank = [index for index, _ in itertools.islice(iter(StreamSampler(5, seed=1, rank=1)), 15)]
    seeds = [seed for _, seed in itertools.islice(iter(sampler), 15)]
    assert other_rank != drawn and len(set(seeds)) == 15


def test_unequal_weights_draw_in_proportion():
    counts = Counter(index for index, _ in itertools.islice(iter(StreamSampler(3, 0, weights=[0.5, 0.25, 0.25])),
                                                            4000))
    assert abs(counts[0] / 4000 - 0.5) < 0.03 and abs(counts[2] / 4000 - 0.25) < 0.03


def test_the_global_torch_seed_is_left_alone_and_an_empty_split_is_refused():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    _take(training_stream(_dataset(), 2, 0, seed=9), 2)
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(RadsegError, match="no cases"):
        training_stream(_dataset(0), 2, 0, seed=0)
