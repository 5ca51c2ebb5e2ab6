"""Paired comparison of two runs on the same test images."""

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import t as scipy_t

from ferstudy.analysis.stats import (
    PairedDifference,
    Summary,
    holm,
    paired_difference,
    shared_correctness,
    summarize,
)


def test_a_clear_difference_is_significant_and_mcnemar_counts_discordant_images():
    rng = np.random.default_rng(0)
    b = rng.random(2000) < 0.5
    a = b.copy()
    a[np.flatnonzero(~b)[:300]] = True  # A right on 300 images where B is wrong
    a[np.flatnonzero(b)[:100]] = False  # and wrong on 100 where B is right
    d = paired_difference(a, b)
    assert d.difference == pytest.approx(200 / 2000)
    assert (d.only_a_right, d.only_b_right) == (300, 100)
    assert d.p_value == pytest.approx(binomtest(300, 400, 0.5).pvalue)
    assert 0 < d.low < 0.1 < d.high < 0.2
    assert d.significant


def test_no_difference_is_not_significant():
    a = np.random.default_rng(1).random(500) < 0.6
    b = a.copy()
    b[np.flatnonzero(a)[:15]] = False  # as many images only A gets right
    b[np.flatnonzero(~a)[:15]] = True  # as only B gets right
    d = paired_difference(a, b)
    assert d.difference == 0 and d.low < 0 < d.high
    assert d.p_value == pytest.approx(1.0)
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


# --------------------------------------------------------------------------- several seeds


