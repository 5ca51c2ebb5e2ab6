"""Edges of the analysis layer that mutation testing found unguarded: input checks, the
reversed comparison, clipped intervals, a one-seed side, the features stage's health record."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t

from ferstudy.analysis.findings import SeedDifference, real_after_holm, seed_difference
from ferstudy.analysis.health import health_summary
from ferstudy.analysis.ranking import accuracy_interval, versus_fixed
from ferstudy.analysis.results import common_study
from ferstudy.analysis.scores import short_scores
from ferstudy.analysis.stats import paired_difference, summarize


def test_summarize_refuses_what_is_not_a_list_of_seeds():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        summarize([])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        summarize([[0.5, 0.6], [0.7, 0.8]])


def test_paired_difference_refuses_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(np.ones(4, bool), np.ones(5, bool))
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(np.ones((2, 0), bool), np.ones((2, 0), bool))
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(np.ones((1, 2, 3), bool), np.ones((1, 2, 3), bool))


def test_paired_difference_reads_0_and_1_as_answers_on_both_sides():
    right = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    d = paired_difference(right, np.array([2, 0, 0, 0, 0, 0, 0, 0]))  # 2 counts as right
    assert (d.only_a_right, d.only_b_right) == (4, 0)


def test_flipped_swaps_the_discordant_counts_and_the_interval():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    b = np.array([0, 0, 1, 1, 0, 1, 0, 0], bool)
    d = paired_difference(a, b)
    back = d.flipped()
    assert (back.only_a_right, back.only_b_right) == (d.only_b_right, d.only_a_right) == (1, 3)
    assert (back.difference, back.low, back.high) == (-d.difference, -d.high, -d.low)
    assert back == paired_difference(b, a)


def test_accuracy_interval_is_clipped_to_0_and_1():
    always = np.ones((2, 30), bool)
    always[0, 0] = False  # two seeds, 59 of 60 right: a t interval reaches past 1
    mean, low, high = accuracy_interval(always)
    assert mean == pytest.approx(59 / 60) and low < mean and high == 1.0
    assert versus_fixed(always, np.zeros(30, bool)).high > 1.0  # what the clip removes


def test_seed_difference_with_one_seed_on_either_side_has_no_interval():
    assert seed_difference([0.5], [0.4, 0.6]).low is None
    assert seed_difference([0.5, 0.6], [0.4]).high is None
    one_flat = seed_difference([0.5, 0.5], [0.3, 0.5])  # one side varies: a real interval
    assert one_flat.low < one_flat.difference < one_flat.high
    other_flat = seed_difference([0.3, 0.5], [0.5, 0.5])  # Welch with one variance 0: df 1
    half = t.ppf(0.975, 1) * 0.1
    assert (other_flat.low, other_flat.high) == pytest.approx((-0.1 - half, -0.1 + half))
    assert seed_difference([0.5], [0.5, 0.5, 0.5]) == SeedDifference(0.0, None, None, 1)


def test_seed_difference_without_spread_is_the_point_on_the_smaller_side():
    d = seed_difference([0.5, 0.5], [0.25, 0.25, 0.25])
    assert d == SeedDifference(0.25, 0.25, 0.25, 2, p_value=0.0)
    assert seed_difference([0.5, 0.5], [0.5, 0.5]).p_value == 1.0
    assert d.significant and d.describe() == "+0.2500 (95 % CI +0.2500 to +0.2500, 2 seeds)"


def test_seed_difference_is_welchs_interval_by_hand():
    """Unequal spreads and seed counts, where Welch's and Student's intervals differ."""
    a, b = np.array([0.60, 0.62, 0.61, 0.70, 0.58]), np.array([0.50, 0.51])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t.ppf(0.975, df) * np.sqrt(va + vb)
    d = seed_difference(list(a), list(b))
    assert d.difference == pytest.approx(a.mean() - b.mean())
    assert (d.low, d.high) == pytest.approx((d.difference - half, d.difference + half))
    p = 2 * t.sf(d.difference / np.sqrt(va + vb), df)
    assert d.seeds == 2 and d.p_value == pytest.approx(p)


def test_real_after_holm_reads_the_pair_either_way_round():
    stored = {"b vs a": {"significant_holm": True}, "a vs c": {"significant_holm": False}}
    assert real_after_holm(stored, "a", "b") and real_after_holm(stored, "b", "a")
    assert not real_after_holm(stored, "c", "a")
    assert not real_after_holm(stored, "a", "d")  # not compared


def test_common_study_of_one_seed_is_that_seed():
    study = {
        "MCR": {"accuracy": {"1-5": 0.1}, "loss": {"1-5": -0.2}},
        "MOFR": {"accuracy": {"1-5": 0.0}, "loss": {"1-5": 0.3}},
        "epochs": 5,
    }
    assert common_study([study]) == [study]


def test_short_scores_are_accuracy_macro_f1_and_count():
    labels = np.array([0, 1, 2, 2])
    assert short_scores(labels, np.array([0, 1, 2, 0])) == {
        "accuracy": 0.75,
        "macro_f1": pytest.approx((2 / 3 + 1 + 2 / 3) / 7, abs=1e-6),
        "images": 4,
    }


def test_health_summary_records_the_flag_and_the_calibration():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 16)).astype(np.float32)
    calibrated = health_summary(
        features,
        init="random",
        frozen_bn="recalibrated",
        frozen_batchnorm_layers=3,
        calibration={"images": 1024},
    )
    assert calibrated["degenerate"] is False and calibrated["reason"] == ""
    assert calibrated["batchnorm_recalibrated_on"] == 1024
    assert calibrated["frozen_batchnorm_layers"] == 3
    flat = health_summary(
        np.ones((64, 16), np.float32),
        init="random",
        frozen_bn="inference",
        frozen_batchnorm_layers=3,
        calibration=None,
    )
    assert flat["degenerate"] is True and "same on every image" in flat["reason"]
    assert flat["batchnorm_recalibrated_on"] == 0
