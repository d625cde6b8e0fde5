"""Summaries over cases: the bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radseg.pipeline.evaluate.summary import bootstrap_ci, summarise


def test_bootstrap_interval_of_identical_values_is_a_point():
    low, high = bootstrap_ci([0.7] * 12)
    assert low == high == pytest.approx(0.7)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).uniform(0, 1, 50)
    first, again, other = bootstrap_ci(values, seed=4), bootstrap_ci(values, seed=4), bootstrap_ci(values, seed=5)
    assert first == again and first != other
    # the normal approximation: mean +- 1.96 standard errors
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert first[0] == pytest.approx(values.mean() - half_width, abs=0.02)
    assert first[1] == pytest.approx(values.mean() + half_width, abs=0.02)


def test_summary_leaves_missing_values_out_and_counts_them():
    summary = summarise([1.0, 3.0, float("nan"), 2.0])
    assert (summary.n, summary.n_undefined, summary.mean, summary.median) == (3, 1, 2.0, 2.0)
    assert summary.std == pytest.approx(1.0) and summary.ci_low < 2.0 < summary.ci_high
    empty = summarise([float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.ci_low)
