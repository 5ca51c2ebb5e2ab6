"""The report's conclusions: the study's findings checked, and the backbone choice.

Every difference between two configurations is stated only when its 95 % interval excludes
0; otherwise it reads "not distinguishable at 95 % with n seeds". Test accuracy is compared
paired on the same test images (``metrics/comparisons.json``, :mod:`ferstudy.stages.aggregate`);
per-run numbers without a per-image reading (initial accuracy and loss, the study's rates)
are compared across seeds with Welch's t interval (``scipy.stats.ttest_ind``), which needs
at least 2 seeds: with one seed the direction is reported as such, without a claim.

The study's findings are checked on the study's runs only: a fine-tuned run
(``<backbone>-<init>-finetune``) shares its backbone and init with a study run but not its
recipe, so it never stands in for one. Each fine-tuned run gets a sentence of its own
(:func:`finetune_findings`), and the backbone choice (:func:`choice`) counts it as a
candidate of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import ttest_ind

from ferstudy.analysis.stats import PairedDifference
from ferstudy.core import paths


@dataclass(frozen=True)
class SeedDifference:
    """Mean of A's seeds minus mean of B's, with a 95 % Welch interval (2+ seeds each)."""

    difference: float
    low: float | None
    high: float | None
    seeds: int

    @property
    def significant(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def describe(self, digits: int = 4) -> str:
        if self.low is None:
            return f"{self.difference:+.{digits}f} (one seed: no interval)"
        return (
            f"{self.difference:+.{digits}f} (95 % CI {self.low:+.{digits}f} to "
            f"{self.high:+.{digits}f}, {self.seeds} seeds)"
        )


def seed_difference(a: list[float], b: list[float]) -> SeedDifference:
    """``mean(a) - mean(b)`` with Welch's 95 % interval over the seeds."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    difference = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return SeedDifference(difference, None, None, min(len(x), len(y)))
    if x.std() == 0 and y.std() == 0:  # no spread at all: the interval is the point
        return SeedDifference(difference, difference, difference, min(len(x), len(y)))
    ci = ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    return SeedDifference(difference, float(ci.low), float(ci.high), min(len(x), len(y)))


def comparison_of(
    comparisons: dict[str, dict[str, Any]], a: str, b: str
) -> PairedDifference | None:
    """The paired test-accuracy comparison of ``a`` minus ``b`` from ``comparisons.json``
    (flipped if it is stored as ``b vs a``); None when the two were not compared."""
    if f"{a} vs {b}" in comparisons:
        return PairedDifference.from_dict(comparisons[f"{a} vs {b}"])
    if f"{b} vs {a}" in comparisons:
        return PairedDifference.from_dict(comparisons[f"{b} vs {a}"]).flipped()
    return None


def _per_seed(r: dict[str, Any], read) -> list[float]:
    return [float(read(s)) for s in r["seed_study"]]


def early_mcr(study: dict[str, Any]) -> float:
    """Mean accuracy MCR of the first two windows (epochs 1-10)."""
    return float(np.mean(list(study["MCR"]["accuracy"].values())[:2]))


def mean_mofr(study: dict[str, Any]) -> float:
    """Mean accuracy MOFR over every window."""
    return float(np.mean(list(study["MOFR"]["accuracy"].values())))


#: Pretrained-vs-random claims of the study read from per-seed values: sentence start, how
#: to read one seed, whether pretrained should be higher.
SEED_CLAIMS = (
    (
        "Pretrained has the higher initial (epoch-1) validation accuracy",
        lambda s: s["initial"]["val_accuracy"],
        True,
    ),
    ("Pretrained has the lower initial validation loss", lambda s: s["initial"]["val_loss"], False),
    ("Pretrained converges faster in epochs 1-10 (accuracy MCR)", early_mcr, True),
    ("Pretrained overfits more (mean accuracy MOFR)", mean_mofr, True),
)


def _study_claim(start: str, diffs: dict[str, SeedDifference], higher: bool, seeds: int) -> str:
    """One of the study's claims, counted over backbones: by interval with 2+ seeds, by the
    point estimate (and no claim) with one."""
    point = [b for b, d in diffs.items() if (d.difference > 0) == higher]
    if seeds < 2:
        detail = "; ".join(f"{b} {d.difference:+.4f}" for b, d in diffs.items())
        return (
            f"{start}: {len(point)} of {len(diffs)} backbones by the point estimate, with one "
            f"seed no claim ({detail}); the study: yes."
        )
    holds = [b for b in point if diffs[b].significant]
    detail = "; ".join(f"{b} {d.describe()}" for b, d in diffs.items())
    return (
        f"{start}: {len(holds)} of {len(diffs)} backbones with a 95 % interval that excludes "
        f"0 ({detail}); the study: yes."
    )


