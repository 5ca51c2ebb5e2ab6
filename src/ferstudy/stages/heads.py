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
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ferstudy.analysis.scores import privatetest_scores, scores
from ferstudy.core import paths
from ferstudy.core.files import SPLITS, load_usage, save_npz, write_json
from ferstudy.core.params import Params
from ferstudy.core.paths import heads_file, predictions_file
from ferstudy.data.feature_cache import CachedFeatures, load_flipped

KINDS = ("logistic", "linear_svm")


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


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``heads`` stage for one run under one seed (the result, plus seconds per kind)."""
    settings = params.heads
    run_id = paths.run_id(run, seed)
    cache = CachedFeatures(paths.features_dir(run_id))
    x = {s: cache.decode(cache.array(s)) for s in SPLITS}
    y = dict(cache.labels)
    if settings.flip:  # the mirrored training images, cached by the flipped stage
        x["train"] = np.concatenate([x["train"], load_flipped(run_id, cache)])
        y["train"] = np.concatenate([y["train"], y["train"]])
    class_weight = None if settings.class_weight == "none" else settings.class_weight
    usage = load_usage(paths.DATASET_FILE)[cache.rows["test"]]
    result: dict[str, Any] = {
        "run": run_id,
        "class_weight": settings.class_weight,
        "flip": settings.flip,
        "train_images": int(len(y["train"])),
    }
    seconds = {}
    for kind in settings.kinds:
        start = time.perf_counter()
        head, record = fit_and_choose(kind, x, y, settings.C, class_weight, settings.max_iter, seed)
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


def describe(result: dict[str, Any]) -> str:
    return "\n".join(
        f"heads {result['run']} {kind}: C {r['C']:g} (val accuracy {r['val_accuracy']:.4f}), "
        f"test accuracy {r['test_accuracy']:.4f}, macro-F1 {r['test_macro_f1']:.4f}; "
        f"{result['seconds'][kind]} s"
        for kind, r in result.items()
        if kind in KINDS
    )
