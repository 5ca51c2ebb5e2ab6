"""Which model ships: candidates, their combination, the choice on validation, macro-F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ferstudy.analysis.selection import (
    Candidate,
    accuracy,
    candidates,
    choose,
    combine,
    macro_f1,
    macro_f1_interval,
)


def test_candidates_are_each_seed_and_all_seeds_without_then_with_flip():
    names = [c.name for c in candidates([42, 43, 44])]
    assert names == [
        "seed42",
        "seed43",
        "seed44",
        "ensemble of 42,43,44",
        "seed42 + flip TTA",
        "seed43 + flip TTA",
        "seed44 + flip TTA",
        "ensemble of 42,43,44 + flip TTA",
    ]
    assert candidates([7]) == [Candidate((7,), False), Candidate((7,), True)]


def test_combine_averages_the_members_and_their_mirrors():
    plain = {1: np.array([[0.8, 0.2]]), 2: np.array([[0.2, 0.8]])}
    flipped = {1: np.array([[0.6, 0.4]]), 2: np.array([[0.0, 1.0]])}
    assert combine(Candidate((1,), False), plain, flipped)[0] == pytest.approx([0.8, 0.2])
    assert combine(Candidate((1, 2), False), plain, flipped)[0] == pytest.approx([0.5, 0.5])
    assert combine(Candidate((1,), True), plain, flipped)[0] == pytest.approx([0.7, 0.3])
    assert combine(Candidate((1, 2), True), plain, flipped)[0] == pytest.approx([0.4, 0.6])


def _one_hot(predicted: list[int], classes: int = 3) -> np.ndarray:
    return np.eye(classes)[predicted]


def test_choose_breaks_ties_by_taking_the_earlier_simpler_candidate():
    labels = np.array([0, 1, 2, 0])
    right = {1: _one_hot([0, 1, 2, 0]), 2: _one_hot([0, 1, 2, 0])}
    best, table = choose(candidates([1, 2]), right, right, labels)
    assert set(table.values()) == {1.0}
    assert best == Candidate((1,), False)


def test_choose_prefers_a_strictly_better_later_candidate():
    labels = np.array([0, 1])
    plain = {1: _one_hot([1, 1]), 2: _one_hot([1, 0])}
    flipped = {1: _one_hot([0, 1]), 2: _one_hot([1, 0])}
    best, table = choose(candidates([1, 2]), plain, flipped, labels)
    assert table == {
        "seed1": 0.5,
        "seed2": 0.0,
        "ensemble of 1,2": 0.0,  # ties between two classes go to the lower one
        "seed1 + flip TTA": 1.0,
        "seed2 + flip TTA": 0.0,
        "ensemble of 1,2 + flip TTA": 0.0,
    }
    assert best == Candidate((1,), True)


def test_accuracy_of_probabilities():
    assert accuracy(_one_hot([0, 1, 2]), np.array([0, 1, 1])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_equals_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 500)
    predicted = np.where(rng.random(500) < 0.5, labels, rng.integers(0, 6, 500))  # 6 never
    expected = f1_score(labels, predicted, labels=range(7), average="macro", zero_division=0)
    assert macro_f1(labels, predicted, 7) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_interval_holds_the_estimate_and_narrows_with_images():
    rng = np.random.default_rng(0)

    def interval(n: int) -> tuple[float, float, float]:
        labels = rng.integers(0, 7, n)
        predicted = np.where(rng.random(n) < 0.6, labels, rng.integers(0, 7, n))
        low, high = macro_f1_interval(labels, predicted, 7)
        return low, macro_f1(labels, predicted, 7), high

    low, estimate, high = interval(400)
    assert low < estimate < high and 0.03 < high - low < 0.2
    wide_low, _, wide_high = interval(100)
    assert wide_high - wide_low > 1.5 * (high - low)


def test_a_class_nobody_predicts_or_shows_counts_as_zero_in_the_mean():
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    predicted = np.array([0, 1, 2, 3, 4, 4, 1, 1])  # classes 6 (and nothing else) absent
    expected = f1_score(labels, predicted, labels=range(7), average="macro", zero_division=0)
    assert macro_f1(labels, predicted, 7) == pytest.approx(expected, abs=1e-12)
    assert macro_f1(labels, predicted, 7) == pytest.approx(
        6 / 7 * macro_f1(labels, predicted, 6), abs=1e-12
    )


def test_macro_f1_interval_is_scipys_percentile_bootstrap_of_sklearns_macro_f1():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)  # both ends have a 7th decimal: rounding to 6 shows
    labels = rng.integers(0, 7, 120)
    predicted = np.where(rng.random(120) < 0.6, labels, rng.integers(0, 7, 120))

    def f1(a, b):
        return f1_score(a, b, labels=range(7), average="macro", zero_division=0)

    expected = bootstrap(
        (labels, predicted),
        f1,
        paired=True,
        vectorized=False,
        n_resamples=2000,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    got = macro_f1_interval(labels, predicted, 7)
    assert got == [round(float(expected.low), 6), round(float(expected.high), 6)]


def test_validation_accuracies_are_rounded_to_six_places():
    labels = np.array([0, 1, 2])
    plain = {1: _one_hot([0, 1, 1])}
    _, table = choose(candidates([1])[:1], plain, plain, labels)
    assert table == {"seed1": 0.666667}
