"""Train / validation / test splits of the canonical dataset.

Two protocols (``data.split``, and ``finetune.split`` for fine-tuning):

- ``stratified``, the study's 70/10/20 split (:func:`stratified_split`). The calls, with
  the default params (``test_size 0.2``, ``val_size 0.1``, ``random_state 42``):

    rest, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=42)
    train, val = train_test_split(rest, test_size=0.1 / (1 - 0.2), stratify=y[rest],
                                  random_state=42)

``idx`` is ``0..N-1`` in the canonical file's order. Each subset is stored sorted.

- ``usage``, FER2013's own protocol, as benchmarks report their numbers
  (:func:`usage_split`): train = the Training rows, validation = PublicTest, test =
  PrivateTest (``test_size`` and ``val_size`` are then unused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.core.files import Dataset


def stratified_split(
    labels: np.ndarray, *, test_size: float, val_size: float, random_state: int
) -> dict[str, np.ndarray]:
    """Split row indices into train/val/test, stratified by label (fractions of the whole)."""
    if not (test_size > 0 and val_size > 0 and test_size + val_size < 1):
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


def stratified_subset(
    rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """A stratified ``fraction`` of ``rows`` (sorted); all rows when fraction is 1."""
    if fraction >= 1:
        return np.sort(rows)
    keep, _ = train_test_split(rows, train_size=fraction, stratify=labels[rows], random_state=seed)
    return np.sort(keep)


#: The FER2013 usage of each subset under the usage protocol.
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


def split_rows(dataset: Dataset, split: dict[str, Any]) -> dict[str, np.ndarray]:
    """Dataset rows of train / val / test under a split spec: ``{"kind": "usage"}`` or
    ``{"kind": "stratified", "test_size", "val_size", "random_state"}`` (as a fine-tuned
    model's config records it)."""
    if split["kind"] == "usage":
        return usage_split(dataset.usage)
    return stratified_split(
        dataset.labels,
        test_size=split["test_size"],
        val_size=split["val_size"],
        random_state=split["random_state"],
    )
