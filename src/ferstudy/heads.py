"""Stage ``heads``: scikit-learn classifiers on a run's cached features.

The study names non-neural classifiers on backbone embeddings as its future work. For each
run and seed in ``heads.runs`` x ``seeds``, this fits every kind in ``heads.kinds`` on the
cached training features (standardised): ``logistic`` (multinomial logistic regression,
lbfgs) and ``linear_svm`` (a linear support vector machine, one-vs-rest), both with
``class_weight`` (``balanced``: each emotion weighs as much as any other, whatever its
count). With ``heads.flip``, the training set also holds the features of every training
image mirrored left to right (the ``flipped`` stage's cache). The regularisation ``C`` is
chosen among ``heads.C`` on validation accuracy; the chosen head is scored once on the test
set. Writes ``metrics/heads/<run>/seed<seed>.json``
(per kind: validation accuracy per ``C``, the chosen ``C``, test and PrivateTest scores) and
each kind's test predictions beside it, so that the report compares a head with the run's
dense head paired on the same images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ferstudy import params as P
from ferstudy.errors import FerError
from ferstudy.evaluate import privatetest_scores, scores
from ferstudy.features import CachedFeatures
from ferstudy.flipped import load_flipped
from ferstudy.io import SPLITS, load_usage, save_npz, write_json
from ferstudy.stats import paired_difference, summarize

KINDS = ("logistic", "linear_svm")
PREDICTIONS = "{kind}_test_predictions.npz"


def heads_file(run_id: str) -> Path:
    return P.METRICS_DIR / "heads" / f"{run_id}.json"


def predictions_file(run_id: str, kind: str) -> Path:
    return P.METRICS_DIR / "heads" / run_id / PREDICTIONS.format(kind=kind)


def make_head(kind: str, c: float, class_weight: str | None, max_iter: int, seed: int) -> Pipeline:
    """An unfitted head: standardisation, then the classifier."""
    if kind == "logistic":
        model = LogisticRegression(
            C=c, class_weight=class_weight, max_iter=max_iter, tol=1e-3, random_state=seed
        )
    elif kind == "linear_svm":
        model = LinearSVC(
            C=c, class_weight=class_weight, max_iter=max_iter, tol=1e-3, random_state=seed
        )
    else:
        raise ValueError(f"unknown head kind {kind!r} (known: {', '.join(KINDS)})")
    return make_pipeline(StandardScaler(), model)


def fit_and_choose(
    kind: str,
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    grid: list[float],
    class_weight: str | None,
    max_iter: int,
    seed: int,
) -> tuple[Pipeline, dict[str, Any]]:
    """Fit one head per ``C`` on train; keep the best on validation (the smaller C on a tie)."""
    best, record = None, {"val_accuracy_by_C": {}}
    for c in sorted(grid):
        head = make_head(kind, c, class_weight, max_iter, seed).fit(x["train"], y["train"])
        accuracy = float(np.mean(head.predict(x["val"]) == y["val"]))
        record["val_accuracy_by_C"][f"{c:g}"] = round(accuracy, 6)
        if best is None or accuracy > record["val_accuracy"]:
            best, record["C"], record["val_accuracy"] = head, c, round(accuracy, 6)
    return best, record


def run(params: dict[str, Any], run_name: str, seed: int) -> dict[str, Any]:
    """The ``heads`` stage for one run under one seed (the result, plus seconds per kind)."""
    settings = params["heads"]
    run_id = P.run_id(run_name, seed)
    cache = CachedFeatures(P.features_dir(run_id))
    x = {s: cache.decode(cache.array(s)) for s in SPLITS}
    y = dict(cache.labels)
    if settings["flip"]:  # the mirrored training images, cached by the flipped stage
        x["train"] = np.concatenate([x["train"], load_flipped(run_id, cache)])
        y["train"] = np.concatenate([y["train"], y["train"]])
    class_weight = None if settings["class_weight"] == "none" else settings["class_weight"]
    usage = load_usage(P.DATASET_FILE)[cache.rows["test"]]
    result: dict[str, Any] = {
        "run": run_id,
        "class_weight": settings["class_weight"],
        "flip": settings["flip"],
        "train_images": int(len(y["train"])),
    }
    seconds = {}
    for kind in settings["kinds"]:
        start = time.perf_counter()
        head, record = fit_and_choose(
            kind, x, y, settings["C"], class_weight, settings["max_iter"], seed
        )
        predicted = head.predict(x["test"])
        test = scores(y["test"], predicted)
        result[kind] = {
            **record,
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "per_class_f1": {c: v["f1"] for c, v in test["per_class"].items()},
            "privatetest": privatetest_scores(usage, y["test"], predicted),
        }
        save_npz(predictions_file(run_id, kind), rows=cache.rows["test"], predicted=predicted)
        seconds[kind] = round(time.perf_counter() - start, 1)
    write_json(heads_file(run_id), result)
    return {**result, "seconds": seconds}


def compare_with_dense(
    run_name: str, seeds: list[int], kinds: list[str], labels: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per kind: test accuracy across seeds, and the head minus the run's dense head, paired
    on the same test images and seeds (each seed's head and dense head read the same
    features)."""
    from ferstudy.aggregate import seed_correctness

    rows, dense = seed_correctness(run_name, seeds, labels)
    out = {}
    for kind in kinds:
        correct = []
        for seed in seeds:
            with np.load(predictions_file(P.run_id(run_name, seed), kind)) as npz:
                if not np.array_equal(npz["rows"], rows):
                    raise FerError(f"{run_name} {kind}: scored on other test images; rerun heads")
                correct.append(npz["predicted"] == labels[rows])
        correct = np.array(correct)
        out[kind] = {
            "test_accuracy": summarize(correct.mean(axis=1)).as_dict(),
            "minus_dense": paired_difference(correct, dense, paired_seeds=True).as_dict(),
        }
    return out
