"""Summaries over cases with uncertainty: mean, std, median and a seeded bootstrap interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: bootstrap resamples and seed used unless the caller says otherwise (stated in summary.json)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Summary:
    """One metric of one class over the cases where it is defined.

    Attributes:
        n: cases with a value (missing values, NaN, are left out and counted in ``n_undefined``).
        mean, std, median: of those values (std with ``ddof=1``; NaN for fewer than 2 values).
        ci_low, ci_high: 95% percentile-bootstrap interval of the mean.
        n_undefined: cases where the metric is undefined (see the empty-mask conventions).
    """

    n: int
    mean: float
    std: float
    median: float
    ci_low: float
    ci_high: float
    n_undefined: int

    def as_dict(self) -> dict[str, float]:
        """Plain dictionary, for JSON."""
        return asdict(self)


def bootstrap_ci(values: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    Cases are drawn with replacement ``resamples`` times (a ``numpy`` generator seeded with
    ``seed``, so the interval is reproducible) and the mean of each draw taken; the interval is
    the central ``level`` of those means.

    Args:
        values: one value per case, none missing.
        resamples: number of bootstrap draws.
        seed: the generator's seed.
        level: coverage of the interval.

    Returns:
        ``(low, high)``; NaN for no values, the value itself for a single one.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def summarise(values: list[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Summary:
    """Mean, std, median and bootstrap interval of one metric over cases (NaN values left out)."""
    array = np.asarray(values, dtype=np.float64)
    defined = array[~np.isnan(array)]
    if defined.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan, int(array.size))
    low, high = bootstrap_ci(defined, resamples=resamples, seed=seed)
    std = float(defined.std(ddof=1)) if defined.size > 1 else math.nan
    return Summary(int(defined.size), float(defined.mean()), std, float(np.median(defined)), low, high,
                   int(array.size - defined.size))
