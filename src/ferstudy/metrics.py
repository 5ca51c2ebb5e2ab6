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

**Fine-tuned runs** (``<run>-finetune``, :mod:`ferstudy.finetune`) get the same per-seed
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

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy import params as P
from ferstudy.errors import FerError
from ferstudy.io import write_json, write_text
from ferstudy.stats import summarize

PAPER_TABLES = Path("reference/paper_tables.csv")
FIDELITY_FILE = P.METRICS_DIR / "fidelity.json"
METRIC0 = ("untrained", "epoch1")
#: A rate with absolute value below this counts as 0 when signs are compared.
ZERO_BAND = 1e-3
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
        backbone, init = P.parse_run_name(run)
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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


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
                r["epochs"]: _mean_pm(r["value"], r.get("half_width"))
                for r in sel
                if (r["backbone"], r["init"]) == (backbone, init)
            }
            out.append(
                f"| {backbone} | {init} | " + " | ".join(vals.get(e, "") for e in epochs) + " |"
            )
        out.append("")
    return "\n".join(out)


def _mean_pm(value: float, half_width: float | None) -> str:
    return f"{value:.6f}" if half_width is None else f"{value:.6f} ± {half_width:.6f}"


def load_paper_tables(path: Path = PAPER_TABLES) -> dict[tuple, float]:
    """``{(table, backbone, init, epochs): value}`` from the study's Tables 2-5."""
    try:
        with open(path, newline="") as fh:
            return {
                (int(r["table"]), r["backbone"], r["init"], r["epochs"]): float(r["value"])
                for r in csv.DictReader(fh)
            }
    except (OSError, KeyError, ValueError) as err:
        raise FerError(f"{path}: cannot read the study's tables ({err})") from None


def sign(value: float) -> int:
    """-1, 0 or 1, with ``|value| < ZERO_BAND`` counted as 0."""
    return 0 if abs(value) < ZERO_BAND else (1 if value > 0 else -1)


def agreement(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Sign agreement and RMSE of (ours, paper) pairs."""
    if not pairs:
        return {"rates": 0, "signs_agree": 0, "sign_agreement": None, "rmse": None}
    ours, paper = np.array(pairs).T
    agree = int(sum(sign(o) == sign(p) for o, p in pairs))
    return {
        "rates": len(pairs),
        "signs_agree": agree,
        "sign_agreement": round(agree / len(pairs), 4),
        "rmse": round(float(np.sqrt(np.mean((ours - paper) ** 2))), 6),
    }


def fidelity(rows: list[dict[str, Any]], paper: dict[tuple, float]) -> dict[str, Any]:
    """Agreement of study-table rows with the paper: per run and table, per run, in total."""
    matched = [
        (r, paper[key])
        for r in rows
        if (key := (r["table"], r["backbone"], r["init"], r["epochs"])) in paper
    ]
    per_run: dict[str, Any] = {}
    for run in dict.fromkeys(P.run_name(r["backbone"], r["init"]) for r, _ in matched):
        mine = [(r, p) for r, p in matched if P.run_name(r["backbone"], r["init"]) == run]
        per_run[run] = {
            f"table{t}": agreement([(r["value"], p) for r, p in mine if r["table"] == t])
            for t in sorted(TABLES.values())
        }
        per_run[run]["total"] = agreement([(r["value"], p) for r, p in mine])
    by_init = {
        init: agreement([(r["value"], p) for r, p in matched if r["init"] == init])
        for init in P.INITS
    }
    return {"runs": per_run, "total": agreement([(r["value"], p) for r, p in matched]), **by_init}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(rows[0]) if rows else ["table"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def fidelity_of_logs(
    curves: dict[str, list[dict[str, np.ndarray]]], window: int, paper: dict[tuple, float]
) -> dict[str, Any]:
    """Fidelity of a set of runs' curves (per run, a list of its seeds' curves) under each
    reading of ``M[0]``, on the seeds' mean rates."""
    return {
        metric0: fidelity(
            study_table_rows(
                {
                    run: [run_metrics(c, window, metric0) for c in seeds]
                    for run, seeds in curves.items()
                }
            ),
            paper,
        )
        for metric0 in METRIC0
    }


def read_run_logs(folder: Path) -> list[dict[str, np.ndarray]]:
    """The curves of every seed logged under a run's folder (``seed*/``, or the folder itself
    in the layout before seeds)."""
    seeds = sorted(p for p in folder.glob("seed*") if (p / "plots").is_dir())
    return [read_curves(p) for p in seeds] if seeds else [read_curves(folder)]


def variant_record(logs_dir: Path, label: str, description: str, window: int = 5) -> dict[str, Any]:
    """Fidelity of every run logged under ``logs_dir`` (``metrics/train`` of some run of the
    pipeline), labelled as one protocol variant, for ``reference/protocol_variants/``."""
    runs = sorted(
        p.name
        for p in Path(logs_dir).iterdir()
        if (p / "plots").is_dir() or any((s / "plots").is_dir() for s in p.glob("seed*"))
    )
    if not runs:
        raise FerError(f"{logs_dir}: no run logs (expected <run>/[seed<n>/]plots/metrics/...)")
    curves = {run: read_run_logs(Path(logs_dir) / run) for run in runs}
    return {
        "label": label,
        "description": description,
        "runs": runs,
        "seeds": {run: len(c) for run, c in curves.items()},
        "epochs": {run: len(c[0]["train/accuracy"]) - 1 for run, c in curves.items()},
        "fidelity": fidelity_of_logs(curves, window, load_paper_tables()),
    }


def run(params: dict[str, Any], runs: list[str], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """The ``metrics`` stage: rates per run and seed for every run given (study and
    fine-tuned, each seed over its own epochs), the study's tables (seed means) and the
    fidelity score of the study runs only; returns the rates by run id."""
    window = int(params.get("window", 5))
    metric0 = str(params.get("metric0", "untrained"))
    curves = {run: [read_curves(P.live_dir(P.run_id(run, s))) for s in seeds] for run in runs}
    per_id, per_run = {}, {}
    for run in runs:
        per_run[run] = [run_metrics(c, window, metric0) for c in curves[run]]
        for seed, result in zip(seeds, per_run[run]):
            per_id[P.run_id(run, seed)] = result
            write_json(P.study_file(P.run_id(run, seed)), result)
    study = [run for run in runs if not P.is_finetune(run)]  # compared with the paper
    rows = study_table_rows({run: per_run[run] for run in study})
    write_csv(P.METRICS_DIR / "study_tables.csv", rows)
    write_text(P.METRICS_DIR / "study_tables.md", markdown_tables(rows))
    both = fidelity_of_logs({run: curves[run] for run in study}, window, load_paper_tables())
    write_json(
        FIDELITY_FILE,
        {"metric0": metric0, "seeds": len(seeds), **both[metric0], "by_metric0": both},
    )
    return per_id
