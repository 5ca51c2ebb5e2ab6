"""Small hand-made cases for analysis.stats, analysis.scores and analysis.health, with every
output asserted whole and checked by hand or against scipy, statsmodels or scikit-learn."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap, norm
from scipy.stats import t as student_t
from sklearn.decomposition import PCA
from sklearn.metrics import f1_score
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from ferstudy.analysis.health import degenerate_reason, feature_health, health_summary
from ferstudy.analysis.scores import (
    is_privatetest,
    privatetest_scores,
    scores,
    short_scores,
    wilson,
)
from ferstudy.analysis.stats import (
    PairedDifference,
    Summary,
    holm,
    paired_difference,
    seeds_text,
    shared_correctness,
    summarize,
)


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def scipy_bootstrap(delta: np.ndarray, seed: int = 0):
    return bootstrap(
        (np.asarray(delta, dtype=float),),
        np.mean,
        n_resamples=10_000,
        confidence_level=0.95,
        method="percentile",
        vectorized=True,
        batch=1000,
        rng=np.random.default_rng(seed),
    )


def difference(**changes) -> PairedDifference:
    record = {
        "images": 100,
        "seeds": 1,
        "difference": 0.05,
        "low": 0.01,
        "high": 0.09,
        "p_value": 0.01,
        "image_se": 0.02,
        "seed_se": None,
        "paired_seeds": False,
        "df": None,
        "only_a_right": 7,
        "only_b_right": 2,
    }
    return PairedDifference(**{**record, **changes})


# --------------------------------------------------------------------------- Summary


def test_summary_of_two_seeds_is_the_t_interval_with_one_degree_of_freedom():
    s = summarize([0.5, 0.7])
    sd = math.sqrt(0.02)  # ((0.1)^2 + (0.1)^2) / (2 - 1)
    half = 12.706204736174707 * sd / math.sqrt(2)  # t(0.975, df 1) from a t table
    assert half == pytest.approx(student_t.ppf(0.975, 1) * sd / math.sqrt(2))
    assert (s.n, s.mean, s.sd, s.low, s.high) == pytest.approx((2, 0.6, sd, 0.6 - half, 0.6 + half))
    assert s.half_width == pytest.approx(half)


def test_summary_of_four_skewed_seeds_by_hand():
    s = summarize(np.array([0.1, 0.2, 0.3, 0.8]))  # mean 0.35, median 0.25
    sd = math.sqrt((0.0625 + 0.0225 + 0.0025 + 0.2025) / 3)
    half = student_t.ppf(0.975, 3) * sd / 2
    assert (s.n, s.mean, s.sd, s.low, s.high) == pytest.approx(
        (4, 0.35, sd, 0.35 - half, 0.35 + half)
    )


def test_summary_of_one_seed_is_the_value_alone():
    assert summarize([0.375]) == Summary(1, 0.375, None, None, None)
    assert summarize(np.array([0.375])).half_width is None


def test_summary_of_seeds_that_agree_exactly_is_a_point_interval():
    assert summarize([0.25, 0.25]) == Summary(2, 0.25, 0.0, 0.25, 0.25)
    assert summarize([0.25, 0.25]).half_width == 0.0


@pytest.mark.parametrize("values", [[], [[0.5]], [[0.5, 0.6], [0.7, 0.8]], np.zeros((0, 3))])
def test_summarize_refuses_empty_or_nested_values_with_its_message(values):
    with pytest.raises(ValueError, match=exactly("summarize needs a non-empty 1-D sequence")):
        summarize(values)


def test_summary_as_dict_has_every_field_and_the_half_width():
    s = Summary(3, 0.6, 0.05, 0.5, 0.75)
    assert s.as_dict() == {
        "n": 3,
        "mean": 0.6,
        "sd": 0.05,
        "low": 0.5,
        "high": 0.75,
        "half_width": 0.125,
    }
    assert Summary(1, 0.4, None, None, None).as_dict() == {
        "n": 1,
        "mean": 0.4,
        "sd": None,
        "low": None,
        "high": None,
        "half_width": None,
    }


def test_summary_from_dict_drops_the_half_width():
    record = {"n": 3, "mean": 0.6, "sd": 0.05, "low": 0.5, "high": 0.75, "half_width": 0.125}
    assert Summary.from_dict(record) == Summary(3, 0.6, 0.05, 0.5, 0.75)
    assert Summary.from_dict({k: v for k, v in record.items() if k != "half_width"}) == Summary(
        3, 0.6, 0.05, 0.5, 0.75
    )


def test_summary_describe_formats_mean_and_half_width():
    s = Summary(3, 0.61234, 0.05, 0.5, 0.72468)
    assert s.describe() == "0.6123 ± 0.1123"
    assert s.describe(2) == "0.61 ± 0.11"
    assert s.describe(digits=6) == "0.612340 ± 0.112340"
    assert Summary(1, 0.61234, None, None, None).describe() == "0.6123"
    assert Summary(1, 0.61234, None, None, None).describe(1) == "0.6"


# --------------------------------------------------------------------------- PairedDifference


def test_significant_needs_the_interval_to_exclude_zero():
    assert difference(low=0.01, high=0.09).significant is True
    assert difference(low=-0.09, high=-0.01).significant is True
    assert difference(low=-0.01, high=0.09).significant is False


def test_an_interval_touching_zero_is_not_significant():
    assert difference(low=0.0, high=0.09).significant is False
    assert difference(low=-0.09, high=0.0).significant is False


def test_significant_needs_p_below_five_percent_too():
    assert difference(p_value=0.2).significant is False
    assert difference(p_value=1 - 0.95).significant is False  # exactly the threshold
    assert difference(p_value=0.049).significant is True
    assert difference(low=-0.01, p_value=0.001).significant is False


def test_method_names_each_kind_of_interval():
    assert difference().method == "paired bootstrap over test images (percentile), McNemar exact"
    assert difference(seeds=2, paired_seeds=True).method == (
        "t interval, Welch-Satterthwaite df; variance = per-seed differences + test images "
        "(bootstrap)"
    )
    assert difference(seeds=3).method == (
        "t interval, Welch-Satterthwaite df; variance = seeds of each side + test images "
        "(bootstrap)"
    )


def test_paired_difference_as_dict_adds_significance_and_method():
    d = difference(seeds=3, seed_se=0.01, df=4.5, only_a_right=None, only_b_right=None)
    assert d.as_dict() == {
        "images": 100,
        "seeds": 3,
        "difference": 0.05,
        "low": 0.01,
        "high": 0.09,
        "p_value": 0.01,
        "image_se": 0.02,
        "seed_se": 0.01,
        "paired_seeds": False,
        "df": 4.5,
        "only_a_right": None,
        "only_b_right": None,
        "significant": True,
        "method": (
            "t interval, Welch-Satterthwaite df; variance = seeds of each side + test images "
            "(bootstrap)"
        ),
    }


def test_paired_difference_from_dict_ignores_extra_keys_and_needs_every_field():
    d = difference()
    assert PairedDifference.from_dict({**d.as_dict(), "a": "run-a", "b": "run-b"}) == d
    record = d.as_dict()
    del record["image_se"]
    with pytest.raises(KeyError, match="image_se"):
        PairedDifference.from_dict(record)


def test_flipped_swaps_everything_that_depends_on_the_order():
    d = difference(difference=0.05, low=0.01, high=0.09, only_a_right=7, only_b_right=2)
    assert d.flipped() == difference(
        difference=-0.05, low=-0.09, high=-0.01, only_a_right=2, only_b_right=7
    )


def test_flipped_tie_has_no_negative_zero():
    back = difference(difference=0.0, low=-0.02, high=0.0).flipped()
    assert (back.difference, back.low, back.high) == (0.0, 0.0, 0.02)
    assert math.copysign(1.0, back.difference) == 1.0
    assert math.copysign(1.0, back.low) == 1.0


def test_describe_and_verdict_of_one_seed():
    d = difference(images=12345, difference=0.0312, low=-0.0049, high=0.0671, p_value=0.01234)
    text = (
        "+3.1 points (95 % CI -0.5 to +6.7, McNemar p = 0.012, 12,345 shared test images, one seed)"
    )
    assert d.describe() == text
    assert d.verdict() == text + ": not distinguishable at 95 % with one seed"


def test_describe_and_verdict_of_several_seeds():
    d = difference(images=1000, seeds=3, difference=-0.05, low=-0.08, high=-0.02, p_value=0.001)
    text = "-5.0 points (95 % CI -8.0 to -2.0, 1,000 shared test images, 3 seeds)"
    assert d.describe() == text
    assert d.verdict() == text
    wide = difference(images=999, seeds=2, low=-0.02, p_value=0.3)
    assert wide.verdict() == (
        "+5.0 points (95 % CI -2.0 to +9.0, 999 shared test images, 2 seeds): "
        "not distinguishable at 95 % with 2 seeds"
    )


def test_describe_signs_a_positive_lower_bound():
    d = difference(images=50, difference=0.2, low=0.1, high=0.3, p_value=0.0001)
    text = (
        "+20.0 points (95 % CI +10.0 to +30.0, McNemar p = 0.0001, 50 shared test images, one seed)"
    )
    assert d.describe() == text
    assert d.verdict() == text


@pytest.mark.parametrize(
    "n, text", [(1, "one seed"), (2, "2 seeds"), (0, "0 seeds"), (10, "10 seeds")]
)
def test_seeds_text(n, text):
    assert seeds_text(n) == text


# --------------------------------------------------------------------------- holm


def test_holm_by_hand_with_clipping_at_one():
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 2 x 0.5 = 1.0; 0.6 held up to 1.0
    assert holm([]) == []


def test_holm_by_hand_step_down_and_monotone():
    p = [0.04, 0.01, 0.03]
    adjusted = holm(p)
    assert adjusted == pytest.approx([0.06, 0.03, 0.06])  # 3p, 2p, p, held monotone
    assert adjusted == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert [type(q) for q in adjusted] == [float, float, float]


# --------------------------------------------------------------------------- paired_difference

A1 = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1], bool)
B1 = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1], bool)
# A right, B wrong: images 1, 3, 6, 9 (4); B right, A wrong: image 4 (1); accuracy 8/12 vs 5/12


def test_one_seed_in_full_by_hand():
    d = paired_difference(A1, B1)
    boot = scipy_bootstrap(A1.astype(float) - B1.astype(float))
    assert d == PairedDifference(
        images=12,
        seeds=1,
        difference=pytest.approx(3 / 12),
        low=pytest.approx(boot.confidence_interval.low, rel=1e-12),
        high=pytest.approx(boot.confidence_interval.high, rel=1e-12),
        p_value=pytest.approx(binomtest(4, 5, 0.5).pvalue),
        image_se=pytest.approx(boot.standard_error, rel=1e-12),
        seed_se=None,
        paired_seeds=False,
        df=None,
        only_a_right=4,
        only_b_right=1,
    )
    assert d.p_value == pytest.approx(0.375)  # 2 x (1 + 5) / 32
    assert type(d.difference) is float and type(d.p_value) is float
    assert type(d.low) is float and type(d.high) is float and type(d.image_se) is float


def test_one_seed_interval_is_the_percentile_one_of_a_skewed_bootstrap():
    a = np.zeros(12, bool)
    a[[2, 7]] = True  # A right on 2 images, B on none: resampled means skew right
    d = paired_difference(a, np.zeros(12, bool))
    boot = scipy_bootstrap(a.astype(float))
    assert (d.low, d.high) == pytest.approx(tuple(boot.confidence_interval), rel=1e-12, abs=1e-15)
    assert d.low == 0.0  # the percentile interval; the basic one would reach below 0
    assert (d.difference, d.only_a_right, d.only_b_right, d.p_value) == (1 / 6, 2, 0, 0.5)


def test_answers_given_as_integers_count_nonzero_as_right():
    a = np.array([1, 0, 3, 1])
    b = np.array([0, 2, 1, 0])  # as answers: A right on 0, 2, 3; B right on 1, 2
    d = paired_difference(a, b)
    assert (d.difference, d.only_a_right, d.only_b_right) == (0.25, 2, 1)
    seeds = paired_difference(np.array([a, a]), np.array([b, 2 * b]))
    assert seeds.difference == 0.25 and seeds.seed_se == 0.0


def test_one_seed_bootstrap_follows_its_seed():
    d = paired_difference(A1, B1, seed=7)
    boot = scipy_bootstrap(A1.astype(float) - B1.astype(float), seed=7)
    assert (d.low, d.high, d.image_se) == pytest.approx(
        (boot.confidence_interval.low, boot.confidence_interval.high, boot.standard_error),
        rel=1e-12,
    )
    other = scipy_bootstrap(A1.astype(float) - B1.astype(float), seed=0)
    assert d.image_se != pytest.approx(other.standard_error, rel=1e-12)


def test_one_seed_as_a_row_keeps_the_paired_seeds_flag():
    d = paired_difference(A1[None, :], B1[None, :], paired_seeds=True)
    assert (d.seeds, d.paired_seeds, d.df, d.seed_se) == (1, True, None, None)
    assert (d.only_a_right, d.only_b_right) == (4, 1)


def test_one_seed_without_discordant_images_has_p_one():
    right = np.array([1, 0, 1, 1, 0], bool)
    d = paired_difference(right, right.copy())
    assert d == PairedDifference(
        images=5,
        seeds=1,
        difference=0.0,
        low=0.0,
        high=0.0,
        p_value=1.0,
        image_se=0.0,
        seed_se=None,
        paired_seeds=False,
        df=None,
        only_a_right=0,
        only_b_right=0,
    )
    assert d.significant is False


def test_one_seed_where_a_is_always_right_and_b_never():
    d = paired_difference(np.ones(6, bool), np.zeros(6, bool))
    assert (d.difference, d.low, d.high, d.image_se) == (1.0, 1.0, 1.0, 0.0)
    assert (d.only_a_right, d.only_b_right) == (6, 0)
    assert d.p_value == pytest.approx(2 / 2**6)
    assert d.significant is True


def test_one_seed_b_better_counts_b_right_only():
    d = paired_difference(B1, A1)
    assert (d.only_a_right, d.only_b_right) == (1, 4)
    assert d.difference == pytest.approx(-3 / 12)


# 2 seeds x 8 images; accuracies A 6/8, 7/8; B 3/8, 4/8; per-seed differences 3/8, 3/8
A2 = np.array([[1, 1, 1, 0, 1, 0, 1, 1], [1, 0, 1, 1, 1, 1, 1, 1]], bool)
B2 = np.array([[1, 0, 0, 0, 1, 0, 1, 0], [0, 0, 1, 0, 1, 1, 1, 0]], bool)
DELTA2 = np.array([0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0])  # per image, averaged over seeds


def test_two_seeds_unpaired_by_hand():
    d = paired_difference(A2, B2)
    boot = scipy_bootstrap(DELTA2)
    part = (1 / 8) ** 2 / 2 / 2  # var(ddof 1) of 6/8 and 7/8 is (1/8)^2 / 2; over 2 seeds
    se = math.sqrt(2 * part + boot.standard_error**2)
    df = se**4 / (2 * part**2 / 1)
    half = student_t.ppf(0.975, df) * se
    p = 2 * student_t.sf((3 / 8) / se, df)
    assert d == PairedDifference(
        images=8,
        seeds=2,
        difference=pytest.approx(3 / 8),
        low=pytest.approx(3 / 8 - half, rel=1e-9),
        high=pytest.approx(3 / 8 + half, rel=1e-9),
        p_value=pytest.approx(p, rel=1e-9),
        image_se=pytest.approx(boot.standard_error, rel=1e-12),
        seed_se=pytest.approx(math.sqrt(2 * part)),
        paired_seeds=False,
        df=pytest.approx(df, rel=1e-9),
        only_a_right=None,
        only_b_right=None,
    )


def test_two_seeds_paired_without_spread_use_the_image_part_alone_and_a_normal():
    d = paired_difference(A2, B2, paired_seeds=True)  # per-seed differences 3/8, 3/8: no spread
    boot = scipy_bootstrap(DELTA2)
    se = boot.standard_error
    half = norm.ppf(0.975) * se
    assert d == PairedDifference(
        images=8,
        seeds=2,
        difference=pytest.approx(3 / 8),
        low=pytest.approx(3 / 8 - half, rel=1e-9),
        high=pytest.approx(3 / 8 + half, rel=1e-9),
        p_value=pytest.approx(2 * norm.sf((3 / 8) / se), rel=1e-9),
        image_se=pytest.approx(se, rel=1e-12),
        seed_se=0.0,
        paired_seeds=True,
        df=None,
        only_a_right=None,
        only_b_right=None,
    )


def test_three_seeds_paired_by_hand_with_b_better():
    a = np.array(
        [[1, 0, 0, 1, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]], bool
    )
    b = np.array(
        [[1, 1, 0, 1, 1, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0], [1, 0, 0, 1, 1, 1, 0, 0]], bool
    )
    diffs = np.array([3 - 5, 3 - 4, 1 - 4]) / 8  # per seed: -2/8, -1/8, -3/8
    part = float(np.sum((diffs - diffs.mean()) ** 2) / 2 / 3)
    delta = (a.sum(axis=0) - b.sum(axis=0)) / 3
    boot = scipy_bootstrap(delta)
    se = math.sqrt(part + boot.standard_error**2)
    df = se**4 / (part**2 / 2)
    d = paired_difference(a, b, paired_seeds=True)
    assert d.difference == pytest.approx(-0.25)
    assert (d.seed_se, d.image_se, d.df) == pytest.approx(
        (math.sqrt(part), boot.standard_error, df), rel=1e-9
    )
    half = student_t.ppf(0.975, df) * se
    assert (d.low, d.high) == pytest.approx((-0.25 - half, -0.25 + half), rel=1e-9)
    assert d.p_value == pytest.approx(2 * student_t.sf(0.25 / se, df), rel=1e-9)
    assert d.p_value < 1


def test_three_seeds_unpaired_weigh_both_sides_spread():
    a = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], bool)
    b = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], bool)
    acc_a, acc_b = np.array([4, 3, 5]) / 6, np.array([1, 2, 1]) / 6
    part_a = float(np.sum((acc_a - 4 / 6) ** 2) / 2 / 3)  # (1/36 + 1/36) / 2 / 3
    part_b = float(np.sum((acc_b - 4 / 18) ** 2) / 2 / 3)
    assert part_a == pytest.approx(1 / 108)
    boot = scipy_bootstrap((a.sum(axis=0) - b.sum(axis=0)) / 3)
    se = math.sqrt(part_a + part_b + boot.standard_error**2)
    df = se**4 / (part_a**2 / 2 + part_b**2 / 2)
    d = paired_difference(a, b)
    assert d.difference == pytest.approx(4 / 6 - 4 / 18)
    assert (d.seed_se, d.df) == pytest.approx((math.sqrt(part_a + part_b), df), rel=1e-9)
    half = student_t.ppf(0.975, df) * se
    assert d.high - d.low == pytest.approx(2 * half, rel=1e-9)


def test_several_seeds_without_any_spread_are_a_point():
    d = paired_difference(np.ones((2, 4), bool), np.zeros((2, 4), bool))
    assert d == PairedDifference(
        images=4,
        seeds=2,
        difference=1.0,
        low=1.0,
        high=1.0,
        p_value=0.0,
        image_se=0.0,
        seed_se=0.0,
        paired_seeds=False,
        df=None,
        only_a_right=None,
        only_b_right=None,
    )
    same = paired_difference(np.ones((3, 4), bool), np.ones((3, 4), bool), paired_seeds=True)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (same.seed_se, same.df, same.paired_seeds) == (0.0, None, True)


def test_two_images_are_enough():
    d = paired_difference(np.array([True, False]), np.array([False, False]))
    assert (d.images, d.difference, d.only_a_right, d.only_b_right) == (2, 0.5, 1, 0)
    assert d.p_value == 1.0


@pytest.mark.parametrize(
    "a, b",
    [
        (np.ones(4, bool), np.ones(5, bool)),
        (np.ones((2, 5), bool), np.ones((3, 5), bool)),
        (np.ones((2, 0), bool), np.ones((2, 0), bool)),
        (np.ones(0, bool), np.ones(0, bool)),
        (np.ones((1, 2, 3), bool), np.ones((1, 2, 3), bool)),
    ],
)
def test_paired_difference_refuses_with_its_message(a, b):
    message = "paired_difference needs two arrays of the same shape with images"
    with pytest.raises(ValueError, match=exactly(message)):
        paired_difference(a, b)


# --------------------------------------------------------------------------- shared_correctness


def test_shared_correctness_follows_the_sorted_shared_rows():
    a, b = shared_correctness(
        np.array([5, 1, 3]),
        np.array([True, False, False]),
        np.array([3, 9, 5]),
        np.array([True, False, False]),
    )
    assert a.tolist() == [False, True]  # rows 3 and 5
    assert b.tolist() == [True, False]


def test_shared_correctness_of_seeds_keeps_the_seed_axis():
    a, b = shared_correctness(
        np.array([0, 2, 4]),
        [[1, 0, 1], [0, 1, 1]],
        np.array([4, 0]),
        [[7, 8], [9, 6]],
    )
    assert a.tolist() == [[1, 1], [0, 1]]
    assert b.tolist() == [[8, 7], [6, 9]]


def test_shared_correctness_without_shared_rows_is_empty():
    a, b = shared_correctness(np.array([1]), np.array([True]), np.array([2]), np.array([True]))
    assert (a.shape, b.shape) == ((0,), (0,))


# --------------------------------------------------------------------------- scores


def test_is_privatetest_matches_the_exact_usage_name():
    usage = np.array(["PrivateTest", "PublicTest", "privatetest", "Training", "PrivateTest "])
    assert is_privatetest(usage).tolist() == [True, False, False, False, False]
    assert is_privatetest(np.array([b"PrivateTest", b"Training"])).tolist() == [True, False]
    assert is_privatetest(["Training", "PrivateTest"]).tolist() == [False, True]


def test_scores_in_full_by_hand():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 2, 0])
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores(labels, predicted) == {
        "accuracy": 0.666667,
        "macro_f1": 0.280952,  # (1/2 + 2/3 + 4/5) / 7
        "per_class": {
            "angry": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
            "disgust": {"precision": 0.5, "recall": 1.0, "f1": 0.666667, "support": 1},
            "fear": {"precision": 1.0, "recall": 0.666667, "f1": 0.8, "support": 3},
            "happy": zero,
            "sad": zero,
            "surprise": zero,
            "neutral": zero,
        },
        "confusion_matrix": [
            [1, 1, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0],
            [1, 0, 2, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
        ],
    }
    macro = f1_score(labels, predicted, labels=range(7), average="macro", zero_division=0)
    assert round(macro, 6) == 0.280952


def test_scores_of_the_last_class_only():
    result = scores(np.array([6, 6, 6]), np.array([6, 6, 5]))
    assert result["accuracy"] == 0.666667
    assert result["per_class"]["neutral"] == {
        "precision": 1.0,
        "recall": 0.666667,
        "f1": 0.8,
        "support": 3,
    }
    assert result["per_class"]["surprise"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert result["macro_f1"] == round(0.8 / 7, 6)
    assert result["confusion_matrix"][6] == [0, 0, 0, 0, 0, 1, 2]


def test_short_scores_in_full():
    assert short_scores(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])) == {
        "accuracy": 0.666667,
        "macro_f1": 0.280952,
        "images": 6,
    }


def test_privatetest_scores_read_bytes_usage():
    usage = np.array([b"PrivateTest", b"Training", b"PrivateTest", b"PrivateTest"])
    labels = np.array([3, 3, 3, 4])
    predicted = np.array([3, 0, 4, 4])
    # PrivateTest: true 3 3 4, predicted 3 4 4: accuracy 2/3; F1 happy 2/3, sad 2/3
    assert privatetest_scores(usage, labels, predicted) == {
        "images": 3,
        "accuracy": 0.666667,
        "macro_f1": round(4 / 3 / 7, 6),
    }


def test_privatetest_scores_of_every_image():
    usage = np.array(["PrivateTest", "PrivateTest"])
    assert privatetest_scores(usage, np.array([0, 1]), np.array([0, 1])) == {
        "images": 2,
        "accuracy": 1.0,
        "macro_f1": round(2 / 7, 6),
    }


def test_privatetest_scores_without_privatetest_images_are_empty():
    usage = np.array(["Training", "PublicTest"])
    assert privatetest_scores(usage, np.array([0, 1]), np.array([0, 1])) == {
        "images": 0,
        "accuracy": None,
        "macro_f1": None,
    }


@pytest.mark.parametrize(
    "correct, images, expected",
    [
        (0, 10, (0.0, 0.27753279986288926)),
        (10, 10, (0.7224672001371106, 1.0)),
        (3, 4, (0.30064184258240184, 0.9544127391902995)),
    ],
)
def test_wilson_interval_at_zero_at_n_and_between(correct, images, expected):
    low, high = wilson(correct, images)
    assert (low, high) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (low, high) == pytest.approx(
        proportion_confint(correct, images, alpha=0.05, method="wilson"), rel=1e-12, abs=1e-15
    )
    assert type(low) is float and type(high) is float


def test_wilson_interval_by_the_formula_and_with_counts_as_floats():
    z = norm.ppf(0.975)
    k, n = 7, 20
    centre = (k + z**2 / 2) / (n + z**2)
    half = z * math.sqrt(k * (n - k) / n + z**2 / 4) / (n + z**2)
    assert wilson(7.0, 20.0) == pytest.approx((centre - half, centre + half), rel=1e-12)
    assert wilson(np.int64(7), np.int64(20)) == pytest.approx((centre - half, centre + half))


# --------------------------------------------------------------------------- feature_health


def test_feature_health_in_full_by_hand():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    # column 0: 0, 2, 4 (std sqrt(8/3)); column 1 constant; one direction of change
    assert feature_health(x) == pytest.approx(
        {
            "rms": math.sqrt(23 / 6),
            "across_image_std": math.sqrt(8 / 3) / 2,
            "relative_std": math.sqrt(8 / 3) / 2 / math.sqrt(23 / 6),
            "constant_fraction": 0.5,
            "top1_variance": 1.0,
            "top10_variance": 1.0,
            "images": 3,
            "dimensions": 2,
        },
        rel=1e-12,
    )


def test_feature_health_of_two_images_in_three_dimensions():
    x = np.array([[1.0, -1.0, 3.0], [3.0, -1.0, 0.0]])
    assert feature_health(x) == pytest.approx(
        {
            "rms": math.sqrt((1 + 1 + 9 + 9 + 1 + 0) / 6),
            "across_image_std": (1.0 + 0.0 + 1.5) / 3,
            "relative_std": (2.5 / 3) / math.sqrt(3.5),
            "constant_fraction": 1 / 3,
            "top1_variance": 1.0,
            "top10_variance": 1.0,
            "images": 2,
            "dimensions": 3,
        },
        rel=1e-12,
    )


def test_feature_health_of_features_whose_total_variance_is_below_one():
    x = np.array([[0.0, 0.0], [0.1, 0.1]])  # total variance 4 * 0.05**2 = 0.01
    assert feature_health(x) == pytest.approx(
        {
            "rms": math.sqrt(0.005),
            "across_image_std": 0.05,
            "relative_std": 0.05 / math.sqrt(0.005),
            "constant_fraction": 0.0,
            "top1_variance": 1.0,
            "top10_variance": 1.0,
            "images": 2,
            "dimensions": 2,
        },
        rel=1e-12,
    )


def test_feature_health_of_zeros_and_of_a_constant():
    assert feature_health(np.zeros((3, 2))) == {
        "rms": 0.0,
        "across_image_std": 0.0,
        "relative_std": 0.0,
        "constant_fraction": 1.0,
        "top1_variance": 0.0,
        "top10_variance": 0.0,
        "images": 3,
        "dimensions": 2,
    }
    assert feature_health(np.full((2, 4), -2.0)) == {
        "rms": 2.0,
        "across_image_std": 0.0,
        "relative_std": 0.0,
        "constant_fraction": 1.0,
        "top1_variance": 0.0,
        "top10_variance": 0.0,
        "images": 2,
        "dimensions": 4,
    }


def test_feature_health_shares_of_variance_match_pca():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 15)) * np.linspace(3.0, 1.0, 15)
    h = feature_health(x)
    ratio = PCA().fit(x).explained_variance_ratio_
    assert h["top1_variance"] == pytest.approx(ratio[0], rel=1e-9)
    assert h["top10_variance"] == pytest.approx(ratio[:10].sum(), rel=1e-9)
    assert ratio[:11].sum() - ratio[:10].sum() > 0.01 and ratio[1] > 0.01
    assert h["across_image_std"] == pytest.approx(x.std(axis=0).mean(), rel=1e-12)
    assert (h["images"], h["dimensions"]) == (20, 15)


def test_feature_health_computes_in_double_precision():
    x32 = np.array([[0.1, 0.2, 0.3], [0.3, 0.7, 0.1], [0.5, 0.9, 0.7]], np.float32)
    x = x32.astype(np.float64)
    h = feature_health(x32)
    rms = math.sqrt(float(np.sum(x**2)) / 9)
    across = float(np.mean([np.std(column) for column in x.T]))
    assert (h["rms"], h["across_image_std"], h["relative_std"]) == pytest.approx(
        (rms, across, across / rms), rel=1e-13
    )
    assert all(type(v) is float for k, v in h.items() if k not in ("images", "dimensions"))


@pytest.mark.parametrize(
    "features", [np.ones((1, 4)), np.ones(5), np.ones((2, 2, 2)), np.ones((0, 3))]
)
def test_feature_health_refuses_with_its_message(features):
    with pytest.raises(
        ValueError, match=exactly("feature_health needs a 2-D array of at least 2 images")
    ):
        feature_health(features)


# --------------------------------------------------------------------------- degenerate_reason

BN_CAUSE = (
    "the frozen part's 3 BatchNormalization layers run in inference mode with their "
    "random-init statistics (mean 0, variance 1), so they renormalise nothing and the signal "
    "shrinks layer by layer; frozen_bn: recalibrated re-estimates them on training images"
)
RANDOM_CAUSE = (
    "the frozen part maps every image to (almost) the same output (randomly initialised "
    "layers without normalisation shrink the signal layer by layer)"
)
PLAIN_CAUSE = "the frozen part maps every image to (almost) the same output"
SAME = "every feature is the same on every image"


def health(std: float, relative: float, constant: float = 0.0, rms: float = 0.25) -> dict:
    return {
        "rms": rms,
        "across_image_std": std,
        "relative_std": relative,
        "constant_fraction": constant,
    }


def reason_of(h: dict, init: str = "pretrained", frozen_bn: str = "inference", layers: int = 0):
    return degenerate_reason(h, init=init, frozen_bn=frozen_bn, frozen_batchnorm_layers=layers)


def test_features_exactly_at_both_thresholds_are_healthy():
    assert reason_of(health(1e-3, 0.01)) is None
    assert reason_of(health(0.5, 0.5)) is None


def test_features_just_below_the_absolute_threshold_name_their_spread():
    assert reason_of(health(5e-4, 0.5)) == (
        f"features vary across images by 0.0005 on average (RMS 0.25; below 0.001): {PLAIN_CAUSE}"
    )
    assert reason_of(health(0.000999, 0.5, rms=1234.5)) == (
        f"features vary across images by 0.001 on average (RMS 1.2e+03; below 0.001): {PLAIN_CAUSE}"
    )


def test_features_just_below_the_relative_threshold_name_their_share():
    assert reason_of(health(1e-3, 0.0099)) == (
        f"features vary across images by 0.99 % of their size (below 1 %): {PLAIN_CAUSE}"
    )
    assert reason_of(health(0.5, 0.0012, constant=0.5)) == (
        f"features vary across images by 0.12 % of their size (below 1 %): {PLAIN_CAUSE}"
    )


def test_constant_features_say_so_whatever_the_numbers():
    assert reason_of(health(0.0, 0.0, constant=1.0)) == f"{SAME}: {PLAIN_CAUSE}"
    assert reason_of(health(1e-4, 0.0, constant=0.999)) == (
        f"features vary across images by 0.0001 on average (RMS 0.25; below 0.001): {PLAIN_CAUSE}"
    )


@pytest.mark.parametrize(
    "init, frozen_bn, layers, cause",
    [
        ("random", "inference", 3, BN_CAUSE),
        ("random", "inference", 0, RANDOM_CAUSE),
        ("random", "recalibrated", 0, RANDOM_CAUSE),
        ("random", "recalibrated", 3, PLAIN_CAUSE),
        ("pretrained", "inference", 3, PLAIN_CAUSE),
        ("pretrained", "inference", 0, PLAIN_CAUSE),
        ("pretrained", "recalibrated", 3, PLAIN_CAUSE),
    ],
)
def test_the_cause_depends_on_init_batchnorm_mode_and_layers(init, frozen_bn, layers, cause):
    assert reason_of(health(0.0, 0.0, constant=1.0), init, frozen_bn, layers) == f"{SAME}: {cause}"


def test_the_batchnorm_cause_names_the_number_of_layers():
    assert reason_of(health(0.0, 0.0, constant=1.0), "random", "inference", 1) == (
        f"{SAME}: {BN_CAUSE.replace('3 BatchNormalization', '1 BatchNormalization')}"
    )


# --------------------------------------------------------------------------- health_summary


def test_health_summary_in_full_rounds_to_eight_decimals():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    rms, across = math.sqrt(23 / 6), math.sqrt(8 / 3) / 2
    got = health_summary(
        x, init="random", frozen_bn="inference", frozen_batchnorm_layers=2, calibration=None
    )
    assert got == {
        "rms": round(rms, 8),
        "across_image_std": round(across, 8),
        "relative_std": round(across / rms, 8),
        "constant_fraction": 0.5,
        "top1_variance": 1.0,
        "top10_variance": 1.0,
        "images": 3,
        "dimensions": 2,
        "degenerate": False,
        "reason": "",
        "frozen_batchnorm_layers": 2,
        "batchnorm_recalibrated_on": 0,
    }
    assert list(got) == [
        "rms",
        "across_image_std",
        "relative_std",
        "constant_fraction",
        "top1_variance",
        "top10_variance",
        "images",
        "dimensions",
        "degenerate",
        "reason",
        "frozen_batchnorm_layers",
        "batchnorm_recalibrated_on",
    ]
    assert type(got["images"]) is int and type(got["dimensions"]) is int


def test_health_summary_of_constant_features_passes_init_and_layers_on():
    common = {"frozen_bn": "inference", "calibration": None}
    flat = np.full((2, 3), 0.5)
    random = health_summary(flat, init="random", frozen_batchnorm_layers=4, **common)
    assert random == {
        "rms": 0.5,
        "across_image_std": 0.0,
        "relative_std": 0.0,
        "constant_fraction": 1.0,
        "top1_variance": 0.0,
        "top10_variance": 0.0,
        "images": 2,
        "dimensions": 3,
        "degenerate": True,
        "reason": f"{SAME}: {BN_CAUSE.replace('3 BatchNormalization', '4 BatchNormalization')}",
        "frozen_batchnorm_layers": 4,
        "batchnorm_recalibrated_on": 0,
    }
    plain = health_summary(flat, init="pretrained", frozen_batchnorm_layers=4, **common)
    assert plain["reason"] == f"{SAME}: {PLAIN_CAUSE}"
    recalibrated = health_summary(
        flat,
        init="random",
        frozen_bn="recalibrated",
        frozen_batchnorm_layers=4,
        calibration={"images": 256},
    )
    assert (recalibrated["reason"], recalibrated["batchnorm_recalibrated_on"]) == (
        f"{SAME}: {PLAIN_CAUSE}",
        256,
    )


def test_health_summary_judges_the_rounded_numbers():
    x = np.array([[0.0], [0.002 - 1e-11]])  # across-image std 0.001 - 5e-12: 0.001 rounded
    got = health_summary(
        x, init="pretrained", frozen_bn="inference", frozen_batchnorm_layers=0, calibration={}
    )
    assert got["across_image_std"] == 0.001
    assert (got["degenerate"], got["reason"], got["batchnorm_recalibrated_on"]) == (False, "", 0)
