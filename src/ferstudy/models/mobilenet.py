"""MobileNet v1 (alpha 1.0) from Keras applications without its ImageNet classification top;
ImageNet weights through Keras' cache (``$KERAS_HOME/models``); Keras' own
``preprocess_input``."""

from __future__ import annotations

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.models.weights_files import keras_weights_file, load_h5

keras = tf.keras


def architecture(size: int, descriptor: str | None) -> keras.Model:
    return keras.applications.MobileNet(
        include_top=False, weights=None, alpha=1.0, input_shape=(size, size, 3)
    )


def load_pretrained(model: keras.Model) -> None:
    from tf_keras.src.applications import mobilenet

    rows = model.input_shape[1]
    rows = rows if rows in (128, 160, 192, 224) else 224  # as Keras picks the file
    name = f"mobilenet_1_0_{rows}_tf_no_top.h5"
    path = keras_weights_file(name, mobilenet.BASE_WEIGHT_PATH + name, None, "mobilenet")
    load_h5(model, path, "mobilenet")


preprocess = keras.applications.mobilenet.preprocess_input
