"""Stage ``aggregate``: every configuration across its seeds, and every pair compared.

Writes

- ``metrics/aggregate/<run>.json``: per measure (test accuracy, macro-F1, PrivateTest
  accuracy, initial/final/best validation accuracy, initial validation loss and each MCR/MOFR
  window) the seeds' mean, standard deviation and 95 % Student-t interval
  (:func:`ferstudy.stats.summarize`), so that ``dvc metrics show`` lists
  ``<measure>.mean`` beside ``<measure>.half_width``;
- ``metrics/comparisons.json``: test accuracy of every pair of configurations (the more
  accurate on their shared images first, pairs by difference), paired on the test images
  both were scored on (:func:`ferstudy.stats.paired_difference`), with the interval, the p
  value, whether the difference is real at 95 %, the same after Holm's adjustment over all
  pairs, and how many images and seeds it rests on;
- ``metrics/aggregate.md``: the same as two tables.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ferstudy import params as P
from ferstudy.errors import FerError
from ferstudy.evaluate import TEST_PROBABILITIES
from ferstudy.io import load_labels, read_json, write_json, write_text
from ferstudy.metrics import RATES
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
    for rate in RATES:
        out[rate] = {
            metric: {
                window: summarize([r["study"][rate][metric][window] for r in records]).as_dict()
                for window in windows
            }
            for metric, windows in records[0]["study"][rate].items()
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


def comparisons(runs: list[str], seeds: list[int], labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every pair of configurations as ``"<a> vs <b>"``, ``a`` the more accurate on the test
    images they share; with Holm's adjustment over the whole family of pairs."""
    correctness = {run: seed_correctness(run, seeds, labels) for run in runs}
    pairs = []
    for x, y in itertools.combinations(runs, 2):
        d = compare(correctness, x, y)
        pairs.append((x, y, d) if d.difference >= 0 else (y, x, d.flipped()))
    pairs.sort(key=lambda pair: -pair[2].difference)
    adjusted = holm([d.p_value for _, _, d in pairs])
    return {
        f"{a} vs {b}": {
            "a": a,
            "b": b,
            **d.as_dict(),
            "p_holm": p,
            "significant_holm": d.significant and p < 1 - CONFIDENCE,
        }
        for (a, b, d), p in zip(pairs, adjusted)
    }


def _cell(summary: dict[str, Any] | None) -> str:
    return "—" if summary is None else Summary.from_dict(summary).describe()


def markdown(aggregates: dict[str, dict[str, Any]], pairs: dict[str, dict[str, Any]]) -> str:
    """The aggregates and the comparisons as Markdown tables."""
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
    return "\n".join(lines) + "\n"


def run(params: dict[str, Any]) -> dict[str, Any]:
    """The ``aggregate`` stage."""
    runs, seeds = P.runs(params), P.seeds(params)
    aggregates = {}
    for name in runs:
        aggregates[name] = aggregate_run(seed_records(name, seeds), seeds)
        write_json(P.aggregate_file(name), aggregates[name])
    pairs = comparisons(runs, seeds, load_labels(P.DATASET_FILE))
    write_json(COMPARISONS_FILE, pairs)
    write_text(TABLES_FILE, markdown(aggregates, pairs))
    return {"aggregates": aggregates, "comparisons": pairs}
