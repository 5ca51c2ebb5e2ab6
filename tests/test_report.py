"""The report's findings, the study's tables beside ours, and the fidelity sections, on
hand-made results shaped as ``report.load_results`` returns them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferstudy import CLASSES
from ferstudy.analysis.fidelity import load_paper_tables
from ferstudy.analysis.findings import (
    FASTER_BY,
    SeedDifference,
    _study_claim,
    accuracy_choice,
    findings,
    pareto_front,
    pretrained_wins,
    seed_difference,
    speed_choice,
)
from ferstudy.analysis.ranking import aggregate_run
from ferstudy.analysis.rates import METRIC0, TABLES
from ferstudy.analysis.stats import PairedDifference, paired_difference
from ferstudy.reporting import protocol as PR
from ferstudy.reporting.tables import side_by_side

WINDOWS = ("1-5", "6-10", "11-15", "16-20")
PAPER_CSV = Path(__file__).resolve().parents[1] / "reference" / "paper_tables.csv"


def test_pareto_front():
    points = {"a": (0.60, 10.0), "b": (0.55, 100.0), "c": (0.50, 50.0), "d": (0.65, 5.0)}
    assert pareto_front(points) == ["b", "a", "d"]  # c is beaten by b on both


def test_pareto_front_counts_speeds_within_the_noise_as_equal():
    """ONet random at 3,875 img/s against ONet pretrained at 3,865 (the same network): not
    faster beyond the noise, so the more accurate one beats it."""
    points = {"random": (0.41, 3875.0), "pretrained": (0.53, 3865.0), "small": (0.30, 5000.0)}
    assert pareto_front(points) == ["small", "random", "pretrained"]
    assert pareto_front(points, FASTER_BY) == ["small", "pretrained"]
    assert FASTER_BY == 1.2


def test_pareto_front_at_its_boundaries():
    """Equal speed: the more accurate wins; equal accuracy: the faster beyond the noise wins;
    equal on both: neither beats the other."""
    assert pareto_front({"a": (0.9, 100.0), "b": (0.8, 100.0)}) == ["a"]
    assert pareto_front({"a": (0.8, 110.0), "b": (0.8, 120.0)}, FASTER_BY) == ["b"]
    assert pareto_front({"a": (0.8, 100.0), "b": (0.8, 100.0)}) == ["a", "b"]


def speed_results(points: dict[str, tuple[float, float]]) -> dict[str, dict]:
    return {
        run: {"eval": {"accuracy": acc}, "speed": {"images_per_second_batch64": speed}}
        for run, (acc, speed) in points.items()
    }


def test_speed_choice_in_full():
    lines = speed_choice(
        speed_results({"onet-pretrained": (0.6, 400.0), "onet-random": (0.5, 1000.0)})
    )
    assert lines == [
        "Pareto front (mean test accuracy on each run's own test set vs images/s, speeds within "
        "20 % of each other counted as equal, fastest first): onet-random (0.500, 1000 img/s), "
        "onet-pretrained (0.600, 400 img/s)",
        "When speed matters: **onet-random** (1000 img/s on this machine, at least 20 % faster "
        "than any other run; test accuracy 0.500).",
    ]
    tuned = speed_results({"onet-pretrained-finetune": (0.6, 400.0), "onet-random": (0.5, 450.0)})
    assert speed_choice(tuned) == [
        "Pareto front (mean test accuracy on each run's own test set, for a fine-tuned run its "
        "own split's, vs images/s, speeds within 20 % of each other counted as equal, fastest "
        "first): onet-pretrained-finetune (0.600, 400 img/s)"
    ]


def test_accuracy_choice_names_every_run_the_best_is_not_ahead_of():
    results = speed_results(
        {"a-pretrained": (0.7, 1.0), "b-random": (0.6, 1.0), "c-random": (0.5, 1.0)}
    )
    assert accuracy_choice(results) == (
        "When accuracy matters: a-pretrained has the highest mean test accuracy (0.700) but is "
        "not ahead at 95 % after Holm of b-random, c-random on the test images they share: no "
        "single most accurate run."
    )
    assert accuracy_choice({"a-pretrained": results["a-pretrained"]}) == (
        "When accuracy matters: **a-pretrained** (the only run)."
    )
    two = {run: results[run] for run in ("a-pretrained", "b-random")}
    assert accuracy_choice(two).startswith("When accuracy matters: a-pretrained has the highest")


def test_a_study_claim_counts_backbones_by_point_or_by_interval():
    """A difference of exactly 0 is no point for either side; two seeds already need an
    interval."""
    by_point = {
        "onet": SeedDifference(0.0, None, None, 1),
        "facenet": SeedDifference(0.1, None, None, 1),
    }
    assert _study_claim("S", by_point, True, 1) == (
        "S: 1 of 2 backbones by the point estimate, with one seed no claim (onet (face "
        "detection) +0.0000; facenet (face recognition) +0.1000); the study: yes."
    )
    assert _study_claim("S", by_point, False, 1).startswith("S: 0 of 2 backbones")
    by_interval = {
        "onet": SeedDifference(0.1, 0.05, 0.15, 2, p_value=0.03),
        "facenet": SeedDifference(0.2, -0.05, 0.45, 2, p_value=0.2),
        "mobilenetv2": SeedDifference(0.3, 0.1, 0.5, 2, p_value=0.01),
    }
    assert _study_claim("S", by_interval, True, 2) == (
        "S: 2 of 3 backbones with a 95 % interval that excludes 0, 1 after Holm over the 3 "
        "(onet (face detection) +0.1000 (95 % CI +0.0500 to +0.1500, 2 seeds, Holm p = 0.06); "
        "facenet (face recognition) +0.2000 (95 % CI -0.0500 to +0.4500, 2 seeds, Holm p = "
        "0.2); mobilenetv2 (ImageNet) +0.3000 (95 % CI +0.1000 to +0.5000, 2 seeds, Holm p = "
        "0.03)); the study: yes."
    )


def test_pretrained_wins_pairs_only_backbones_with_both_inits():
    results = {
        f"{b}-{i}": {"backbone": b, "init": i}
        for b, i in [
            ("openface", "pretrained"),
            ("openface", "random"),
            ("resnet50", "random"),
            ("mobilenet", "pretrained"),
        ]
    }
    assert pretrained_wins(results, {}) == ({"openface": None}, [])


def test_a_speed_pick_needs_a_difference_beyond_the_noise():
    results = {
        "onet-pretrained": result("onet", "pretrained", 0.533),
        "onet-random": result("onet", "random", 0.413),
    }
    results["onet-pretrained"]["speed"]["images_per_second_batch64"] = 3865.0
    results["onet-random"]["speed"]["images_per_second_batch64"] = 3875.0
    lines = speed_choice(results)
    assert len(lines) == 1  # within the noise: no speed pick, say nothing
    assert lines[0].endswith("fastest first): onet-pretrained (0.533, 3865 img/s)")
    results["onet-random"]["speed"]["images_per_second_batch64"] = 4638.0  # 1.2 x 3865
    assert speed_choice(results)[-1] == (
        "When speed matters: **onet-random** (4638 img/s on this machine, at least 20 % faster "
        "than any other run; test accuracy 0.413)."
    )


def rates(values) -> dict[str, float]:
    return dict(zip(WINDOWS, values))


def result(
    backbone: str,
    init: str,
    accuracy: float,
    mcr_acc=(0.0,) * 4,
    mofr_acc=(0.0,) * 4,
    mcr_loss=(0.0,) * 4,
    mofr_loss=(0.0,) * 4,
    worst: str = "disgust",
    initial=(0.3, 1.8),
) -> dict:
    """One run as ``load_results`` returns it (the parts the report reads)."""
    f1 = {c: 0.5 for c in CLASSES}
    f1[worst] = 0.1
    study = {
        "MCR": {"accuracy": rates(mcr_acc), "loss": rates(mcr_loss)},
        "MOFR": {"accuracy": rates(mofr_acc), "loss": rates(mofr_loss)},
        "initial": {"val_accuracy": initial[0], "val_loss": initial[1]},
        "final_val_accuracy": accuracy,
        "best_val_accuracy": accuracy,
    }
    evaluation = {
        "accuracy": accuracy,
        "macro_f1": accuracy / 2,
        "per_class": {c: {"f1": f1[c]} for c in CLASSES},
    }
    return with_aggregate(
        {
            "backbone": backbone,
            "init": init,
            "study": study,
            "eval": evaluation,
            "seed_study": [study],
            "seed_eval": [evaluation],
            "speed": {"parameters": 1_000_000 if backbone == "openface" else 4_000_000},
            "curves": {"train/accuracy": np.array([0.25, 0.3, 0.4])},
        }
    )


def with_aggregate(r: dict) -> dict:
    """``r`` with its ``aggregate`` (as the aggregate stage writes it) from its seeds."""
    records = [{"study": s, "eval": e} for s, e in zip(r["seed_study"], r["seed_eval"])]
    r["aggregate"] = aggregate_run(records, list(range(len(records))))
    return r


def seeds_of(r: dict, offsets: list[float]) -> dict:
    """``r`` repeated over seeds whose rates and initial values are shifted by ``offsets``."""

    def shifted(study: dict, k: float) -> dict:
        return {
            **study,
            **{
                rate: {m: {w: v + k for w, v in ws.items()} for m, ws in study[rate].items()}
                for rate in ("MCR", "MOFR")
            },
            "initial": {key: v + k for key, v in study["initial"].items()},
        }

    out = {**r, "seed_study": [shifted(r["study"], k) for k in offsets]}
    out["seed_eval"] = [r["eval"]] * len(offsets)
    return with_aggregate(out)


def comparison(a: str, b: str, correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """One entry of ``metrics/comparisons.json`` (Holm over a family of one: unchanged)."""
    d = paired_difference(correct_a, correct_b)
    return {
        f"{a} vs {b}": {
            "a": a,
            "b": b,
            **d.as_dict(),
            "p_holm": d.p_value,
            "significant_holm": d.significant,
        }
    }


CLEAR = np.random.default_rng(0).random(400) < 0.5
AHEAD = CLEAR | (np.random.default_rng(1).random(400) < 0.3)  # about +15 points, paired


# Pretrained beats random on test accuracy, on accuracy MCR in epochs 1-10 (but not over all
# 20 epochs: the first two windows are what counts) and on mean accuracy MOFR (but not in
# the first two windows: all four count). The loss rates point the other way, so a finding
# read from the loss tables instead of the accuracy tables comes out wrong.
STRONG = dict(
    accuracy=0.60,
    initial=(0.35, 1.7),
    mcr_acc=(0.08, 0.02, 0.01, 0.00),  # early mean 0.05, overall 0.0275
    mofr_acc=(0.00, 0.00, 0.05, 0.05),  # mean 0.025, early 0.0
    mcr_loss=(0.0,) * 4,
    mofr_loss=(0.0,) * 4,
)
WEAK = dict(
    accuracy=0.40,
    initial=(0.25, 1.9),
    mcr_acc=(0.01, 0.01, 0.05, 0.05),  # early mean 0.01, overall 0.03
    mofr_acc=(0.01, 0.01, 0.00, 0.00),  # mean 0.005, early 0.01
    mcr_loss=(0.5,) * 4,
    mofr_loss=(0.5,) * 4,
)


def sentence(lines: list[str], start: str) -> str:
    (line,) = [x for x in lines if x.startswith(start)]
    return line


BEATS = "Pretrained beats random initialisation (test accuracy, paired 95 % interval above 0)"
FASTER = "Pretrained converges faster in epochs 1-10 (accuracy MCR)"
OVERFITS = "Pretrained overfits more (mean accuracy MOFR)"
INITIAL_ACC = "Pretrained has the higher initial (epoch-1) validation accuracy"
INITIAL_LOSS = "Pretrained has the lower initial validation loss"


PAIR = comparison("openface-pretrained", "openface-random", AHEAD, CLEAR)


def point(start: str, k: int, detail: str) -> str:
    return (
        f"{start}: {k} of 1 backbones by the point estimate, with one seed no claim "
        f"(openface (face recognition) {detail}); the study: yes."
    )


def test_findings_pretrained_ahead():
    results = {
        "openface-pretrained": result("openface", "pretrained", **STRONG),
        "openface-random": result("openface", "random", **WEAK),
    }
    out = findings(results, PAIR)
    assert sentence(out, BEATS) == f"{BEATS} for 1 of 1 backbones (openface); the study: all."
    assert sentence(out, FASTER) == point(FASTER, 1, "+0.0400")
    assert sentence(out, OVERFITS) == point(OVERFITS, 1, "+0.0200")
    assert sentence(out, INITIAL_ACC) == point(INITIAL_ACC, 1, "+0.1000")
    assert sentence(out, INITIAL_LOSS) == point(INITIAL_LOSS, 1, "-0.2000")
    assert findings(results)[0] == f"{BEATS} for 0 of 1 backbones (none); the study: all."


def test_claims_with_seeds_need_an_interval():
    """3 seeds that agree: the claim holds with its interval; 3 that scatter: it does not."""
    pre = result("openface", "pretrained", **STRONG)
    ran = result("openface", "random", **WEAK)
    steady = {
        "openface-pretrained": seeds_of(pre, [-0.001, 0.0, 0.001]),
        "openface-random": seeds_of(ran, [-0.001, 0.0, 0.001]),
    }
    line = sentence(findings(steady, PAIR), INITIAL_ACC)
    assert line.startswith(f"{INITIAL_ACC}: 1 of 1 backbones with a 95 % interval that excludes 0")
    assert "openface (face recognition) +0.1000 (95 % CI +0.09" in line
    assert "3 seeds, Holm p = " in line and ", 1 after Holm over the 1 (" in line
    scattered = {
        "openface-pretrained": seeds_of(pre, [-0.5, 0.0, 0.5]),
        "openface-random": seeds_of(ran, [-0.5, 0.0, 0.5]),
    }
    for start in (INITIAL_ACC, FASTER, OVERFITS):
        assert sentence(findings(scattered, PAIR), start).startswith(
            f"{start}: 0 of 1 backbones with a 95 % interval that excludes 0"
        )


def test_a_win_needs_an_interval_that_excludes_zero():
    results = {
        "openface-pretrained": result("openface", "pretrained", **STRONG),
        "openface-random": result("openface", "random", **WEAK),
    }
    rng = np.random.default_rng(0)
    same = rng.random(100) < 0.5
    tied = same.copy()
    tied[np.flatnonzero(same)[:3]] = False  # 3 images apart: within the noise
    names = ("openface-pretrained", "openface-random")
    out = findings(results, comparison(*names, same, tied))
    assert sentence(out, BEATS) == f"{BEATS} for 0 of 1 backbones (none); the study: all."
    assert "not distinguishable at 95 % with one seed" in sentence(
        out, "openface: pretrained minus random"
    )
    clear = same.copy()
    clear[np.flatnonzero(~same)[:40]] = True
    out = findings(results, comparison(*names, clear, same))
    assert sentence(out, BEATS) == f"{BEATS} for 1 of 1 backbones (openface); the study: all."
    reverse = comparison(*names[::-1], same, clear)  # stored the other way round: flipped
    assert findings(results, reverse)[0] == out[0]
    behind = comparison(*names, same, clear)  # random clearly ahead: no win
    assert findings(results, behind)[0] == f"{BEATS} for 0 of 1 backbones (none); the study: all."


def test_findings_name_every_backbone_where_pretrained_wins():
    results = {
        f"{b}-{i}": result(b, i, **(STRONG if i == "pretrained" else WEAK))
        for b in ("openface", "mobilenet")
        for i in ("pretrained", "random")
    }
    pairs = {
        **PAIR,
        **comparison("mobilenet-pretrained", "mobilenet-random", AHEAD, CLEAR),
    }
    assert sentence(findings(results, pairs), BEATS) == (
        f"{BEATS} for 2 of 2 backbones (mobilenet, openface); the study: all."
    )


def test_findings_pretrained_behind():
    results = {
        "openface-pretrained": result("openface", "pretrained", **WEAK),
        "openface-random": result("openface", "random", **STRONG),
    }
    out = findings(results, comparison("openface-random", "openface-pretrained", AHEAD, CLEAR))
    assert sentence(out, BEATS) == f"{BEATS} for 0 of 1 backbones (none); the study: all."
    assert sentence(out, FASTER) == point(FASTER, 0, "-0.0400")
    assert sentence(out, OVERFITS) == point(OVERFITS, 0, "-0.0200")
    assert sentence(out, INITIAL_ACC) == point(INITIAL_ACC, 0, "-0.1000")
    assert sentence(out, INITIAL_LOSS) == point(INITIAL_LOSS, 0, "+0.2000")


def test_findings_compare_within_each_backbone():
    """Two pairs that go opposite ways, plus a run without a partner (not counted)."""
    results = {
        "openface-pretrained": result("openface", "pretrained", **STRONG),
        "openface-random": result("openface", "random", **WEAK),
        "mobilenet-pretrained": result("mobilenet", "pretrained", **WEAK),
        "mobilenet-random": result("mobilenet", "random", **STRONG),
        "resnet50-random": result("resnet50", "random", 0.1, worst="fear"),
    }
    pairs = {
        **PAIR,
        **comparison("mobilenet-random", "mobilenet-pretrained", AHEAD, CLEAR),
        **comparison("openface-pretrained", "mobilenet-pretrained", AHEAD, CLEAR),
        **comparison("openface-random", "mobilenet-random", CLEAR, CLEAR),
    }
    out = findings(results, pairs)
    assert sentence(out, BEATS) == f"{BEATS} for 1 of 2 backbones (openface); the study: all."
    assert sentence(out, FASTER).startswith(f"{FASTER}: 1 of 2 backbones by the point estimate")
    assert sentence(out, OVERFITS).startswith(f"{OVERFITS}: 1 of 2 backbones by the point")
    assert sentence(out, "Disgust has the lowest test F1") == (
        "Disgust has the lowest test F1 (seed mean, point estimate) in 4 of 5 runs; "
        "the study: disgust worst."
    )
    assert sentence(out, "MobileNet (pretrained)").startswith(
        "MobileNet (pretrained) is below OpenFace in test accuracy (MobileNet minus OpenFace -"
    )
    assert sentence(out, "MobileNet (random)").startswith(
        "MobileNet (random) is not distinguishable from OpenFace in test accuracy (MobileNet "
        "minus OpenFace +0.0 points"
    )


def test_choice_names_a_best_run_only_when_it_beats_every_other():
    results = {
        "onet-pretrained": result("onet", "pretrained", 0.6),
        "onet-random": result("onet", "random", 0.5),
        "openface-random": result("openface", "random", 0.4),
    }
    for r in results.values():
        r["speed"]["images_per_second_batch64"] = 100.0
    pairs = {
        **comparison("onet-pretrained", "onet-random", AHEAD, CLEAR),
        **comparison("onet-pretrained", "openface-random", AHEAD, CLEAR),
    }
    line = accuracy_choice(results, pairs)
    assert line.startswith("When accuracy matters: **onet-pretrained** (test accuracy 0.600)")
    # the runner-up is better on the images they share: no winner, whatever the means say
    pairs.update(comparison("openface-random", "onet-pretrained", AHEAD, CLEAR))
    del pairs["onet-pretrained vs openface-random"]
    line = accuracy_choice(results, pairs)
    assert "no single most accurate run" in line and "openface-random" in line
    del pairs["openface-random vs onet-pretrained"]  # not compared: no claim either
    assert "no single most accurate run" in accuracy_choice(results, pairs)
    pairs.update(comparison("onet-pretrained", "openface-random", AHEAD, CLEAR))
    assert accuracy_choice(results, pairs).startswith("When accuracy matters: **onet-pretrained**")
    pairs["onet-pretrained vs openface-random"]["significant_holm"] = False  # one of many
    line = accuracy_choice(results, pairs)
    assert "not ahead at 95 % after Holm of openface-random" in line


def test_a_finetuned_run_never_stands_in_for_the_study_run_of_its_backbone_and_init():
    """openface-pretrained-finetune shares backbone and init with openface-pretrained: the
    study's claims read the study run alone; the fine-tuned run has a sentence of its own and
    is a candidate of its own in the backbone choice."""
    study = {
        "openface-pretrained": result("openface", "pretrained", **STRONG),
        "openface-random": result("openface", "random", **WEAK),
    }
    tuned = result("openface", "pretrained", 0.9, initial=(0.05, 3.0), mcr_acc=(-0.5,) * 4)
    both = {**study, "openface-pretrained-finetune": tuned}  # last: it would win a lookup
    pairs = {
        **PAIR,
        **comparison("openface-pretrained-finetune", "openface-pretrained", AHEAD, CLEAR),
    }
    out = findings(both, pairs)
    alone = findings(study, pairs)
    assert out[: len(alone)] == alone
    assert sentence(out, INITIAL_ACC) == point(INITIAL_ACC, 1, "+0.1000")
    (line,) = out[len(alone) :]
    gain = PairedDifference.from_dict(
        pairs["openface-pretrained-finetune vs openface-pretrained"]
    ).verdict()
    assert line == (
        "Fine-tuning end to end (openface-pretrained-finetune) minus the study's frozen recipe "
        f"(openface-pretrained): test accuracy {gain}; beyond the study, which fine-tuned "
        "nothing."
    )
    assert findings(both, PAIR)[-1] == (
        "Fine-tuning end to end (openface-pretrained-finetune) minus the study's frozen recipe "
        "(openface-pretrained): not compared (no frozen run of it here, or too few shared test "
        "images); beyond the study, which fine-tuned nothing."
    )
    for r in both.values():
        r["speed"]["images_per_second_batch64"] = 100.0
    assert (
        "own test set, for a fine-tuned run its own split's, vs images/s" in (speed_choice(both)[0])
    )
    assert accuracy_choice(both, pairs).startswith(
        "When accuracy matters: openface-pretrained-finetune has the"
    )


def test_findings_without_a_pair_say_so():
    out = findings({"openface-random": result("openface", "random", **WEAK)})
    assert sentence(out, "Pretrained vs random cannot be compared") == (
        "Pretrained vs random cannot be compared: no backbone has both runs here (pretrained "
        "weights need a download; see the README)."
    )
    assert not any(x.startswith((BEATS, FASTER, OVERFITS)) for x in out)


def test_every_finding_of_a_random_only_matrix_in_full():
    results = {
        "openface-random": result("openface", "random", 0.5, mcr_acc=(0.04,) * 4),
        "resnet50-random": result("resnet50", "random", 0.4, mcr_acc=(0.03,) * 4, worst="fear"),
        "mobilenet-random": result("mobilenet", "random", 0.3, mcr_acc=(0.01,) * 4),
        "vggface-random": result("vggface", "random", 0.2),
    }
    results["vggface-random"]["health"] = {"degenerate": True}
    pairs = {
        **comparison("openface-random", "resnet50-random", AHEAD, CLEAR),
        **comparison("openface-random", "mobilenet-random", AHEAD, CLEAR),
    }
    versus_resnet = PairedDifference.from_dict(pairs["openface-random vs resnet50-random"])
    mobilenet_minus = PairedDifference.from_dict(
        pairs["openface-random vs mobilenet-random"]
    ).flipped()
    assert findings(results, pairs) == [
        "Pretrained vs random cannot be compared: no backbone has both runs here (pretrained "
        "weights need a download; see the README).",
        "Pretrained weights of one family at most ran here (none): no comparison.",
        "VGG-Face from random initialisation does not learn (all rates ~0): agrees with the "
        "study (largest |rate| 0.0000); its frozen features are flagged degenerate, so what it "
        "learns is the class prior.",
        f"OpenFace vs ResNet-50 (random): OpenFace minus ResNet-50 test accuracy "
        f"{versus_resnet.verdict()}, with 4.0x fewer parameters; the study: about as accurate.",
        f"MobileNet (random) is below OpenFace in test accuracy (MobileNet minus OpenFace "
        f"{mobilenet_minus.describe()}); the study: below.",
        "Highest mean accuracy MCR among random runs: openface by the point estimate, not "
        "distinguishable from resnet50 (+0.0100 (one seed: no interval)); the study: OpenFace.",
        "Disgust has the lowest test F1 (seed mean, point estimate) in 3 of 4 runs; the study: "
        "disgust worst.",
    ]
    del pairs["openface-random vs mobilenet-random"]
    results["vggface-random"]["health"] = {"degenerate": False}
    for name in ("openface-random", "resnet50-random"):
        results[name] = seeds_of(results[name], [-0.001, 0.0, 0.001])
    out = findings(results, pairs)
    assert sentence(out, "VGG-Face").endswith("(largest |rate| 0.0000).")
    assert sentence(out, "MobileNet (random)") == (
        "MobileNet (random) is not compared with OpenFace in test accuracy; the study: below."
    )
    mcr = seed_difference([0.039, 0.04, 0.041], [0.029, 0.03, 0.031])
    assert sentence(out, "Highest mean accuracy MCR") == (
        f"Highest mean accuracy MCR among random runs: openface (ahead of resnet50 by "
        f"{mcr.describe()}); the study: OpenFace."
    )
    ahead = comparison("mobilenet-random", "openface-random", AHEAD, CLEAR)
    mobilenet_ahead = PairedDifference.from_dict(ahead["mobilenet-random vs openface-random"])
    assert sentence(findings(results, ahead), "MobileNet (random)") == (
        f"MobileNet (random) is above OpenFace in test accuracy (MobileNet minus OpenFace "
        f"{mobilenet_ahead.describe()}); the study: below."
    )
    del results["mobilenet-random"]
    results["openface-random"]["speed"]["parameters"] = 0  # not counted: no division by 0
    out = findings(results, {})
    assert not [line for line in out if line.startswith("MobileNet")]
    assert sentence(out, "OpenFace vs ResNet-50") == (
        "OpenFace vs ResNet-50 (random): OpenFace minus ResNet-50 test accuracy not compared, "
        "with 4000000.0x fewer parameters; the study: about as accurate."
    )
    del results["vggface-random"]  # two runs of one init are still compared
    results["openface-random"]["eval"]["per_class"]["fear"]["f1"] = 0.1  # disgust not below
    out = findings(results, {})
    assert sentence(out, "Highest mean accuracy MCR") == (
        f"Highest mean accuracy MCR among random runs: openface (ahead of resnet50 by "
        f"{mcr.describe()}); the study: OpenFace."
    )
    assert sentence(out, "Disgust") == (
        "Disgust has the lowest test F1 (seed mean, point estimate) in 0 of 2 runs; the study: "
        "disgust worst."
    )


@pytest.mark.parametrize(
    "mcr, verdict",
    [
        ((0.0, 0.0005, -0.0009, 0.0), "does not learn"),
        ((0.0, 0.001, 0.0, 0.0), "does learn"),  # the bound itself learns
        ((0.0, 0.002, 0.0, 0.0), "does learn"),
    ],
)
def test_findings_vggface_random_verdict(mcr, verdict):
    out = findings({"vggface-random": result("vggface", "random", 0.3, mcr_acc=mcr)})
    line = sentence(out, "VGG-Face from random initialisation")
    assert line.startswith(f"VGG-Face from random initialisation {verdict}")
    assert f"(largest |rate| {max(abs(v) for v in mcr):.4f})" in line


# --------------------------------------------------------------------------- Tables 2-5


def our_value(table: int, init: str, window: str) -> float:
    """A distinct value per cell: 0.1 x table + 0.01 x window + 0.001 if pretrained."""
    return 0.1 * table + 0.01 * (WINDOWS.index(window) + 1) + (0.001 if init == "pretrained" else 0)


def table_results() -> dict:
    by_table = {t: k for k, t in TABLES.items()}  # table -> (metric, rate)
    results = {}
    for init in ("pretrained", "random"):
        r = result("mobilenet", init, 0.5)
        for table, (metric, rate) in by_table.items():
            r["study"][rate][metric] = {w: our_value(table, init, w) for w in WINDOWS}
        results[f"mobilenet-{init}"] = with_aggregate(r)
    return results


def parse_tables(markdown: str) -> dict[int, tuple[list[str], dict[tuple[str, str], list[str]]]]:
    """{table: (window header, {(model, init): cells})} from side_by_side's Markdown."""
    tables, current = {}, None
    for line in markdown.splitlines():
        if line.startswith("**Table "):
            current = int(line.split()[1].rstrip(":"))
            tables[current] = ([], {})
        elif line.startswith("| model | init |"):
            tables[current][0].extend(c.strip() for c in line.strip("|").split("|")[2:])
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[current][1][(cells[0], cells[1])] = cells[2:]
    return tables


