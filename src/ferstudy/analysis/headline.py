"""The pipeline's declared metrics: one headline file per run and a two-number summary.

``dvc metrics show`` lists one row per run (:func:`headline`, from the aggregate of the run's
seeds and its speed files). ``dvc exp show`` cannot fit a column per run and measure, so its
recommended view drops the per-run files and keeps :func:`summary`, whose keys no run file
shares. The names are short so that both tables fit a screen.
"""

from __future__ import annotations

from typing import Any

#: Column -> (measure in the aggregate, the summary field, decimals).
_FROM_AGGREGATE: dict[str, tuple[str, str, int]] = {
    "test_acc": ("test_accuracy", "mean", 4),
    "test_acc_hw": ("test_accuracy", "half_width", 4),
    "macro_f1": ("macro_f1", "mean", 4),
    "macro_f1_hw": ("macro_f1", "half_width", 4),
    "private_acc": ("privatetest_accuracy", "mean", 4),
    "initial_acc": ("initial_val_accuracy", "mean", 4),
}


def _round(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(float(value), decimals)


def _significant(value: float, digits: int) -> float | int:
    """``value`` to ``digits`` significant digits (an int when it has no decimals left)."""
    rounded = float(f"{value:.{digits}g}")
    return int(rounded) if rounded >= 10 ** (digits - 1) else rounded


def _first_window(rates: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the earliest window of one rate (windows are named ``first-last``)."""
    if not rates:
        return None
    return rates[min(rates, key=lambda window: int(window.split("-")[0]))]


def headline(aggregate: dict[str, Any], speeds: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's headline: test accuracy and macro-F1 (mean and 95 % half-width over seeds),
    PrivateTest accuracy, the study's initial validation accuracy and its accuracy MCR and
    MOFR over the first window (``mcr_first``, ``mofr_first``) and images per second at batch
    64 (seed mean, 3 significant digits)."""
    out: dict[str, Any] = {}
    for column, (measure, field, decimals) in _FROM_AGGREGATE.items():
        out[column] = _round((aggregate.get(measure) or {}).get(field), decimals)
    for column, rate in (("mcr_first", "MCR"), ("mofr_first", "MOFR")):
        first = _first_window(aggregate[rate]["accuracy"])
        out[column] = _round(first and first["mean"], 5)
    rates = [s["images_per_second_batch64"] for s in speeds]
    out["img_per_s"] = _significant(sum(rates) / len(rates), 3) if rates else None
    return out


def summary(headlines: dict[str, dict[str, Any]], study_runs: list[str]) -> dict[str, float]:
    """Mean test accuracy over the study's runs (``mean_acc``: what a sweep of the training
    protocol moves) and the best test accuracy of any run (``best_acc``)."""
    study = [headlines[run]["test_acc"] for run in study_runs]
    return {
        "mean_acc": round(sum(study) / len(study), 4),
        "best_acc": max(h["test_acc"] for h in headlines.values()),
    }
