"""A run's seeds read as one: element-wise means, the rate windows and curve epochs every
seed has, and the split of runs into the study's and the fine-tuned ones."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ferstudy.analysis.rates import RATES, common_windows
from ferstudy.core import paths


def mean_record(records: list[Any]) -> Any:
    """The element-wise mean of records of the same shape (nested dicts, lists and arrays of
    numbers); anything else (text, flags, None) is taken from the first record."""
    first = records[0]
    if isinstance(first, dict):
        return {k: mean_record([r[k] for r in records]) for k in first}
    if isinstance(first, list):
        return [mean_record(list(items)) for items in zip(*records)]
    if isinstance(first, np.ndarray):
        return np.mean(records, axis=0)
    if isinstance(first, numbers.Real) and not isinstance(first, (bool, np.bool_)):
        return float(np.mean(records))
    return first


def common_study(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seeds' study records with each rate restricted to the windows every seed has
    (seeds of a fine-tuned run that stopped early differ in length)."""
    keep = {
        (rate, metric): common_windows(studies, rate, metric)
        for rate in RATES
        for metric in studies[0][rate]
    }
    return [
        {
            **s,
            **{
                rate: {
                    metric: {w: s[rate][metric][w] for w in keep[(rate, metric)]}
                    for metric in studies[0][rate]
                }
                for rate in RATES
            },
        }
        for s in studies
    ]


def common_curves(curves: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The seeds' curves cut to the epochs every seed has (0 .. the shortest seed's last)."""
    n = min(len(c[key]) for c in curves for key in c)
    return [{key: np.asarray(values)[:n] for key, values in c.items()} for c in curves]


def study_runs(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The study's runs (frozen backbones), without the fine-tuned ones."""
    return {run: r for run, r in results.items() if not paths.is_finetune(run)}


def finetuned_runs(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The fine-tuned runs (``<backbone>-<init>-finetune``)."""
    return {run: r for run, r in results.items() if paths.is_finetune(run)}