def test_side_by_side_cells():
    paper = load_paper_tables(PAPER_CSV)
    assert paper[(2, "mobilenet", "pretrained", "1-5")] == pytest.approx(0.039937)
    tables = parse_tables(side_by_side(table_results(), paper))
    assert sorted(tables) == [2, 3, 4, 5]
    header, rows = tables[2]
    assert header == list(WINDOWS)  # in epoch order, not string order
    # the study's 0.039937 beside this project's 0.211 (Table 2, window 1-5, pretrained)
    assert rows[("mobilenet", "pretrained")][0] == "0.0399 / 0.2110"
    assert rows[("mobilenet", "random")][3] == "0.0258 / 0.2400"  # paper 0.025798
    # every cell: the study's value for that table, model, init and window / ours
    backbones = sorted({k[1] for k in paper})
    assert "openface" in backbones and "vggface" in backbones
    for table, (header, rows) in tables.items():
        assert header == list(WINDOWS)
        assert sorted(rows) == [(b, i) for b in backbones for i in ("pretrained", "random")]
        for (backbone, init), cells in rows.items():
            for window, cell in zip(WINDOWS, cells):
                p = paper.get((table, backbone, init, window))
                theirs = "" if p is None else f"{p:.4f}"
                ours = f"{our_value(table, init, window):.4f}" if backbone == "mobilenet" else "—"
                assert cell == f"{theirs} / {ours}".strip(), (table, backbone, init, window)


