"""``data.split: usage``: FER2013's own protocol, as benchmarks report their numbers.

train = the Training rows, validation = PublicTest, test = PrivateTest (``data.test_size``
and ``data.val_size`` are then unused). The ``split`` stage runs this instead of the study's
stratified split (:mod:`ferstudy.split`) when params ask for it; the files it writes are the
same (``data/split.npz``, ``data/split_summary.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferstudy.errors import FerError
from ferstudy.io import SPLITS, load_dataset, save_npz, write_json
from ferstudy.split import split_summary

#: The FER2013 usage of each subset.
USAGE_SPLIT = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def usage_split(usage: np.ndarray) -> dict[str, np.ndarray]:
    """Dataset rows of each subset, by their challenge usage (sorted)."""
    split = {name: np.flatnonzero(usage == value) for name, value in USAGE_SPLIT.items()}
    missing = [value for name, value in USAGE_SPLIT.items() if not len(split[name])]
    if missing:
        raise FerError(
            f"data.split: usage needs images of every FER2013 usage; none is {', '.join(missing)} "
            "(a source without usage: use data.split: stratified)"
        )
    return split


def run(dataset_file: Path, split_file: Path, summary_file: Path) -> dict[str, Any]:
    """The ``split`` stage under ``data.split: usage``."""
    dataset = load_dataset(dataset_file)
    split = usage_split(dataset.usage)
    summary = split_summary(dataset.labels, split)
    save_npz(split_file, **{name: split[name].astype(np.int64) for name in SPLITS})
    write_json(summary_file, summary)
    return summary