def test_summary_is_the_t_interval_by_hand():
    s = summarize([0.50, 0.60, 0.70])
    half = 0.1 * 4.302652729911275 / np.sqrt(3)  # sd 0.1, t(0.975, df 2), from a t table
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert (s.low, s.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    assert s.half_width == pytest.approx(half)
    assert s.describe() == "0.6000 ± 0.2484"
    assert Summary.from_dict(s.as_dict()) == s


def test_summary_of_one_seed_has_no_interval_and_of_equal_seeds_a_point():
    one = summarize([0.4])
    assert (one.sd, one.low, one.high, one.half_width) == (None, None, None, None)
    assert one.describe() == "0.4000"
    same = summarize([0.4, 0.4, 0.4])
    assert (same.sd, same.low, same.high, same.half_width) == (0.0, same.mean, same.mean, 0.0)
    with pytest.raises(ValueError):
        summarize([])


def test_seeds_interval_adds_seed_and_image_variance_by_hand():
    """3 seeds x 400 images: the interval is t(df) x sqrt(seed part + image part), with the
    image part the bootstrap standard error and df by Welch-Satterthwaite."""
    rng = np.random.default_rng(3)
    a = rng.random((3, 400)) < np.array([[0.60], [0.64], [0.56]])
    b = rng.random((3, 400)) < 0.5
    d = paired_difference(a, b)
    acc_a, acc_b = a.mean(axis=1), b.mean(axis=1)
    assert d.difference == pytest.approx(acc_a.mean() - acc_b.mean())
    per_image = a.mean(axis=0) - b.mean(axis=0)
    image_se = per_image.std(ddof=1) / np.sqrt(400)  # the bootstrap SE is close to this
    assert d.image_se == pytest.approx(image_se, rel=0.05)
    parts = acc_a.var(ddof=1) / 3, acc_b.var(ddof=1) / 3
    assert d.seed_se == pytest.approx(np.sqrt(sum(parts)))
    se = np.sqrt(sum(parts) + d.image_se**2)
    df = se**4 / sum(p**2 / 2 for p in parts)
    assert d.df == pytest.approx(df)
    assert d.high - d.difference == pytest.approx(scipy_t.ppf(0.975, df) * se)
    assert d.difference - d.low == pytest.approx(scipy_t.ppf(0.975, df) * se)
    assert d.seeds == 3 and d.only_a_right is None and "3 seeds" in d.describe()


def test_seeds_that_disagree_widen_the_interval():
    """The same mean difference is real when every seed agrees and not when seeds scatter."""
    base = np.random.default_rng(4).random(3000) < 0.5
    steady = np.array([base] * 3)
    better = steady.copy()
    better[:, np.flatnonzero(~base)[:90]] = True  # +3 points in every seed
    scattered = steady.copy()
    scattered[0, np.flatnonzero(~base)[:270]] = True  # +9, 0, 0: the same mean
    assert paired_difference(better, steady).significant
    wide = paired_difference(scattered, steady)
    assert wide.difference == pytest.approx(0.03)
    assert not wide.significant
    assert "not distinguishable at 95 % with 3 seeds" in wide.verdict()


def test_seeds_arrays_must_match():
    with pytest.raises(ValueError):
        paired_difference(np.ones((2, 5), bool), np.ones((3, 5), bool))
    a, b = shared_correctness(
        np.array([1, 3]), np.array([[True, False], [False, False]]), np.array([3]), np.array([[1]])
    )
    np.testing.assert_array_equal(a, [[False], [False]])


def test_paired_seeds_use_the_per_seed_differences_by_hand():
    """One setting changed under the same seeds: the seed part is var(d_s)/n, n - 1 df."""
    rng = np.random.default_rng(5)
    a = rng.random((3, 500)) < np.array([[0.50], [0.60], [0.55]])  # seeds differ a lot
    b = a.copy()
    b[0, np.flatnonzero(~a[0])[:3]] = True  # but A and B differ by a few images per seed
    b[1, np.flatnonzero(a[1])[:2]] = False
    d = paired_difference(a, b, paired_seeds=True)
    diffs = a.mean(axis=1) - b.mean(axis=1)
    part = diffs.var(ddof=1) / 3
    se = np.sqrt(part + d.image_se**2)
    assert d.seed_se == pytest.approx(np.sqrt(part))
    assert d.df == pytest.approx(se**4 / (part**2 / 2))
    assert d.high - d.low == pytest.approx(2 * scipy_t.ppf(0.975, d.df) * se)
    unpaired = paired_difference(a, b)  # the seeds' spread of each side: far wider
    assert unpaired.high - unpaired.low > 5 * (d.high - d.low)
    assert "per-seed differences" in d.method and "seeds of each side" in unpaired.method


def test_one_seed_needs_mcnemar_too():
    """5 images only A gets right, none only B: the bootstrap interval can exclude 0, but
    McNemar's exact p is 0.0625: not real."""
    b = np.random.default_rng(6).random(1000) < 0.5
    a = b.copy()
    a[np.flatnonzero(~b)[:5]] = True
    d = paired_difference(a, b)
    assert d.p_value == pytest.approx(0.0625) and d.low >= 0
    assert not d.significant


def test_flipped_is_the_comparison_the_other_way_round():
    rng = np.random.default_rng(7)
    a, b = rng.random((3, 300)) < 0.6, rng.random((3, 300)) < 0.5
    for x, y in ((a, b), (a[0], b[0])):
        d, back = paired_difference(x, y), paired_difference(y, x)
        f = d.flipped()
        assert (f.difference, f.low, f.high) == pytest.approx(
            (back.difference, back.low, back.high)
        )
        assert f.p_value == pytest.approx(back.p_value) and f.significant == back.significant
        assert PairedDifference.from_dict({**d.as_dict(), "a": "x"}) == d


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])  # by hand: 4p, 3p, 2p, p, monotone
    assert holm([]) == []


def test_paired_seeds_with_equal_differences_have_no_seed_spread():
    """A right on 3 more images than B under every seed, at three different accuracies: the
    per-seed differences are equal, so the seed part is exactly 0 and the interval is the
    images' alone (normal), not a t with a df from a rounding residue."""
    a, b = np.zeros((3, 1000), bool), np.zeros((3, 1000), bool)
    for seed, right in enumerate([100, 137, 174]):
        b[seed, :right] = True
        a[seed, : right + 3] = True
    d = paired_difference(a, b, paired_seeds=True)
    assert d.seed_se == 0.0 and d.df is None
    assert d.difference == pytest.approx(0.003)
