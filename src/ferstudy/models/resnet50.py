"""ResNet-50 from Keras applications without its ImageNet classification top
(``include_top=False``, the study's "no top" counts); ImageNet weights through Keras' cache
(``$KERAS_HOME/models``); Keras' own ``preprocess_input``."""

from __future__ import annotations

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.models.weights_files import keras_weights_file, load_h5

keras = tf.keras


def architecture(size: int, descriptor: str | None) -> keras.Model:
    return keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))


def load_pretrained(model: keras.Model) -> None:
    from tf_keras.src.applications import resnet

    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path = keras_weights_file(
        name, resnet.BASE_WEIGHTS_PATH + name, resnet.WEIGHTS_HASHES["resnet50"][1], "resnet50"
    )
    load_h5(model, path, "resnet50")


preprocess = keras.applications.resnet50.preprocess_input
