"""Stage ``split``: stratified train / validation / test split of the canonical dataset.

The calls, with the default params (``test_size 0.2``, ``val_size 0.1``, ``random_state 42``):

    rest, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=42)
    train, val = train_test_split(rest, test_size=0.1 / (1 - 0.2), stratify=y[rest],
                                  random_state=42)

``idx`` is ``0..N-1`` in the canonical file's order. Each subset is stored sorted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from ferstudy import CLASSES
from ferstudy.errors import FerError
from ferstudy.io import SPLITS, load_dataset, save_npz, write_json


def stratified_split(
    labels: np.ndarray, *, test_size: float, val_size: float, random_state: int
) -> dict[str, np.ndarray]:
    """Split row indices into train/val/test, stratified by label (fractions of the whole)."""
    if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        raise FerError(f"split fractions test_size={test_size}, val_size={val_size} are not valid")
    idx = np.arange(len(labels))
    try:
        rest, test = train_test_split(
            idx, test_size=test_size, stratify=labels, random_state=random_state
        )
        train, val = train_test_split(
            rest,
            test_size=val_size / (1 - test_size),
            stratify=labels[rest],
            random_state=random_state,
        )
    except ValueError as err:  # too few images of a class to stratify
        raise FerError(f"cannot split {len(labels)} images stratified by class: {err}") from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def split_summary(labels: np.ndarray, split: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-class counts of each subset."""
    return {
        name: {
            "total": int(len(rows)),
            "per_class": {
                c: int(n)
                for c, n in zip(CLASSES, np.bincount(labels[rows], minlength=len(CLASSES)))
            },
        }
        for name, rows in split.items()
    }


def run(params: dict[str, Any], dataset_file: Path, split_file: Path, summary_file: Path) -> dict:
    """The ``split`` stage."""
    data = params.get("data", {})
    dataset = load_dataset(dataset_file)
    split = stratified_split(
        dataset.labels,
        test_size=float(data.get("test_size", 0.2)),
        val_size=float(data.get("val_size", 0.1)),
        random_state=int(data.get("random_state", 42)),
    )
    summary = split_summary(dataset.labels, split)
    save_npz(split_file, **{name: split[name].astype(np.int64) for name in SPLITS})
    write_json(summary_file, summary)
    return summary


def stratified_subset(
    rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """A stratified ``fraction`` of ``rows`` (sorted); all rows when fraction is 1."""
    if fraction >= 1:
        return np.sort(rows)
    keep, _ = train_test_split(rows, train_size=fraction, stratify=labels[rows], random_state=seed)
    return np.sort(keep)
