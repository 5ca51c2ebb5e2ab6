"""Statistics of repeated runs: a configuration across its seeds, two configurations paired.

- :func:`summarize`: mean, sample standard deviation and a 95 % Student-t interval of one
  configuration's values across its ``n`` seeds (``scipy.stats.t``; no interval for n = 1).
- :func:`paired_difference`: test accuracy of configuration A minus B on the same test
  images. One seed each: a paired bootstrap interval over the images
  (``scipy.stats.bootstrap``, percentile, both runs' answers on an image kept together) and
  McNemar's exact test on the images where exactly one is right (``scipy.stats.binomtest``).
  Several seeds: the difference of the seed-averaged accuracies, whose variance has two
  parts, the test images (the bootstrap variance of the per-image seed-averaged difference)
  and the seeds (``s_A^2/n_A + s_B^2/n_B`` of the per-seed accuracies on those images, or
  ``s_d^2/n`` of the per-seed differences when the two share their seeds); the interval is
  Student-t with Welch-Satterthwaite degrees of freedom (the image part counted
  as known), so that a difference is called real only when it survives both a new sample of
  test images and new seeds.
- :func:`shared_correctness`: runs scored on different images (a ``fraction`` < 1 against
  full data) are compared on the images they share, and only there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap, norm, t
from statsmodels.stats.multitest import multipletests

#: Bootstrap resamples for the image part of an interval.
RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """One configuration's value across its seeds."""

    n: int
    mean: float
    sd: float | None  # sample standard deviation (ddof 1); None for one seed
    low: float | None  # 95 % Student-t interval of the mean; None for one seed
    high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def as_dict(self) -> dict[str, float | int | None]:
        return {**asdict(self), "half_width": self.half_width}

    @classmethod
    def from_dict(cls, record: dict[str, float | int | None]) -> Summary:
        """Inverse of :meth:`as_dict` (as read back from a metrics file)."""
        return cls(**{k: v for k, v in record.items() if k != "half_width"})

    def describe(self, digits: int = 4) -> str:
        """``mean ± half-width`` (just the mean for one seed)."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def summarize(values: list[float] | np.ndarray) -> Summary:
    """Mean, sd and 95 % t interval of the values of one configuration's seeds."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("summarize needs a non-empty 1-D sequence")
    mean = float(x.mean())
    if len(x) == 1:
        return Summary(1, mean, None, None, None)
    if np.ptp(x) == 0:  # every seed the same: the interval is the point (scipy: nan for scale 0)
        return Summary(len(x), mean, 0.0, mean, mean)
    sd = float(x.std(ddof=1))
    low, high = t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=sd / np.sqrt(len(x)))
    return Summary(len(x), mean, sd, float(low), float(high))


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on ``images`` shared test images, ``seeds`` each."""

    images: int
    seeds: int
    difference: float
    low: float  # 95 % interval
    high: float
    p_value: float  # two-sided: McNemar's exact test (one seed), else the t statistic's
    image_se: float  # standard error from the test images (bootstrap)
    seed_se: float | None  # standard error from the seeds; None for one seed
    paired_seeds: bool  # the seed part from per-seed differences (same seeds on both sides)
    df: float | None  # Welch-Satterthwaite degrees of freedom; None for one seed or infinite
    only_a_right: int | None  # one seed: the discordant images McNemar counts
    only_b_right: int | None

    @property
    def significant(self) -> bool:
        """Real at 95 %: the interval excludes 0, and (one seed) McNemar agrees (p < 0.05),
        so that a handful of discordant images never makes a difference real."""
        return (self.low > 0 or self.high < 0) and self.p_value < 1 - CONFIDENCE

    @property
    def method(self) -> str:
        if self.seeds == 1:
            return "paired bootstrap over test images (percentile), McNemar exact"
        seeds = "per-seed differences" if self.paired_seeds else "seeds of each side"
        return f"t interval, Welch-Satterthwaite df; variance = {seeds} + test images (bootstrap)"

    def as_dict(self) -> dict[str, float | int | bool | str | None]:
        return {**asdict(self), "significant": self.significant, "method": self.method}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PairedDifference:
        """Inverse of :meth:`as_dict` (extra keys, e.g. the runs' names, ignored)."""
        return cls(**{f.name: record[f.name] for f in fields(cls)})

    def flipped(self) -> PairedDifference:
        """B minus A: the same comparison the other way round (exact: both intervals are
        symmetric in A and B)."""
        return replace(
            self,
            difference=0.0 - self.difference,  # 0.0 - x: no "-0.0" for a tie
            low=0.0 - self.high,
            high=0.0 - self.low,
            only_a_right=self.only_b_right,
            only_b_right=self.only_a_right,
        )

    def describe(self) -> str:
        text = (
            f"{100 * self.difference:+.1f} points (95 % CI {100 * self.low:+.1f} to "
            f"{100 * self.high:+.1f}"
        )
        if self.seeds == 1:
            text += f", McNemar p = {self.p_value:.2g}"
        return text + f", {self.images:,} shared test images, {seeds_text(self.seeds)})"

    def verdict(self) -> str:
        """``describe`` plus, where it is not real, "not distinguishable at 95 % with n seeds"."""
        if self.significant:
            return self.describe()
        return f"{self.describe()}: not distinguishable at 95 % with {seeds_text(self.seeds)}"


def seeds_text(n: int) -> str:
    """``one seed`` or ``<n> seeds``."""
    return "one seed" if n == 1 else f"{n} seeds"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p values (``statsmodels``)."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(p_values, alpha=1 - CONFIDENCE, method="holm")[1]]


def _image_bootstrap(delta: np.ndarray, seed: int):
    return bootstrap(
        (delta,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        batch=1000,
        rng=np.random.default_rng(seed),
    )


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0, *, paired_seeds: bool = False
) -> PairedDifference:
    """Compare per-image correctness of A and B on the same images.

    ``correct_a`` and ``correct_b`` are boolean arrays, 1-D (one seed) or ``(seeds, images)``;
    both need the same images, and the same number of seeds. ``paired_seeds``: row ``s`` of
    A and of B share everything a seed decides (one setting changed under the same seeds,
    e.g. the precision), so the seed part is the variance of the per-seed differences
    (``s_d^2/n``, ``n - 1`` df) rather than of each side's accuracies.
    """
    a, b = np.atleast_2d(np.asarray(correct_a, bool)), np.atleast_2d(np.asarray(correct_b, bool))
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError("paired_difference needs two arrays of the same shape with images")
    seeds, images = a.shape
    delta = a.mean(axis=0) - b.mean(axis=0)  # per image, averaged over seeds
    difference = float(delta.mean())
    boot = _image_bootstrap(delta, seed)
    image_se = float(boot.standard_error)
    if seeds == 1:
        only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
        p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        low, high = boot.confidence_interval
        return PairedDifference(
            images=images,
            seeds=1,
            difference=difference,
            low=float(low),
            high=float(high),
            p_value=float(p),
            image_se=image_se,
            seed_se=None,
            paired_seeds=paired_seeds,
            df=None,
            only_a_right=only_a,
            only_b_right=only_b,
        )
    # the variance of the per-seed accuracies from their integer counts of right answers:
    # seeds with equal counts (paired: equal differences of counts) then have a variance of
    # exactly 0, where floating-point accuracies leave a rounding residue
    right_a, right_b = a.sum(axis=1), b.sum(axis=1)
    counts = (right_a - right_b,) if paired_seeds else (right_a, right_b)
    seed_parts: tuple[float, ...] = tuple(c.var(ddof=1) / images**2 / seeds for c in counts)
    seed_var = float(sum(seed_parts))
    se = float(np.sqrt(seed_var + image_se**2))
    df = float(se**4 / sum(part**2 / (seeds - 1) for part in seed_parts)) if seed_var > 0 else None
    dist = t(df) if df is not None else norm  # no seed spread: the image part alone, normal
    half = float(dist.ppf(0.5 + CONFIDENCE / 2)) * se
    p = float(2 * dist.sf(abs(difference) / se)) if se > 0 else float(difference == 0)
    return PairedDifference(
        images=images,
        seeds=seeds,
        difference=difference,
        low=difference - half,
        high=difference + half,
        p_value=p,
        image_se=image_se,
        seed_se=float(np.sqrt(seed_var)),
        paired_seeds=paired_seeds,
        df=df,
        only_a_right=None,
        only_b_right=None,
    )


def shared_correctness(
    rows_a: np.ndarray, correct_a: np.ndarray, rows_b: np.ndarray, correct_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two runs restricted to the dataset rows both scored.

    ``correct_*`` is indexed by image along its last axis (1-D, or seeds x images).
    """
    _, ia, ib = np.intersect1d(rows_a, rows_b, return_indices=True)
    return np.asarray(correct_a)[..., ia], np.asarray(correct_b)[..., ib]
