"""Paired comparison of two classifiers on the same test images.

A difference in accuracy between two runs is stated only with its uncertainty: a paired
bootstrap interval of the difference (images resampled with replacement, both runs' answers
on an image kept together) and McNemar's exact test on the images where exactly one run is
right (``scipy.stats.binomtest``). Runs scored on different images (a ``fraction`` < 1
against full data) are compared on the images they share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

#: Bootstrap resamples for the interval.
RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on ``images`` shared test images."""

    images: int
    difference: float
    low: float  # 95 % paired bootstrap interval
    high: float
    mcnemar_p: float  # exact two-sided, on the discordant images
    only_a_right: int
    only_b_right: int

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes 0."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "significant": self.significant}

    def describe(self) -> str:
        return (
            f"{100 * self.difference:+.1f} points (95 % CI {100 * self.low:+.1f} to "
            f"{100 * self.high:+.1f}, McNemar p = {self.mcnemar_p:.2g}, {self.images:,} images)"
        )


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0
) -> PairedDifference:
    """Compare two boolean arrays of per-image correctness on the same images."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_difference needs two 1-D arrays of the same non-zero length")
    delta = a.astype(np.int8) - b.astype(np.int8)
    rng = np.random.default_rng(seed)
    means = np.empty(RESAMPLES)
    for i in range(RESAMPLES):
        means[i] = delta[rng.integers(0, len(delta), len(delta))].mean()
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(
        len(a), float(delta.mean()), float(low), float(high), float(p), only_a, only_b
    )


def shared_correctness(
    rows_a: np.ndarray, correct_a: np.ndarray, rows_b: np.ndarray, correct_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two runs restricted to the dataset rows both scored."""
    shared, ia, ib = np.intersect1d(rows_a, rows_b, return_indices=True)
    return np.asarray(correct_a)[ia], np.asarray(correct_b)[ib]
