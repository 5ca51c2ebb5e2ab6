"""VGG-Face (deepface 0.0.103's ``base_model()``) as the study cuts it.

Two descriptors: ``fc8`` (default, the study's: deepface's 2022 definition
``Model(base.input, base.layers[-2].output)``, the Flatten over fc8, 2,622 values) and ``fc7``
(deepface 0.0.103's ``Flatten()(base.layers[-5].output)``, 4,096 values). Both are built from
deepface's own ``base_model()`` and take the same weights file, fetched by deepface's own
download-and-cache (``$DEEPFACE_HOME/.deepface/weights``). The descriptor's Flatten is the
last layer, dropped. Input scaled to [0, 1], as deepface feeds the network.
"""

from __future__ import annotations

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.models.weights_files import (
    copy_weights,
    deepface_weights_file,
    load_h5,
    weight_urls,
)

keras = tf.keras

#: Index, in deepface's ``base_model().layers``, of the layer each descriptor flattens.
DESCRIPTORS = {"fc8": -3, "fc7": -5}


def architecture(size: int, descriptor: str | None) -> keras.Model:
    """deepface's VGG-Face descriptor, then its last layer (the Flatten) dropped.

    ``fc8``: deepface 2022's ``Model(base.input, base.layers[-2].output)`` is the Flatten over
    fc8, so without it the backbone ends at fc8 (1x1x2622). ``fc7``: deepface 0.0.103's
    ``Flatten()(base.layers[-5].output)``, so it ends at fc7 (1x1x4096).
    """
    from deepface.models.facial_recognition.tf import VGGFace

    base = VGGFace.base_model()
    end = base.layers[DESCRIPTORS[descriptor or "fc8"]]
    return keras.Model(base.inputs, end.output, name=f"vggface_{descriptor or 'fc8'}")


def load_pretrained(model: keras.Model) -> None:
    from deepface.models.facial_recognition.tf import VGGFace

    path = deepface_weights_file("vgg_face_weights.h5", weight_urls(VGGFace), "vggface")
    # The file holds the whole identity classifier (deepface's base_model): load it there with
    # deepface's own loader and copy the layers ours shares with it.
    full = VGGFace.base_model()
    load_h5(full, path, "vggface")
    copy_weights(model, full, "vggface")


def preprocess(x: tf.Tensor) -> tf.Tensor:
    return x / 255.0
