"""Stage ``metrics``: the study's rates from each run's per-epoch log, and Tables 2-5.

For a window of epochs ``a..b`` (``n = b - a + 1``) and Metric = accuracy or loss:

- MCR  = (1/n) * sum_{i=a..b} (M_train[i] - M_train[i-1])
- MOFR = (1/n) * sum_{i=a..b} ((M_train[i] - M_val[i]) - (M_train[i-1] - M_val[i-1]))

``M[0]`` (the term before epoch 1, left undefined by the paper) is the evaluation of the
untrained model that the train stage logs as epoch 0. Windows are ``window`` epochs long
(default 5: 1-5, 6-10, 11-15, 16-20); when ``window`` does not divide the number of epochs
the last window is shorter and its ``n`` is its own length.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy import params as P
from ferstudy.errors import FerError
from ferstudy.io import write_json, write_text

RATES = ("MCR", "MOFR")
METRICS = ("accuracy", "loss")
#: The study's table number of each (metric, rate).
TABLES = {("accuracy", "MCR"): 2, ("loss", "MCR"): 3, ("accuracy", "MOFR"): 4, ("loss", "MOFR"): 5}


def windows(epochs: int, window: int) -> list[tuple[int, int]]:
    """Epoch windows ``[(1, 5), (6, 10), ...]``; the last one may be shorter."""
    if epochs < 1 or window < 1:
        raise FerError("epochs and window must be at least 1")
    return [(a, min(a + window - 1, epochs)) for a in range(1, epochs + 1, window)]


def window_label(bounds: tuple[int, int]) -> str:
    return f"{bounds[0]}-{bounds[1]}"


def mean_convergence_rate(train: np.ndarray, first: int, last: int) -> float:
    """MCR over epochs first..last of a curve indexed by epoch (index 0 = untrained)."""
    steps = np.diff(train[first - 1 : last + 1])
    return float(np.mean(steps))


def mean_overfitting_rate(train: np.ndarray, val: np.ndarray, first: int, last: int) -> float:
    """MOFR over epochs first..last: mean change of the train-minus-validation gap."""
    gap = train - val
    return float(np.mean(np.diff(gap[first - 1 : last + 1])))


def read_curves(live_dir: str | Path) -> dict[str, np.ndarray]:
    """The dvclive curves of a run: ``{"train/accuracy": array indexed by epoch, ...}``."""
    curves = {}
    for split in ("train", "val"):
        for metric in METRICS:
            path = Path(live_dir) / "plots" / "metrics" / split / f"{metric}.tsv"
            if not path.is_file():
                raise FerError(f"{path}: missing; run the train stage first")
            rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter="\t"))
            steps = [int(r["step"]) for r in rows]
            if steps != list(range(len(steps))):
                raise FerError(f"{path}: epochs are not 0..N in order")
            curves[f"{split}/{metric}"] = np.array([float(r[metric]) for r in rows])
    return curves


def run_metrics(curves: dict[str, np.ndarray], window: int) -> dict[str, Any]:
    """All of the study's numbers for one run (plus final and best validation accuracy)."""
    epochs = len(curves["train/accuracy"]) - 1
    if epochs < 1:
        raise FerError("a run needs at least one trained epoch")
    result: dict[str, Any] = {}
    for rate in RATES:
        result[rate] = {}
        for metric in METRICS:
            train, val = curves[f"train/{metric}"], curves[f"val/{metric}"]
            result[rate][metric] = {
                window_label(w): round(
                    mean_convergence_rate(train, *w)
                    if rate == "MCR"
                    else mean_overfitting_rate(train, val, *w),
                    6,
                )
                for w in windows(epochs, window)
            }
    val_acc = curves["val/accuracy"]
    best = int(np.argmax(val_acc[1:])) + 1
    result.update(
        epochs=epochs,
        initial={  # after epoch 1
            "val_accuracy": round(float(val_acc[1]), 6),
            "val_loss": round(float(curves["val/loss"][1]), 6),
            "train_accuracy": round(float(curves["train/accuracy"][1]), 6),
            "train_loss": round(float(curves["train/loss"][1]), 6),
        },
        untrained_val_accuracy=round(float(val_acc[0]), 6),
        final_val_accuracy=round(float(val_acc[-1]), 6),
        best_val_accuracy=round(float(val_acc[best]), 6),
        best_epoch=best,
    )
    return result


def study_table_rows(per_run: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-format rows in the layout of ``paper_tables.csv``."""
    rows = []
    for run, result in sorted(per_run.items()):
        backbone, init = P.parse_run_name(run)
        for (metric, rate), table in TABLES.items():
            for epochs, value in result[rate][metric].items():
                rows.append(
                    {
                        "table": table,
                        "metric": metric,
                        "rate": rate,
                        "backbone": backbone,
                        "init": init,
                        "epochs": epochs,
                        "value": value,
                    }
                )
    return rows


def markdown_tables(rows: list[dict[str, Any]], value_columns: list[str] | None = None) -> str:
    """One Markdown table per study table: a row per run, a column per epoch window."""
    out = []
    for (metric, rate), table in TABLES.items():
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        epochs = list(dict.fromkeys(r["epochs"] for r in sel))
        runs = list(dict.fromkeys((r["backbone"], r["init"]) for r in sel))
        out.append(f"**Table {table}: {rate} of {metric}**\n")
        out.append("| model | init | " + " | ".join(epochs) + " |")
        out.append("|---|---|" + "---:|" * len(epochs))
        for backbone, init in runs:
            vals = {
                r["epochs"]: r["value"]
                for r in sel
                if (r["backbone"], r["init"]) == (backbone, init)
            }
            out.append(
                f"| {backbone} | {init} | "
                + " | ".join(f"{vals[e]:.6f}" if e in vals else "" for e in epochs)
                + " |"
            )
        out.append("")
    return "\n".join(out)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(rows[0]) if rows else ["table"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def run(params: dict[str, Any], runs: list[str]) -> dict[str, dict[str, Any]]:
    """The ``metrics`` stage: ``metrics/study/<run>.json`` and the aggregated tables."""
    window = int(params.get("window", 5))
    per_run = {}
    for run_name in runs:
        per_run[run_name] = run_metrics(read_curves(P.live_dir(run_name)), window)
        write_json(P.METRICS_DIR / "study" / f"{run_name}.json", per_run[run_name])
    rows = study_table_rows(per_run)
    write_csv(P.METRICS_DIR / "study_tables.csv", rows)
    write_text(P.METRICS_DIR / "study_tables.md", markdown_tables(rows))
    return per_run
