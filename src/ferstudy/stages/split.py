"""Stage ``split``: train / validation / test rows of the dataset under ``data.split``
(:mod:`ferstudy.data.splits`), written to ``data/split.npz`` with a per-class summary."""

from __future__ import annotations

from typing import Any

import numpy as np

from ferstudy.core import paths
from ferstudy.core.files import SPLITS, load_dataset, save_npz, write_json
from ferstudy.core.params import Params
from ferstudy.data.splits import split_rows, split_summary


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Split the dataset and write the rows of each subset and their summary."""
    dataset = load_dataset(paths.DATASET_FILE)
    data = params.data
    split = split_rows(
        dataset,
        {
            "kind": data.split,
            "test_size": data.test_size,
            "val_size": data.val_size,
            "random_state": data.random_state,
        },
    )
    summary = split_summary(dataset.labels, split)
    save_npz(paths.SPLIT_FILE, **{name: split[name].astype(np.int64) for name in SPLITS})
    write_json(paths.SPLIT_SUMMARY, summary)
    return summary


def describe(result: dict[str, Any]) -> str:
    return "split: " + " / ".join(f"{name} {s['total']}" for name, s in result.items())
