"""Paired comparison of two runs on the same test images."""

import numpy as np
import pytest
from scipy.stats import binomtest

from ferstudy.stats import paired_difference, shared_correctness


def test_a_clear_difference_is_significant_and_mcnemar_counts_discordant_images():
    rng = np.random.default_rng(0)
    b = rng.random(2000) < 0.5
    a = b.copy()
    a[np.flatnonzero(~b)[:300]] = True  # A right on 300 images where B is wrong
    a[np.flatnonzero(b)[:100]] = False  # and wrong on 100 where B is right
    d = paired_difference(a, b)
    assert d.difference == pytest.approx(200 / 2000)
    assert (d.only_a_right, d.only_b_right) == (300, 100)
    assert d.mcnemar_p == pytest.approx(binomtest(300, 400, 0.5).pvalue)
    assert 0 < d.low < 0.1 < d.high < 0.2
    assert d.significant


def test_no_difference_is_not_significant():
    a = np.random.default_rng(1).random(500) < 0.6
    b = a.copy()
    b[np.flatnonzero(a)[:15]] = False  # as many images only A gets right
    b[np.flatnonzero(~a)[:15]] = True  # as only B gets right
    d = paired_difference(a, b)
    assert d.difference == 0 and d.low < 0 < d.high
    assert d.mcnemar_p == pytest.approx(1.0)
    assert not d.significant


def test_interval_is_paired_not_two_independent_samples():
    """Two runs that agree on almost every image: the paired interval is far narrower than
    the spread of either accuracy alone."""
    rng = np.random.default_rng(2)
    a = rng.random(1000) < 0.5
    b = a.copy()
    b[np.flatnonzero(a)[:20]] = False
    d = paired_difference(a, b)
    assert d.high - d.low < 0.02  # an unpaired interval would be ~0.09 wide
    assert d.significant


def test_runs_on_different_subsets_are_compared_on_shared_rows():
    a, b = shared_correctness(
        np.array([1, 3, 5, 7]),
        np.array([True, False, True, True]),
        np.array([3, 4, 5]),
        np.array([True, True, False]),
    )
    np.testing.assert_array_equal(a, [False, True])  # rows 3 and 5
    np.testing.assert_array_equal(b, [True, False])