def test_side_by_side_run_missing_from_the_paper():
    paper = {(2, "openface", "random", "1-5"): 0.0115}
    results = {"onet-random": result("onet", "random", 0.5, mcr_acc=(0.25, 0.0, 0.0, 0.0))}
    tables = parse_tables(side_by_side(results, paper))
    _, rows = tables[2]
    assert rows[("onet", "random")][0] == "/ 0.2500"  # no study value: empty before the /
    assert rows[("onet", "pretrained")] == ["/ —"] * 4
    assert rows[("openface", "random")] == ["0.0115 / —"] + ["/ —"] * 3


# --------------------------------------------------------------------------- fidelity


def agreement(signs: int, n: int, rmse: float | None = 0.01) -> dict:
    return {"rates": n, "signs_agree": signs, "rmse": None if not n else rmse}


def test_fidelity_table():
    fidelity = {
        "runs": {
            "openface-random": {
                "table2": agreement(3, 4, 0.0123),
                "table3": agreement(1, 4, 0.2),
                "table4": agreement(4, 4, 0.00004),
                "table5": agreement(0, 0),
                "total": agreement(8, 12, 0.1),
            },
            "mobilenet-random": {
                **{f"table{t}": agreement(4, 4) for t in (2, 3, 4, 5)},
                "total": agreement(16, 16, 0.5),
            },
        }
    }
    lines = PR.fidelity_table(fidelity).splitlines()
    assert lines[0] == "| run | Table 2 | Table 3 | Table 4 | Table 5 | all |"
    assert lines[2] == "| mobilenet-random | " + "4/4 (0.0100) | " * 4 + "16/16 (0.5000) |"
    assert lines[3] == (
        "| openface-random | 3/4 (0.0123) | 1/4 (0.2000) | 4/4 (0.0000) | — | 8/12 (0.1000) |"
    )
    assert len(lines) == 4


