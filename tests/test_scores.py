"""evaluate.scores on small cases computed by hand (and checked against scikit-learn)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from ferstudy import CLASSES
from ferstudy.stages.evaluate import scores

# 10 test images of the first four classes; sad, surprise and neutral never occur.
#        angry    disgust fear happy
LABELS = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
PREDICTED = np.array([0, 0, 1, 1, 1, 2, 3, 3, 0, 2])
# By hand (TP, FP, FN) per class:
#   angry   2, 1 (a happy called angry), 1 (an angry called disgust): P 2/3, R 2/3, F1 2/3
#   disgust 2, 1 (the angry one), 0: P 2/3, R 1, F1 2*(2/3)/(5/3) = 0.8
#   fear    1, 1 (a happy called fear), 0: P 1/2, R 1, F1 2*(1/2)/(3/2) = 2/3
#   happy   2, 0, 2: P 1, R 1/2, F1 2/3
#   sad, surprise, neutral: no image, no prediction: P = R = F1 = 0 (zero_division=0)
# accuracy 7/10; macro-F1 over all seven classes (2/3 + 0.8 + 2/3 + 2/3) / 7 = 2.8 / 7 = 0.4
HAND = {
    "angry": (2 / 3, 2 / 3, 2 / 3, 3),
    "disgust": (2 / 3, 1.0, 0.8, 2),
    "fear": (0.5, 1.0, 2 / 3, 1),
    "happy": (1.0, 0.5, 2 / 3, 4),
    "sad": (0.0, 0.0, 0.0, 0),
    "surprise": (0.0, 0.0, 0.0, 0),
    "neutral": (0.0, 0.0, 0.0, 0),
}
HAND_MATRIX = [  # rows: true class, columns: predicted class
    [2, 1, 0, 0, 0, 0, 0],
    [0, 2, 0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0],
    [1, 0, 1, 2, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
]


@pytest.fixture(scope="module")
def result():
    return scores(LABELS, PREDICTED)


def test_accuracy_by_hand(result):
    assert result["accuracy"] == pytest.approx(0.7, abs=1e-6)


def test_macro_f1_by_hand_over_all_seven_classes(result):
    assert result["macro_f1"] == pytest.approx(0.4, abs=1e-6)
    # the mean over the 4 classes that occur would be 0.7: absent classes count as 0
    assert result["macro_f1"] != pytest.approx(2.8 / 4, abs=1e-3)


def test_per_class_precision_recall_f1_support_by_hand(result):
    assert list(result["per_class"]) == list(CLASSES)
    for name, (precision, recall, f1, support) in HAND.items():
        got = result["per_class"][name]
        assert got["precision"] == pytest.approx(precision, abs=1e-6), name
        assert got["recall"] == pytest.approx(recall, abs=1e-6), name
        assert got["f1"] == pytest.approx(f1, abs=1e-6), name
        assert got["support"] == support, name


def test_confusion_matrix_rows_are_true_classes(result):
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (7, 7)
    assert matrix.tolist() == HAND_MATRIX
    happy, angry, fear = CLASSES.index("happy"), CLASSES.index("angry"), CLASSES.index("fear")
    assert matrix[happy, angry] == 1  # a happy face predicted angry: row true, column predicted
    assert matrix[angry, happy] == 0
    assert matrix[happy, fear] == 1 and matrix[fear, happy] == 0
    assert matrix.sum() == len(LABELS)
    assert matrix.sum(axis=1).tolist() == [HAND[c][3] for c in CLASSES]  # rows sum to support


def test_a_class_that_is_only_predicted_or_never_seen_keeps_its_row_and_column():
    labels = np.array([0, 1, 1])
    predicted = np.array([6, 1, 1])  # neutral predicted, never true; classes 2..5 never occur
    result = scores(labels, predicted)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (7, 7)
    assert matrix[0, 6] == 1 and matrix[1, 1] == 2
    assert matrix[6].sum() == 0 and matrix[:, 6].sum() == 1
    assert matrix[2:6].sum() == 0 and matrix[:, 2:6].sum() == 0
    neutral = result["per_class"]["neutral"]
    assert neutral == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["per_class"]["angry"]["recall"] == 0.0
    assert result["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["macro_f1"] == pytest.approx(1.0 / 7, abs=1e-6)  # only disgust: F1 1


def test_labels_shifted_by_one_change_the_accuracy(result):
    shifted = scores(LABELS, (PREDICTED + 1) % len(CLASSES))
    assert shifted["accuracy"] != result["accuracy"]
    # by hand: only the last image (happy, predicted fear) becomes right, as happy
    assert shifted["accuracy"] == pytest.approx(0.1, abs=1e-6)
    assert scores(LABELS, LABELS)["accuracy"] == 1.0
    assert scores(LABELS, (LABELS + 1) % 7)["accuracy"] == 0.0
    # shifting predictions moves every count one column to the right
    matrix = np.array(shifted["confusion_matrix"])
    np.testing.assert_array_equal(matrix, np.roll(np.array(HAND_MATRIX), 1, axis=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 500)
    predicted = np.where(
        rng.random(500) < 0.4, labels, rng.integers(0, 6, 500)
    )  # neutral only when right
    result = scores(labels, predicted)
    every = list(range(7))
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert result["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, labels=every, average="macro", zero_division=0), abs=1e-6
    )
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=every, zero_division=0
    )
    for i, name in enumerate(CLASSES):
        got = result["per_class"][name]
        assert got["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert got["recall"] == pytest.approx(recall[i], abs=1e-6)
        assert got["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert got["support"] == support[i]
    assert result["confusion_matrix"] == confusion_matrix(labels, predicted, labels=every).tolist()


def test_macro_f1_by_hand_equals_scikit_learn():
    every = list(range(7))
    assert f1_score(
        LABELS, PREDICTED, labels=every, average="macro", zero_division=0
    ) == pytest.approx(0.4)


def test_result_is_plain_json():
    result = scores(LABELS, PREDICTED)
    assert json.loads(json.dumps(result)) == result


def test_python_lists_are_compared_element_by_element():
    from ferstudy.analysis.scores import scores as analysis_scores

    assert analysis_scores([0, 1, 2, 3], [0, 1, 2, 4])["accuracy"] == 0.75
    assert analysis_scores((5, 5), [5, 6])["accuracy"] == 0.5
