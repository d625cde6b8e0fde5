"""DDP training shards with equal sampling weight per case across ranks.

Each rank caches only its own cases, and every rank runs the same number of iterations. With
plain disjoint shards of unequal size (5 cases on 2 ranks: 3 and 2), the cases of the smaller
shard would be drawn 1.5x as often. Here each case owns an equal length ``world_size / num_cases``
of the interval ``[0, world_size)``, laid end to end, and rank ``r`` samples the cases overlapping
``[r, r + 1)`` with the overlaps as weights: each rank's weights sum to 1, each case's weights sum
to the same share, and a case is cached on at most two ranks.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

from radseg.errors import ConfigError


def weighted_shard(datalist: Sequence[Any], rank: int, world_size: int) -> tuple[list[Any], list[float]]:
    """The cases a DDP rank trains on, and the sampling weight of each.

    Args:
        datalist: the training cases (the same list, in the same order, on every rank).
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        ``(cases, weights)``: this rank's cases (contiguous in ``datalist``, disjoint from other
        ranks' but for at most one case at each border) and their weights, summing to 1. With one
        process: every case, weight 1 each.

    Raises:
        ConfigError: ``rank`` outside ``[0, world_size)``, or fewer cases than ranks.
    """
    items = list(datalist)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, "
                          f"world_size={world_size}")
    if len(items) < world_size:
        raise ConfigError(f"{world_size} processes but only {len(items)} training cases: rank {rank} would have "
                          "none; use fewer processes (--nproc-per-node) or more cases")
    if world_size == 1:
        return items, [1.0] * len(items)
    share = Fraction(world_size, len(items))
    cases, weights = [], []
    for index, item in enumerate(items):
        overlap = min(share * (index + 1), Fraction(rank + 1)) - max(share * index, Fraction(rank))
        if overlap > 0:
            cases.append(item)
            weights.append(float(overlap))
    return cases, weights
