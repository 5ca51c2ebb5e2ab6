"""dlib's face-recognition ResNet as a frozen embedding backbone: 150x150 RGB face -> 128 values.

Network and weights: ``dlib_face_recognition_resnet_model_v1.dat`` (22,466,066 bytes, sha256
``55533b28...8719da30``) as shipped inside the ``face_recognition_models`` package, version
0.3.0 (Adam Geitgey; a ~100 MB sdist that also carries three other dlib models), run by dlib's
own C++ code through the ``dlib-bin`` binary wheels (dlib 20.0.1, Boost Software License):
``dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)``, the overload that
takes one *already aligned* 150x150 face chip (as ``dlib.get_face_chip`` cuts it) and no
landmarks, ``num_jitters=0``. Nothing is downloaded; nothing is converted to Keras weights:
the Keras layer below calls dlib itself, so what the study measures is dlib's own network.

Licence: Davis King's dlib-models README says of all the models there "anyone can do whatever
they want with these model files as I've released them into the public domain", and
``face_recognition_models`` 0.3.0 ships a ``LICENSE`` file that is CC0 1.0 Universal (its
README: "licensed in the public domain or under CC0 1.0 Universal"), although that
package's own metadata says "MIT license". (Of the package's other files,
``shape_predictor_68_face_landmarks.dat`` carries a no-commercial-use note from the 300-W
dataset's authors; this module does not use it.) The training data (FaceScrub, VGG-Face
and images scraped from the internet) have their own terms.

What it was trained for: face *identity*. A ResNet-34 variant with 29 conv layers and half
the filters, trained from scratch on about 3 million faces of 7,485 identities (FaceScrub,
VGG-Face and web images, no LFW identities) with a pairwise hinge metric loss that projects
identities into balls of radius 0.6; 99.38% (+/- 0.27) on LFW (dlib-models README). Its
128-value descriptor is the network's last output: there is no classification top to drop,
so the backbone is the whole network, and it is fully frozen (``Backbone.frozen_only``):
no layer of it is visible to Keras, so ``trainable_layers`` must be 0 and the study's
recommended recipe, every backbone layer frozen and fully connected layers on top, is the
only one. It has no random initialisation (dlib ships the network only with its weights).

Input: float32 RGB in [0, 255], (batch, 150, 150, 3) (``preprocess`` is the identity).
dlib takes uint8, so each value is rounded to the nearest integer (halves to even,
``numpy.rint``) and clipped to [0, 255] (:func:`ferstudy.models.dlib_net.to_chip`); an
input already integral in [0, 255] reaches dlib unchanged. Channels stay RGB (dlib's Python
images are RGB), rows first, no transpose. FER2013 faces are grayscale crops, so all three
channels are equal and they are not aligned the way ``get_face_chip`` aligns (eyes and nose
at fixed places): the 48x48 crop is upscaled whole to 150x150
(:func:`ferstudy.models.transfer.image_transform`).

Speed: dlib-bin is built without BLAS and without CUDA (``dlib.DLIB_USE_BLAS`` and
``DLIB_USE_CUDA`` are False), so the network runs on dlib's own CPU kernels, one image at a
time, on one core, holding Python's lock; a GPU does not help. So the layer spreads each batch
over one worker process per core (:mod:`ferstudy.models.dlib_net`), each with its own copy
of the network.
"""

from __future__ import annotations

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError
from ferstudy.models.dlib_net import CHIP_SIZE, DESCRIPTOR_SIZE, describe, dlib_net

keras = tf.keras


@keras.utils.register_keras_serializable(package="ferstudy")
class DlibDescriptor(keras.layers.Layer):
    """dlib's face-recognition network as a weightless, frozen Keras layer.

    (batch, 150, 150, 3) float32 RGB in [0, 255] -> (batch, 128) float32. Runs dlib on the
    CPU through ``tf.numpy_function``, always in float32 (also under a bf16 policy); no
    gradient flows through it.
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.trainable = False

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)
        out = tf.numpy_function(describe, [x], tf.float32, stateful=False, name="dlib_descriptor")
        out.set_shape([inputs.shape[0], DESCRIPTOR_SIZE])
        return out

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], DESCRIPTOR_SIZE])

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("trainable", None)
        config.pop("dtype", None)
        return config


def build_dlib(input_size: int = CHIP_SIZE) -> keras.Model:
    """Input (150, 150, 3) -> :class:`DlibDescriptor` -> 128 values. Other sizes refused."""
    if input_size != CHIP_SIZE:
        raise FerError(
            f"dlib takes only {CHIP_SIZE}x{CHIP_SIZE} input (got input_size {input_size})"
        )
    inputs = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="input")
    return keras.Model(inputs, DlibDescriptor(name="dlib_resnet_v1")(inputs), name="dlib")


def architecture(size: int, descriptor: str | None) -> keras.Model:
    """The port's builder (the registry's signature): :func:`build_dlib`."""
    return build_dlib(size)


def preprocess(x: tf.Tensor) -> tf.Tensor:
    """Float32 RGB in [0, 255] is dlib's input already (rounded to uint8 inside the layer)."""
    return tf.cast(x, tf.float32)


def load_pretrained(model: keras.Model) -> None:
    """Nothing to copy (the layer calls dlib); check that dlib and its weights file load."""
    dlib_net()