def pretrained_findings(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]]
) -> list[str]:
    """The study's pretrained-vs-random claims, per backbone with both runs."""
    by = {(r["backbone"], r["init"]): r for r in results.values()}
    pairs = sorted(b for b, i in by if i == "pretrained" and (b, "random") in by)
    if not pairs:
        return [
            "Pretrained vs random cannot be compared: no backbone has both runs here "
            "(pretrained weights need a download; see the README)."
        ]
    name = {b: (paths.run_name(b, "pretrained"), paths.run_name(b, "random")) for b in pairs}
    paired = {b: comparison_of(comparisons, *name[b]) for b in pairs}
    wins = [b for b in pairs if paired[b] and paired[b].significant and paired[b].low > 0]
    out = [
        f"Pretrained beats random initialisation (test accuracy, paired 95 % interval above 0) "
        f"for {len(wins)} of {len(pairs)} backbones ({', '.join(wins) or 'none'}); the study: all."
    ]
    out += [
        f"{b}: pretrained minus random test accuracy {paired[b].verdict()}."
        for b in pairs
        if paired[b]
    ]
    seeds = min(len(by[(b, i)]["seed_study"]) for b in pairs for i in paths.INITS)
    for start, read, higher in SEED_CLAIMS:
        diffs = {
            b: seed_difference(
                _per_seed(by[(b, "pretrained")], read), _per_seed(by[(b, "random")], read)
            )
            for b in pairs
        }
        out.append(_study_claim(start, diffs, higher, seeds))
    return out


def _accuracy(r: dict[str, Any]) -> float:
    return r["eval"]["accuracy"]


def finetune_findings(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]]
) -> list[str]:
    """One sentence per fine-tuned run: it minus its frozen-backbone counterpart (the study
    run of the same backbone and init), paired on the test images both were scored on."""
    out = []
    for run in sorted(r for r in results if paths.is_finetune(r)):
        frozen = run.removesuffix(paths.FINETUNE_SUFFIX)
        c = comparison_of(comparisons, run, frozen)
        verdict = (
            f"test accuracy {c.verdict()}"
            if c
            else "not compared (no frozen run of it here, or too few shared test images)"
        )
        out.append(
            f"Fine-tuning end to end ({run}) minus the study's frozen recipe ({frozen}): "
            f"{verdict}; beyond the study, which fine-tuned nothing."
        )
    return out


