"""Training samples of the 2D branch: one per (case, slice), and a class-balanced sampler.

A plain slice network gets one slice (with its 2.5D neighbours as channels) per sample; a
sequence network (``cnn_rnn2d``) gets the ``slices.sequence_length`` consecutive slices around it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from radseg import keys
from radseg.errors import ConfigError
from radseg.pipeline.slices.samples import SliceCase
from radseg.transforms.slices import with_context


class SliceSamples(Dataset):
    """Every axial slice of every case as a sample ``{IMAGE, LABEL}``.

    Args:
        cases: labelled slice stacks.
        target: "liver" or "lesion".
        context: 2.5D slices per sample (odd).
        sequence_length: None for slice networks; else the length of the z sequences, centred on
            the sampled slice where the case allows.

    Items: ``IMAGE`` ``(context * C, H, W)`` float32 and ``LABEL`` ``()`` int64 for slice networks,
    ``(L, context * C, H, W)`` and ``(L,)`` for sequence networks.

    Raises:
        ConfigError: a case has fewer slices than ``sequence_length``.
    """

    def __init__(self, cases: Sequence[SliceCase], target: str, context: int, sequence_length: int | None = None):
        self.cases = list(cases)
        self.target = target
        self.context = context
        self.sequence_length = sequence_length
        short = [f"{c.case_id} ({len(c.z_mm)})" for c in self.cases if sequence_length and len(c.z_mm) < sequence_length]
        if short:
            raise ConfigError(f"slices.sequence_length={sequence_length} is longer than case(s) {', '.join(short)} "
                              "(slices in brackets); fix: lower slices.sequence_length")
        self.index = np.array([(i, z) for i, c in enumerate(self.cases) for z in range(len(c.z_mm))], dtype=np.int64)
        self.labels = np.concatenate([c.target(target) for c in self.cases]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        case_index, z = (int(v) for v in self.index[item])
        case = self.cases[case_index]
        labels = torch.as_tensor(case.target(self.target), dtype=torch.long)
        if self.sequence_length is None:
            return {keys.IMAGE: with_context(case.image, [z], self.context)[0].float(), keys.LABEL: labels[z]}
        length = self.sequence_length
        start = min(max(z - length // 2, 0), len(case.z_mm) - length)
        window = torch.arange(start, start + length)
        return {keys.IMAGE: with_context(case.image, window, self.context).float(), keys.LABEL: labels[window]}


def sample_weights(labels: np.ndarray, balanced: bool) -> torch.Tensor:
    """Per-sample weights: each class's samples share equal total weight (``balanced``), else uniform."""
    labels = np.asarray(labels, dtype=np.int64)
    if not balanced:
        return torch.ones(len(labels), dtype=torch.float64)
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)


def build_slice_loader(samples: SliceSamples, batch_size: int, num_samples: int, balanced: bool,
                       seed: int) -> DataLoader:
    """Batches of ``num_samples`` slices drawn with replacement (class-balanced if asked), seeded.

    Args:
        samples: the training samples.
        batch_size: samples per batch.
        num_samples: samples per epoch (``iterations_per_epoch * batch_size``).
        balanced: equal weight per class (see :func:`sample_weights`).
        seed: the draw's seed (the same seed gives the same batches).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = WeightedRandomSampler(sample_weights(samples.labels, balanced), num_samples, replacement=True,
                                    generator=generator)
    return DataLoader(samples, batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=False)
