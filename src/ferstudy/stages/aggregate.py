"""Stage ``aggregate``: every configuration across its seeds, every pair compared, and a
ranking on FER2013's PrivateTest.

The configurations are the study's runs and the fine-tuned ones (``all_runs``). Writes

- ``metrics/aggregate/<run>.json``: per measure (test accuracy, macro-F1, PrivateTest
  accuracy, initial/final/best validation accuracy, initial validation loss and each MCR/MOFR
  window) the seeds' mean, standard deviation and 95 % Student-t interval
  (:func:`ferstudy.analysis.stats.summarize`), so that ``dvc metrics show`` lists
  ``<measure>.mean`` beside ``<measure>.half_width``;
- ``metrics/comparisons.json``: test accuracy of every pair of configurations (the more
  accurate on their shared images first, pairs by difference), paired on the test images
  both were scored on (:func:`ferstudy.analysis.stats.paired_difference`), with the interval, the p
  value, whether the difference is real at 95 %, the same after Holm's adjustment over all
  pairs, and how many images and seeds it rests on. A fine-tuned run is scored on its own
  split's test set (FER2013's PrivateTest under ``finetune.split: usage``) and is compared
  with a study run on the PrivateTest rows of the study's test split; a pair that shares
  fewer than two test images is not compared (listed in ``aggregate.md``);
- ``metrics/ranking.json``: every run, the ``fer`` package's model (``ferstudy.stages.outside``) and
  published figures (:data:`PUBLISHED`, not measured here) by accuracy on FER2013's
  PrivateTest (:func:`ranking`), each run with its difference from fer's model paired on the
  PrivateTest images both scored;
- ``metrics/aggregate.md``: the same as tables;
- ``metrics/headline/<run>.json`` and ``metrics/summary.json``: the declared metrics
  (:mod:`ferstudy.analysis.headline`).

The windows of a study rate summarised across seeds are those every seed has
(:func:`ferstudy.analysis.rates.common_windows`): a fine-tuned run stops early, so its seeds may
differ in length.
"""

from __future__ import annotations

import itertools
from typing import Any

from ferstudy.analysis.headline import headline, summary
from ferstudy.analysis.ranking import (
    aggregate_run,
    comparisons,
    fer_correctness,
    ranking,
    seed_records,
)
from ferstudy.core import paths
from ferstudy.core.files import (
    atomic_path,
    load_labels,
    load_usage,
    read_json,
    write_json,
    write_text,
)
from ferstudy.core.params import Params
from ferstudy.core.paths import (
    COMPARISONS_FILE,
    RANKING_FILE,
    TABLES_FILE,
)
from ferstudy.reporting.tables import markdown


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``aggregate`` stage."""
    runs, seeds = params.all_runs, params.seeds
    aggregates, headlines = {}, {}
    with atomic_path(paths.HEADLINE_DIR, directory=True) as folder:
        for name in runs:
            aggregates[name] = aggregate_run(seed_records(name, seeds), seeds)
            write_json(paths.aggregate_file(name), aggregates[name])
            speeds = [read_json(paths.speed_file(paths.run_id(name, s))) for s in seeds]
            headlines[name] = headline(aggregates[name], speeds)
            write_json(folder / f"{name}.json", headlines[name])
    write_json(paths.SUMMARY_FILE, summary(headlines, params.runs))
    labels, usage = load_labels(paths.DATASET_FILE), load_usage(paths.DATASET_FILE)
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


def describe(result: dict[str, Any]) -> str:
    lines = []
    for run, agg in result["aggregates"].items():
        acc = agg["test_accuracy"]
        hw = "" if acc["half_width"] is None else f" ± {acc['half_width']:.4f}"
        lines.append(f"{run}: test accuracy {acc['mean']:.4f}{hw} ({agg['n']} seeds)")
    real = [name for name, c in result["comparisons"].items() if c["significant"]]
    lines.append(
        f"{len(real)} of {len(result['comparisons'])} pairs differ in test accuracy at 95 %; "
        f"tables: {paths.TABLES_FILE}"
    )
    return "\n".join(lines)
