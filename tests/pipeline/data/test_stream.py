"""The run-long training stream: batch j depends only on the seed, the rank and j."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped, RandScaleIntensityd, RandSpatialCropd

from radseg.errors import RadsegError
from radseg.pipeline.data.stream import StreamSampler, training_stream


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


def _take(stream, count: int) -> list[torch.Tensor]:
    return [batch["image"].as_tensor().clone() for batch in itertools.islice(stream, count)]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stream_resumed_at_a_step_draws_what_the_uninterrupted_one_drew(workers):
    whole = _take(training_stream(_dataset(), 2, workers, seed=7), 9)
    resumed = _take(training_stream(_dataset(), 2, workers, seed=7, start_step=4), 5)
    for expected, got in zip(whole[4:], resumed):
        assert torch.equal(expected, got)
    # the random tail did run: crops and scales differ between batches of the same cases
    assert len({tuple(b.flatten()[:8].tolist()) for b in whole}) == len(whole)


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
