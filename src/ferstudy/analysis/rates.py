"""The study's learning-curve rates, per window of epochs, read from a run's dvclive log.

MCR (mean convergence rate) is the mean epoch-to-epoch change of a training curve; MOFR (mean
overfitting rate) the mean change of the train-minus-validation gap. The first window's first
step starts from ``M[0]``: the untrained model's value (``untrained``, the default) or, as an
alternative reading of the study, epoch 1's (``epoch1``). ``docs/training-and-rates.md``
has the definitions and Tables 2-5."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy.analysis.stats import summarize
from ferstudy.core import paths
from ferstudy.core.errors import FerError

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
    if len({len(v) for v in curves.values()}) > 1:
        lengths = ", ".join(f"{k} {len(v)}" for k, v in curves.items())
        raise FerError(f"{live_dir}: the curves differ in length ({lengths} epochs)")
    return curves


def with_metric0(curves: dict[str, np.ndarray], metric0: str) -> dict[str, np.ndarray]:
    """The curves with ``M[0]`` read as ``metric0`` (see module doc)."""
    if metric0 not in METRIC0:
        raise FerError(f"metric0 must be one of {', '.join(METRIC0)} (got '{metric0}')")
    if metric0 == "untrained":
        return curves
    return {k: np.concatenate([v[1:2], v[1:]]) for k, v in curves.items()}


def run_metrics(
    curves: dict[str, np.ndarray], window: int, metric0: str = "untrained"
) -> dict[str, Any]:
    """All of the study's numbers for one run (plus final and best validation accuracy)."""
    epochs = len(curves["train/accuracy"]) - 1
    if epochs < 1:
        raise FerError("a run needs at least one trained epoch")
    untrained_val_accuracy = curves["val/accuracy"][0]
    curves = with_metric0(curves, metric0)
    result: dict[str, Any] = {"metric0": metric0}
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
        untrained_val_accuracy=round(float(untrained_val_accuracy), 6),
        final_val_accuracy=round(float(val_acc[-1]), 6),
        best_val_accuracy=round(float(val_acc[best]), 6),
        best_epoch=best,
    )
    return result


def common_windows(results: list[dict[str, Any]], rate: str, metric: str) -> list[str]:
    """The windows of ``rate`` of ``metric`` that every seed's results have, in the first
    seed's order (all of them when the seeds trained equally long; see the module doc)."""
    shared = set.intersection(*(set(r[rate][metric]) for r in results))
    return [w for w in results[0][rate][metric] if w in shared]


def study_table_rows(per_run: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Long-format rows in the layout of ``paper_tables.csv``: per run (a list of its seeds'
    results), the seeds' mean, with their number and the half-width of the 95 % t interval;
    windows that every seed has (:func:`common_windows`)."""
    rows = []
    for run, results in sorted(per_run.items()):
        if not results:
            raise FerError(f"{run}: no seed's results to summarize")
        backbone, init = paths.parse_run_name(run)
        for (metric, rate), table in TABLES.items():
            for epochs in common_windows(results, rate, metric):
                summary = summarize([r[rate][metric][epochs] for r in results])
                rows.append(
                    {
                        "table": table,
                        "metric": metric,
                        "rate": rate,
                        "backbone": backbone,
                        "init": init,
                        "epochs": epochs,
                        "value": round(summary.mean, 6),
                        "seeds": summary.n,
                        "half_width": _round(summary.half_width),
                    }
                )
    return rows


def read_run_logs(folder: Path) -> list[dict[str, np.ndarray]]:
    """The curves of every seed logged under a run's folder (``seed*/``, or the folder itself
    in the layout before seeds)."""
    seeds = sorted(
        (p for p in folder.glob("seed*") if (p / "plots").is_dir()),
        key=lambda p: int(p.name.removeprefix("seed")),
    )
    return [read_curves(p) for p in seeds] if seeds else [read_curves(folder)]


METRIC0 = ("untrained", "epoch1")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
