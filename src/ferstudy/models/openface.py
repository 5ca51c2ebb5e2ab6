"""OpenFace (nn4.small2, deepface 0.0.103) as the study cuts it: its last layer, the L2
normalisation Lambda, dropped. Pretrained weights through deepface's own download-and-cache
(``$DEEPFACE_HOME/.deepface/weights``). Input scaled to [0, 1], as deepface feeds it."""

from __future__ import annotations

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.models.weights_files import (
    deepface_weights_file,
    deepface_without_weights,
    drop_last_layer,
    load_h5,
    weight_urls,
)

keras = tf.keras


def architecture(size: int, descriptor: str | None) -> keras.Model:
    """deepface's OpenFace (nn4.small2), then its last layer (L2 normalisation) dropped."""
    from deepface.models.facial_recognition.tf import OpenFace

    with deepface_without_weights():
        return drop_last_layer(OpenFace.load_model())


def load_pretrained(model: keras.Model) -> None:
    from deepface.models.facial_recognition.tf import OpenFace

    path = deepface_weights_file("openface_weights.h5", weight_urls(OpenFace), "openface")
    load_h5(model, path, "openface")


def preprocess(x: tf.Tensor) -> tf.Tensor:
    return x / 255.0