def findings(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """Which of the study's findings the current runs agree with, in plain sentences.

    ``results``: per run as ``report.load_results`` returns it (``study``/``eval`` are seed
    means, ``seed_study`` the seeds' own rates); ``comparisons``: ``metrics/comparisons.json``.
    """
    comparisons = comparisons or {}
    tuned = finetune_findings(results, comparisons)
    results = {run: r for run, r in results.items() if not paths.is_finetune(run)}
    out = pretrained_findings(results, comparisons)
    by = {(r["backbone"], r["init"]): r for r in results.values()}
    if ("vggface", "random") in by:
        r = by[("vggface", "random")]
        rates = [
            v for rate in ("MCR", "MOFR") for m in r["study"][rate].values() for v in m.values()
        ]
        largest = max(abs(v) for v in rates)
        verdict = (
            "does not learn (all rates ~0): agrees"
            if largest < 1e-3
            else "does learn (rates not ~0): disagrees"
        )
        note = (
            "; its frozen features are flagged degenerate, so what it learns is the class prior"
            if r.get("health", {}).get("degenerate")
            else ""
        )
        out.append(
            f"VGG-Face from random initialisation {verdict} with the study "
            f"(largest |rate| {largest:.4f}){note}."
        )
    for init in paths.INITS:
        if ("openface", init) in by and ("resnet50", init) in by:
            o, rn = by[("openface", init)], by[("resnet50", init)]
            c = comparison_of(
                comparisons, paths.run_name("openface", init), paths.run_name("resnet50", init)
            )
            ratio = rn["speed"]["parameters"] / max(1, o["speed"]["parameters"])
            diff = c.verdict() if c else "not compared"
            out.append(
                f"OpenFace vs ResNet-50 ({init}): OpenFace minus ResNet-50 test accuracy {diff}, "
                f"with {ratio:.1f}x fewer parameters; the study: about as accurate."
            )
        if ("mobilenet", init) in by and ("openface", init) in by:
            c = comparison_of(
                comparisons, paths.run_name("mobilenet", init), paths.run_name("openface", init)
            )
            if c is None:
                verdict = "not compared with"
            elif c.significant:
                verdict = "below" if c.high < 0 else "above"
            else:
                verdict = "not distinguishable from"
            out.append(
                f"MobileNet ({init}) is {verdict} OpenFace in test accuracy"
                + (f" (MobileNet minus OpenFace {c.describe()})" if c else "")
                + "; the study: below."
            )
        same = sorted((r for r in results.values() if r["init"] == init), key=_mean_mcr)
        if len(same) > 1:
            top, second = same[-1], same[-2]
            d = seed_difference(
                [float(np.mean(list(s["MCR"]["accuracy"].values()))) for s in top["seed_study"]],
                [float(np.mean(list(s["MCR"]["accuracy"].values()))) for s in second["seed_study"]],
            )
            verdict = (
                f"{top['backbone']} (ahead of {second['backbone']} by {d.describe()})"
                if d.significant
                else f"{top['backbone']} by the point estimate, not distinguishable from "
                f"{second['backbone']} ({d.describe()})"
            )
            out.append(
                f"Highest mean accuracy MCR among {init} runs: {verdict}; the study: OpenFace."
            )
    worst = [
        r
        for r in results.values()
        if r["eval"]["per_class"]["disgust"]["f1"]
        < min(v["f1"] for c, v in r["eval"]["per_class"].items() if c != "disgust")
    ]
    out.append(
        f"Disgust has the lowest test F1 (seed mean, point estimate) in {len(worst)} of "
        f"{len(results)} runs; the study: disgust worst."
    )
    return out + tuned


def _mean_mcr(r: dict[str, Any]) -> float:
    return float(np.mean(list(r["study"]["MCR"]["accuracy"].values())))


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Runs not beaten on both (accuracy, speed) by another run, fastest first."""
    front = [
        r
        for r, (acc, speed) in points.items()
        if not any(
            a >= acc and s >= speed and (a, s) != (acc, speed)
            for o, (a, s) in points.items()
            if o != r
        )
    ]
    return sorted(front, key=lambda r: -points[r][1])


def choice(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """The backbone choice: the most accurate (if it is distinguishably so) and the fastest.

    Every run is a candidate under its own name: a fine-tuned run beside, never in place of,
    the study run of the same backbone and init."""
    comparisons = comparisons or {}
    points = {
        r: (_accuracy(v), v["speed"]["images_per_second_batch64"]) for r, v in results.items()
    }
    front = pareto_front(points)
    ranked = sorted(points, key=lambda r: -points[r][0])
    best, fastest = ranked[0], front[0]
    tuned = any(paths.is_finetune(r) for r in results)
    lines = [
        "Pareto front (mean test accuracy on each run's own test set"
        + (", for a fine-tuned run its own split's," if tuned else "")
        + " vs images/s, fastest first): "
        + ", ".join(f"{r} ({points[r][0]:.3f}, {points[r][1]:.0f} img/s)" for r in front),
    ]
    versus = {r: comparison_of(comparisons, best, r) for r in ranked[1:]}
    if not versus:
        lines.append(f"When accuracy matters: **{best}** (the only run).")
    elif all(c is not None and c.significant and c.low > 0 for c in versus.values()):
        runner_up = ranked[1]
        lines.append(
            f"When accuracy matters: **{best}** (test accuracy {points[best][0]:.3f}): ahead "
            f"of every other run on the test images they share, of the runner-up {runner_up} "
            f"by {versus[runner_up].describe()}."
        )
    else:
        tied = [r for r, c in versus.items() if c is None or not (c.significant and c.low > 0)]
        lines.append(
            f"When accuracy matters: {best} has the highest mean test accuracy "
            f"({points[best][0]:.3f}) but is not ahead at 95 % of {', '.join(tied)} on the "
            "test images they share: no single most accurate run."
        )
    lines.append(
        f"When speed matters: **{fastest}** ({points[fastest][1]:.0f} img/s on this machine, "
        f"test accuracy {points[fastest][0]:.3f})."
    )
    return lines
