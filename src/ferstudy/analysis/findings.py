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

from ferstudy.analysis.stats import CONFIDENCE, PairedDifference, holm
from ferstudy.core import paths
from ferstudy.models.specs import get_spec


@dataclass(frozen=True)
class SeedDifference:
    """Mean of A's seeds minus mean of B's, with a 95 % Welch interval and its two-sided p
    (2+ seeds each)."""

    difference: float
    low: float | None
    high: float | None
    seeds: int
    p_value: float | None = None

    @property
    def significant(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def describe(self, digits: int = 4, holm_p: float | None = None) -> str:
        """The difference and its interval; ``holm_p``: its p after Holm's adjustment."""
        if self.low is None:
            return f"{self.difference:+.{digits}f} (one seed: no interval)"
        adjusted = "" if holm_p is None else f", Holm p = {holm_p:.2g}"
        return (
            f"{self.difference:+.{digits}f} (95 % CI {self.low:+.{digits}f} to "
            f"{self.high:+.{digits}f}, {self.seeds} seeds{adjusted})"
        )


def seed_difference(a: list[float], b: list[float]) -> SeedDifference:
    """``mean(a) - mean(b)`` with Welch's 95 % interval over the seeds."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    difference = float(x.mean() - y.mean())
    seeds = min(len(x), len(y))
    if seeds < 2:
        return SeedDifference(difference, None, None, seeds)
    if x.std() == 0 and y.std() == 0:  # no spread at all: the interval is the point
        return SeedDifference(difference, difference, difference, seeds, float(difference == 0))
    test = ttest_ind(x, y, equal_var=False)
    ci = test.confidence_interval(0.95)
    return SeedDifference(difference, float(ci.low), float(ci.high), seeds, float(test.pvalue))


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
    """One of the study's claims, counted over backbones (each named with its family): by
    interval with 2+ seeds, and by Holm's adjustment of their p-values over the backbones; by
    the point estimate (and no claim) with one."""
    point = [b for b, d in diffs.items() if (d.difference > 0 if higher else d.difference < 0)]
    named = {b: f"{b} ({get_spec(b).family})" for b in diffs}
    if seeds < 2:
        detail = "; ".join(f"{named[b]} {d.difference:+.4f}" for b, d in diffs.items())
        return (
            f"{start}: {len(point)} of {len(diffs)} backbones by the point estimate, with one "
            f"seed no claim ({detail}); the study: yes."
        )
    adjusted = dict(zip(diffs, holm([d.p_value for d in diffs.values()]), strict=True))
    holds = [b for b in point if diffs[b].significant]
    after = [b for b in holds if adjusted[b] < 1 - CONFIDENCE]
    detail = "; ".join(f"{named[b]} {d.describe(holm_p=adjusted[b])}" for b, d in diffs.items())
    return (
        f"{start}: {len(holds)} of {len(diffs)} backbones with a 95 % interval that excludes "
        f"0, {len(after)} after Holm over the {len(diffs)} ({detail}); the study: yes."
    )


def pretrained_wins(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]]
) -> tuple[dict[str, PairedDifference | None], list[str]]:
    """Per backbone with both a pretrained and a random run in ``results`` (the study's runs):
    pretrained minus random test accuracy, paired (None when not compared); and the backbones
    where pretrained is ahead with a 95 % interval above 0."""
    by = {(r["backbone"], r["init"]) for r in results.values()}
    pairs = sorted(b for b, i in by if i == "pretrained" and (b, "random") in by)
    paired = {
        b: comparison_of(comparisons, paths.run_name(b, "pretrained"), paths.run_name(b, "random"))
        for b in pairs
    }
    wins = [b for b, c in paired.items() if c and c.significant and c.low > 0]
    return paired, wins


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
    paired, wins = pretrained_wins(results, comparisons)
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


def family_findings(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]]
) -> list[str]:
    """Which family of pretrained weights suits FER best: the most accurate pretrained run of
    each family, checked against the others as :func:`accuracy_leader` does (a paired 95 %
    interval above 0 that stays real after Holm)."""
    best: dict[str, str] = {}
    for run, r in results.items():
        if r["init"] == "pretrained":
            family = get_spec(r["backbone"]).family
            if family not in best or _accuracy(r) > _accuracy(results[best[family]]):
                best[family] = run
    if len(best) < 2:
        ran = "; ".join(f"{f}: {run}" for f, run in best.items()) or "none"
        return [f"Pretrained weights of one family at most ran here ({ran}): no comparison."]
    leader = accuracy_leader({run: results[run] for run in best.values()}, comparisons)
    family_of = {run: f for f, run in best.items()}
    ahead = [r for r in best.values() if r != leader.run and r not in leader.tied]
    parts = [f"{run} ({family_of[run]})" for run in ahead]
    verdict = f"ahead of {', '.join(parts)}" if parts else "ahead of no other family"
    if leader.tied:
        tied = ", ".join(f"{run} ({family_of[run]})" for run in leader.tied)
        verdict += f"; not distinguishable from {tied}"
    return [
        f"Which pretrained weights suit FER best, across families (the best pretrained run of "
        f"each): {leader.run} ({family_of[leader.run]}), {verdict} (paired 95 % interval "
        f"above 0, real after Holm); the study: face recognition (VGG-Face pretrained best)."
    ]


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
    out = pretrained_findings(results, comparisons) + family_findings(results, comparisons)
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


#: One run counts as faster than another only when its images/s are at least this many times
#: the other's: speeds vary from one measurement to the next (``docs/performance.md``).
FASTER_BY = 1.2


def pareto_front(points: dict[str, tuple[float, float]], faster_by: float = 1.0) -> list[str]:
    """Runs that no other run beats on (accuracy, speed), fastest first.

    ``o`` beats ``r`` when it is at least as accurate (more accurate, or as accurate and
    faster) and ``r`` is not faster than it by more than a factor ``faster_by``; with
    ``faster_by`` 1, the plain Pareto front of the two measures."""

    def beats(o: tuple[float, float], r: tuple[float, float]) -> bool:
        (a_o, s_o), (a_r, s_r) = o, r
        return s_o * faster_by >= s_r and (a_o > a_r or (a_o == a_r and s_o > s_r))

    front = [
        r for r, p in points.items() if not any(beats(q, p) for o, q in points.items() if o != r)
    ]
    return sorted(front, key=lambda r: -points[r][1])


@dataclass(frozen=True)
class Leader:
    """The run with the highest mean accuracy, and whether it is ahead of every other run at
    95 %, after Holm, on the test images they share (``tied``: the runs it is not ahead of)."""

    run: str
    accuracy: float
    runner_up: str | None
    versus_runner_up: PairedDifference | None
    tied: list[str]

    @property
    def ahead(self) -> bool:
        return self.runner_up is not None and not self.tied


def real_after_holm(comparisons: dict[str, dict[str, Any]], a: str, b: str) -> bool:
    """Whether the stored comparison of ``a`` and ``b`` (either way round) is real after
    Holm's adjustment over its family; False when the two were not compared."""
    stored = comparisons.get(f"{a} vs {b}") or comparisons.get(f"{b} vs {a}")
    return bool(stored and stored["significant_holm"])


def accuracy_leader(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]]
) -> Leader:
    """The most accurate of ``results`` by mean test accuracy, checked against every other
    one with the paired comparisons: ahead of one where the interval is above 0 and the
    difference stays real after Holm's adjustment (the claim ranks many runs at once); a
    pair not compared counts as not ahead."""
    ranked = sorted(results, key=lambda r: -_accuracy(results[r]))
    best = ranked[0]
    versus = {r: comparison_of(comparisons, best, r) for r in ranked[1:]}
    tied = [
        r
        for r, c in versus.items()
        if c is None or not (c.significant and c.low > 0 and real_after_holm(comparisons, best, r))
    ]
    runner_up = ranked[1] if len(ranked) > 1 else None
    return Leader(best, _accuracy(results[best]), runner_up, versus.get(runner_up), tied)


