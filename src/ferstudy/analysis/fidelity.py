"""Fidelity: how closely this project's study rates (MCR/MOFR, Tables 2-5) agree with the
study's own, by sign and RMSE.

Like for like, a run is scored on the study's rows of the same backbone and init. The study's
pretrained rows have no like-for-like run here, so :func:`family_fidelity` scores this
project's pretrained runs on the study's pretrained rows of the same family (face recognition:
VGG-Face, OpenFace; ImageNet: MobileNet, ResNet-50): the same kind of weights, not the same
network.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy.analysis.rates import (
    METRIC0,
    TABLES,
    read_run_logs,
    run_metrics,
    study_table_rows,
)
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.paths import PAPER_TABLES
from ferstudy.models.specs import get_spec

#: A rate with absolute value below this counts as 0 when signs are compared.
ZERO_BAND = 1e-3


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
    for run in dict.fromkeys(paths.run_name(r["backbone"], r["init"]) for r, _ in matched):
        mine = [(r, p) for r, p in matched if paths.run_name(r["backbone"], r["init"]) == run]
        per_run[run] = {
            f"table{t}": agreement([(r["value"], p) for r, p in mine if r["table"] == t])
            for t in sorted(TABLES.values())
        }
        per_run[run]["total"] = agreement([(r["value"], p) for r, p in mine])
    by_init = {
        init: agreement([(r["value"], p) for r, p in matched if r["init"] == init])
        for init in paths.INITS
    }
    return {
        "runs": per_run,
        "total": agreement([(r["value"], p) for r, p in matched]),
        **by_init,
        "pretrained_by_family": family_fidelity(rows, paper),
    }


def family_fidelity(rows: list[dict[str, Any]], paper: dict[tuple, float]) -> dict[str, Any]:
    """Per family: this project's pretrained rows against the study's pretrained rows of the
    other backbones of that family (same table and window), by sign and RMSE."""
    out: dict[str, Any] = {}
    ours = [r for r in rows if r["init"] == "pretrained"]
    for family in sorted({get_spec(r["backbone"]).family for r in ours}):
        mine = [r for r in ours if get_spec(r["backbone"]).family == family]
        study = sorted(
            {
                b
                for (_, b, init, _) in paper
                if init == "pretrained" and get_spec(b).family == family
            }
        )
        pairs = [
            (r["value"], paper[key])
            for r in mine
            for b in study
            if b != r["backbone"] and (key := (r["table"], b, "pretrained", r["epochs"])) in paper
        ]
        if pairs:
            runs = sorted({paths.run_name(r["backbone"], "pretrained") for r in mine})
            out[family] = {"ours": runs, "study": study, **agreement(pairs)}
    return out


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


def variant_record(logs_dir: Path, label: str, description: str, window: int = 5) -> dict[str, Any]:
    """Fidelity of every run logged under ``logs_dir`` (``metrics/train`` of some run of the
    pipeline), labelled as one protocol variant, for ``reference/protocol_variants/``."""
    if not Path(logs_dir).is_dir():
        raise FerError(f"{logs_dir}: not a folder")
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
