"""Classification scores of predicted labels, and FER2013's PrivateTest subset.

Pure NumPy/scikit-learn/SciPy: every stage that scores predictions (evaluate, heads, the
``fer`` baseline, aggregate) and the report use these, so one number is computed one way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ferstudy import CLASSES

#: FER2013's final held-out usage: the one subset on which every model here compares fairly.
PRIVATE_TEST = "PrivateTest"
#: Confidence of every interval this project reports.
CONFIDENCE = 0.95


def is_privatetest(usage: np.ndarray) -> np.ndarray:
    """Boolean mask of the images whose FER2013 usage is PrivateTest."""
    return np.asarray(usage).astype(str) == PRIVATE_TEST


def scores(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``labels`` and ``predicted`` are class indices, as arrays or any sequence of the same
    length (compared element by element).
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(len(CLASSES)), zero_division=0
    )
    return {
        "accuracy": round(float(np.mean(labels == predicted)), 6),
        "macro_f1": round(float(np.mean(f1)), 6),
        "per_class": {
            c: {
                "precision": round(float(p), 6),
                "recall": round(float(r), 6),
                "f1": round(float(f), 6),
                "support": int(s),
            }
            for c, p, r, f, s in zip(CLASSES, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(
            labels, predicted, labels=range(len(CLASSES))
        ).tolist(),
    }


def short_scores(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 and the number of images."""
    s = scores(labels, predicted)
    return {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "images": int(len(labels))}


def privatetest_scores(
    usage: np.ndarray, labels: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    """Accuracy and macro-F1 on the test images whose FER2013 usage is PrivateTest.

    Those are the images that models trained on FER2013's Training (and PublicTest) images,
    like the outside reference's, never saw: the one subset on which all compare fairly.
    """
    private = is_privatetest(usage)
    if not private.any():
        return {"images": 0, "accuracy": None, "macro_f1": None}
    s = scores(labels[private], predicted[private])
    return {"images": int(private.sum()), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}


def wilson(correct: int, images: int) -> tuple[float, float]:
    """95 % Wilson interval of a proportion over ``images`` (one fixed model: images only)."""
    ci = binomtest(int(correct), int(images)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)
