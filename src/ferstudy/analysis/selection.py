"""Which model ships: the seeds of a fine-tuned run alone or averaged, with or without
horizontal-flip test-time augmentation, chosen on validation accuracy only.

Pure NumPy: the export stage computes each seed's probabilities on the validation and test
images, plain and mirrored, and these functions combine and choose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap

from ferstudy.analysis.scores import CONFIDENCE


@dataclass(frozen=True)
class Candidate:
    """A shippable model: the mean probabilities of ``seeds``, over mirrored faces too when
    ``flip``."""

    seeds: tuple[int, ...]
    flip: bool

    @property
    def name(self) -> str:
        members = (
            f"seed{self.seeds[0]}"
            if len(self.seeds) == 1
            else "ensemble of " + ",".join(str(s) for s in self.seeds)
        )
        return members + (" + flip TTA" if self.flip else "")


def candidates(seeds: list[int]) -> list[Candidate]:
    """Every seed alone and, with more than one seed, all of them together; each without and
    with flip test-time augmentation (simplest first)."""
    groups = [(s,) for s in seeds] + ([tuple(seeds)] if len(seeds) > 1 else [])
    return [Candidate(group, flip) for flip in (False, True) for group in groups]


def combine(
    candidate: Candidate, plain: dict[int, np.ndarray], flipped: dict[int, np.ndarray]
) -> np.ndarray:
    """The candidate's probabilities from each seed's on the plain and the mirrored faces."""
    views = [plain[s] for s in candidate.seeds]
    if candidate.flip:
        views += [flipped[s] for s in candidate.seeds]
    return np.mean(views, axis=0)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def choose(
    options: list[Candidate],
    plain: dict[int, np.ndarray],
    flipped: dict[int, np.ndarray],
    labels: np.ndarray,
) -> tuple[Candidate, dict[str, float]]:
    """The candidate with the highest validation accuracy (ties: the earlier, simpler one),
    and every candidate's validation accuracy by name."""
    scored = {c: accuracy(combine(c, plain, flipped), labels) for c in options}
    best = max(options, key=lambda c: (scored[c], -options.index(c)))
    return best, {c.name: round(a, 6) for c, a in scored.items()}


def macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Macro-averaged F1 over ``classes`` classes (a class never predicted nor present: 0)."""
    both = np.bincount(labels[labels == predicted], minlength=classes)
    true = np.bincount(labels, minlength=classes)
    guessed = np.bincount(predicted, minlength=classes)
    denominator = true + guessed
    f1 = np.divide(2 * both, denominator, out=np.zeros(classes), where=denominator > 0)
    return float(f1.mean())


def macro_f1_interval(
    labels: np.ndarray, predicted: np.ndarray, classes: int, seed: int = 0
) -> list[float]:
    """95 % percentile-bootstrap interval of the macro-F1 of one fixed model over its images."""
    result = bootstrap(
        (np.asarray(labels), np.asarray(predicted)),
        lambda a, b: macro_f1(a, b, classes),
        paired=True,
        vectorized=False,
        n_resamples=2000,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return [round(float(low), 6), round(float(high), 6)]
