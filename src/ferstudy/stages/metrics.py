"""Stage ``metrics``: the study's rates from each run's per-epoch log, and Tables 2-5.

For a window of epochs ``a..b`` (``n = b - a + 1``) and Metric = accuracy or loss:

- MCR  = (1/n) * sum_{i=a..b} (M_train[i] - M_train[i-1])
- MOFR = (1/n) * sum_{i=a..b} ((M_train[i] - M_val[i]) - (M_train[i-1] - M_val[i-1]))

``M[0]`` (the term before epoch 1, left undefined by the paper) is read one of two ways,
``metric0`` in params: ``untrained`` (default), the evaluation of the untrained model that the
train stage logs as epoch 0; or ``epoch1``, the epoch-1 value itself (the first step of the
first window is then 0). Windows are ``window`` epochs long (default 5: 1-5, 6-10, 11-15,
16-20); when ``window`` does not divide the number of epochs the last window is shorter and
its ``n`` is its own length.

**Fidelity** (``metrics/fidelity.json``): how closely the rates agree with the study's Tables
2-5, per run, per table and in total: the share of rates whose sign agrees with the paper's
(a value with ``|v| < ZERO_BAND`` counts as 0, so 0 agrees only with 0) and the RMSE. It is
computed under both readings of ``M[0]``; the one in params is the headline.

**Fine-tuned runs** (``<run>-finetune``, :mod:`ferstudy.stages.finetune`) get the same per-seed
rates (``metrics/study/<run>-finetune/seed<k>.json``) but no place in the study's tables or
the fidelity score: those compare with the paper by (backbone, init), and the paper never
fine-tuned. A fine-tuned run stops early, so its seeds may log different numbers of epochs.
Each seed's rates are computed over its own epochs (``epochs`` in its file says how many; its
last window may be shorter). Whatever summarises rates across seeds (:func:`common_windows`:
the study tables, the aggregate stage, the report) uses only the windows that every seed
has, i.e. the same label and therefore the very same epochs in every seed; a window that
only the longer-running seeds reach is left out rather than averaged over the seeds that
happened to train longer (which would select on how training went).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferstudy.analysis.fidelity import (
    fidelity_of_logs,
    load_paper_tables,
)
from ferstudy.analysis.rates import (
    METRICS,
    read_curves,
    run_metrics,
    study_table_rows,
)
from ferstudy.analysis.results import common_curves, mean_record
from ferstudy.core import paths
from ferstudy.core.files import atomic_path, write_csv, write_json, write_text
from ferstudy.core.params import Params
from ferstudy.core.paths import FIDELITY_FILE
from ferstudy.reporting.tables import markdown_tables


def write_curves(folder: Path, run: str, seed_curves: list[dict[str, np.ndarray]]) -> None:
    """``<folder>/accuracy/<run>.csv`` and ``<folder>/loss/<run>.csv``: per epoch, the train
    and validation value averaged over the seeds (on the epochs every seed has)."""
    mean = mean_record(common_curves(seed_curves))
    for metric in METRICS:
        rows = [
            {"epoch": epoch, "train": round(float(train), 6), "validation": round(float(val), 6)}
            for epoch, (train, val) in enumerate(
                zip(mean[f"train/{metric}"], mean[f"val/{metric}"])
            )
        ]
        write_csv(folder / metric / f"{run}.csv", rows)


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``metrics`` stage: rates per run and seed for every run given (study and
    fine-tuned, each seed over its own epochs), the study's tables (seed means) and the
    fidelity score of the study runs only; returns the rates by run id."""
    runs, seeds = params.all_runs, params.seeds
    window, metric0 = params.window, params.metric0
    curves = {
        run: [read_curves(paths.live_dir(paths.run_id(run, s))) for s in seeds] for run in runs
    }
    per_id, per_run = {}, {}
    for run in runs:
        per_run[run] = [run_metrics(c, window, metric0) for c in curves[run]]
        for seed, result in zip(seeds, per_run[run]):
            per_id[paths.run_id(run, seed)] = result
            write_json(paths.study_file(paths.run_id(run, seed)), result)
    with atomic_path(paths.CURVES_DIR, directory=True) as folder:
        for run in runs:
            write_curves(folder, run, curves[run])
    study = [run for run in runs if not paths.is_finetune(run)]  # compared with the paper
    rows = study_table_rows({run: per_run[run] for run in study})
    write_csv(paths.METRICS_DIR / "study_tables.csv", rows)
    write_text(paths.METRICS_DIR / "study_tables.md", markdown_tables(rows))
    both = fidelity_of_logs({run: curves[run] for run in study}, window, load_paper_tables())
    write_json(
        FIDELITY_FILE,
        {"metric0": metric0, "seeds": len(seeds), **both[metric0], "by_metric0": both},
    )
    return per_id


def describe(result: dict[str, Any]) -> str:
    lines = []
    for run_id, rates in result.items():
        initial, final = rates["initial"]["val_accuracy"], rates["final_val_accuracy"]
        lines.append(
            f"{run_id}: initial val accuracy {initial:.4f}, final {final:.4f}, "
            f"best {rates['best_val_accuracy']:.4f} (epoch {rates['best_epoch']})"
        )
    return "\n".join(lines)