def _speed(r: dict[str, Any]) -> float:
    return r["speed"]["images_per_second_batch64"]


def fastest_beyond_noise(results: dict[str, dict[str, Any]]) -> str | None:
    """The fastest run when it is at least :data:`FASTER_BY` times as fast as every other;
    None when the fastest runs are within the noise of each other (or only one run)."""
    ranked = sorted(results, key=lambda r: -_speed(results[r]))
    if len(ranked) < 2 or _speed(results[ranked[0]]) < FASTER_BY * _speed(results[ranked[1]]):
        return None
    return ranked[0]


def accuracy_choice(
    results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]] | None = None
) -> str:
    """The most accurate run, if it is distinguishably so (every run is a candidate under its
    own name: a fine-tuned run beside, never in place of, the study run of the same backbone
    and init)."""
    leader = accuracy_leader(results, comparisons or {})
    best = leader.run
    if leader.runner_up is None:
        return f"When accuracy matters: **{best}** (the only run)."
    if leader.ahead:
        return (
            f"When accuracy matters: **{best}** (test accuracy {leader.accuracy:.3f}): ahead "
            f"at 95 % after Holm of every other run on the test images they share, of the "
            f"runner-up {leader.runner_up} by {leader.versus_runner_up.describe()}."
        )
    return (
        f"When accuracy matters: {best} has the highest mean test accuracy "
        f"({leader.accuracy:.3f}) but is not ahead at 95 % after Holm of "
        f"{', '.join(leader.tied)} on the test images they share: no single most accurate run."
    )


def speed_choice(results: dict[str, dict[str, Any]]) -> list[str]:
    """The Pareto front of accuracy and speed, and the fastest run if it is faster beyond
    the noise of the measurements (otherwise no line): what depends on timings."""
    points = {r: (_accuracy(v), _speed(v)) for r, v in results.items()}
    tuned = any(paths.is_finetune(r) for r in results)
    noise = f"{100 * (FASTER_BY - 1):.0f} %"
    lines = [
        "Pareto front (mean test accuracy on each run's own test set"
        + (", for a fine-tuned run its own split's," if tuned else "")
        + f" vs images/s, speeds within {noise} of each other counted as equal, fastest "
        "first): "
        + ", ".join(
            f"{r} ({points[r][0]:.3f}, {points[r][1]:.0f} img/s)"
            for r in pareto_front(points, FASTER_BY)
        ),
    ]
    fastest = fastest_beyond_noise(results)
    if fastest is not None:
        lines.append(
            f"When speed matters: **{fastest}** ({points[fastest][1]:.0f} img/s on this "
            f"machine, at least {noise} faster than any other run; test accuracy "
            f"{points[fastest][0]:.3f})."
        )
    return lines