def test_variants_table():
    assert METRIC0 == ("untrained", "epoch1")
    current = {
        "runs": {"b-random": {}, "a-random": {}},
        "by_metric0": {
            "untrained": {"random": agreement(10, 64, 0.05)},
            "epoch1": {"random": agreement(20, 64, 0.04)},
        },
    }
    variants = [
        {
            "label": "inference-bn",
            "runs": ["x-random"],
            "fidelity": {
                "untrained": {"random": agreement(0, 0)},
                "epoch1": {"random": agreement(33, 48, 0.123456)},
            },
        }
    ]
    lines = PR.variants_table(current, variants).splitlines()
    assert lines[0] == (
        "| variant | runs | random-init signs (RMSE), Metric[0] untrained | "
        "random-init signs (RMSE), Metric[0] epoch1 |"
    )
    assert lines[2] == (
        "| this run (committed params) | a-random, b-random | 10/64 (0.0500) | 20/64 (0.0400) |"
    )
    assert lines[3] == "| inference-bn | x-random | — | 33/48 (0.1235) |"
    assert len(lines) == 4


def test_disagreements():
    def health(degenerate: bool) -> dict:
        return {"degenerate": degenerate, "reason": "features are constant" if degenerate else None}

    results = {
        "openface-random": {**result("openface", "random", 0.3), "health": health(False)},
        "onet-random": {**result("onet", "random", 0.3), "health": health(True)},
        "mobilenet-random": {**result("mobilenet", "random", 0.3), "health": health(False)},
    }
    results["onet-random"]["curves"] = {"train/accuracy": np.array([0.5, 0.4, 0.45])}
    paper = {(2, "openface", "random", w): 0.01 for w in WINDOWS}  # 20 epochs x 0.01 = +20 points
    paper[(3, "openface", "random", "1-5")] = 0.5  # other tables do not count
    fidelity = {
        "runs": {
            "openface-random": {
                "table2": agreement(3, 4),
                "table3": agreement(1, 4),
                "table4": agreement(4, 4),
                "table5": agreement(1, 4),  # tied with Table 3: the first one is named
                "total": agreement(9, 16),
            },
            "onet-random": {
                "table2": agreement(2, 4),
                "table3": agreement(0, 0),  # no rates: never the worst
                "table4": agreement(1, 4),
                "table5": agreement(3, 4),
                "total": agreement(6, 12),
            },
            "mobilenet-random": {  # agrees everywhere: no sentence
                **{f"table{t}": agreement(4, 4) for t in (2, 3, 4, 5)},
                "total": agreement(16, 16),
            },
        }
    }
    assert PR.disagreements(results, fidelity, paper) == [
        "onet-random: 6/12 signs agree (most differ in Table 4); train accuracy rose -5.0 "
        "points here; its features are degenerate (features are constant).",
        "openface-random: 9/16 signs agree (most differ in Table 3); train accuracy rose "
        "+15.0 points here against +20.0 in the study; its features are healthy.",
    ]


def test_page_highlights_flags_in_red_and_real_differences_in_green():
    from ferstudy.reporting.html import markdown_to_html

    page = markdown_to_html(
        "| a | b |\n|---|---|\n| **yes**: degenerate | **real** |\n| no | not distinguishable |\n"
    )
    assert '<td class="l flag"><b>yes</b>: degenerate</td>' in page
    assert '<td class="l real"><b>real</b></td>' in page
    assert '<td class="l">not distinguishable</td>' in page and '<td class="l">no</td>' in page


def test_page_aligns_columns_as_the_markdown_says():
    from ferstudy.reporting.html import markdown_to_html

    page = markdown_to_html("| run | acc | note |\n|---|---:|:---:|\n| a | 0.5 | x |\n")
    assert '<th class="l">run</th><th class="r">acc</th><th class="c">note</th>' in page
    assert '<td class="l">a</td><td class="r">0.5</td><td class="c">x</td>' in page


def test_page_renders_captions_links_and_heading_anchors():
    from ferstudy.reporting.html import markdown_to_html

    page = markdown_to_html(
        "## Ranking on FER2013's PrivateTest\n\n"
        "*Figure 1. Test accuracy; method: [statistics](../docs/statistics.md#seeds).*\n"
    )
    assert '<h2 id="ranking-on-fer2013s-privatetest">' in page
    assert (
        '<p><em>Figure 1. Test accuracy; method: <a href="../docs/statistics.md#seeds">'
        "statistics</a>.</em></p>"
    ) in page


def test_comparisons_table_marks_only_intervals_that_exclude_zero():
    from ferstudy.reporting.tables import comparisons_table

    pairs = {
        **comparison("a-random", "b-random", AHEAD, CLEAR),
        **comparison("b-random", "c-random", CLEAR, CLEAR),
    }
    lines = comparisons_table(pairs).splitlines()
    assert lines[2].startswith("| a-random vs b-random | +") and lines[2].endswith("| **real** |")
    assert lines[3].endswith("| not distinguishable |") and "+0.0 points" in lines[3]


FAMILY = "Which pretrained weights suit FER best, across families"


def test_family_finding_names_the_best_family_only_beyond_noise():
    results = {
        "onet-pretrained": result("onet", "pretrained", accuracy=0.60),
        "mobilenetv2-pretrained": result("mobilenetv2", "pretrained", accuracy=0.45),
        "facenet-pretrained": result("facenet", "pretrained", accuracy=0.50),
        "dlib-pretrained": result("dlib", "pretrained", accuracy=0.30),  # not its family's best
        "facenet-random": result("facenet", "random", accuracy=0.70),  # not pretrained
    }
    clear = {
        **comparison("onet-pretrained", "facenet-pretrained", AHEAD, CLEAR),
        **comparison("onet-pretrained", "mobilenetv2-pretrained", CLEAR, CLEAR),
    }
    line = sentence(findings(results, clear), FAMILY)
    assert line == (
        f"{FAMILY} (the best pretrained run of each): onet-pretrained (face detection), ahead "
        "of facenet-pretrained (face recognition); not distinguishable from "
        "mobilenetv2-pretrained (ImageNet) (paired 95 % interval above 0, real after Holm); "
        "the study: face recognition (VGG-Face pretrained best)."
    )
    tail = (
        "(paired 95 % interval above 0, real after Holm); the study: face recognition "
        "(VGG-Face pretrained best)."
    )
    both = {**clear, **comparison("onet-pretrained", "mobilenetv2-pretrained", AHEAD, CLEAR)}
    assert sentence(findings(results, both), FAMILY) == (
        f"{FAMILY} (the best pretrained run of each): onet-pretrained (face detection), ahead "
        f"of mobilenetv2-pretrained (ImageNet), facenet-pretrained (face recognition) {tail}"
    )
    assert sentence(findings(results, {}), FAMILY) == (
        f"{FAMILY} (the best pretrained run of each): onet-pretrained (face detection), ahead "
        "of no other family; not distinguishable from facenet-pretrained (face recognition), "
        f"mobilenetv2-pretrained (ImageNet) {tail}"  # the tied most accurate first
    )
    two = {run: results[run] for run in ("onet-pretrained", "facenet-pretrained")}
    assert sentence(findings(two, clear), FAMILY).startswith(
        f"{FAMILY} (the best pretrained run of each): onet-pretrained (face detection), ahead "
        "of facenet-pretrained (face recognition) (paired"
    )
    tie = {**two, "openface-pretrained": result("openface", "pretrained", accuracy=0.50)}
    assert "ahead of facenet-pretrained (face recognition)" in sentence(
        findings(tie, clear), FAMILY
    )  # a tie within a family keeps the first run
    one = {"facenet-pretrained": results["facenet-pretrained"]}
    assert sentence(findings(one, {}), "Pretrained weights of one family") == (
        "Pretrained weights of one family at most ran here (face recognition: "
        "facenet-pretrained): no comparison."
    )


def test_the_summary_names_the_shipped_model_with_its_interval_and_fers():
    """The report's summary shows the model that ships (stage export), not only the best
    run's seed mean: the exported record's PrivateTest accuracy, interval and paired
    difference to fer's."""
    from ferstudy.core.files import read_json
    from ferstudy.reporting.markdown import shipped_line

    shipped = read_json(Path(__file__).resolve().parents[1] / "metrics" / "export.json")
    line = shipped_line(shipped)
    p = shipped["privatetest"]
    for number in (p["accuracy"], p["low"], p["high"]):
        assert f"{number:.4f}" in line
    assert shipped["shipped"] in line and shipped["run"] in line
    verdict = PairedDifference.from_dict(shipped["minus_fer"]).verdict()
    assert f"minus `fer`'s, paired on the same images: {verdict}" in line
    assert shipped_line(None) is None
