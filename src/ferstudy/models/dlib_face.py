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

Input: float32 RGB in [0, 255], (batch, 150, 150, 3) (``dlib_preprocess`` is the identity).
dlib takes uint8, so each value is rounded to the nearest integer (halves to even,
``numpy.rint``) and clipped to [0, 255] (:func:`to_chip`); an input already integral in
[0, 255] reaches dlib unchanged. Channels stay RGB (dlib's Python images are RGB), rows
first, no transpose. FER2013 faces are grayscale crops, so all three channels are equal and
they are not aligned the way ``get_face_chip`` aligns (eyes and nose at fixed places): the
48x48 crop is upscaled whole to 150x150 (:func:`ferstudy.models.transfer.image_transform`).

Speed: dlib-bin is built without BLAS and without CUDA (``dlib.DLIB_USE_BLAS`` and
``DLIB_USE_CUDA`` are False), so the network runs on dlib's own CPU kernels, one image at a
time, on one core, and a GPU does not help. Measured on the development machine (2 cores
shared with another job, load average ~6), uint8 48x48 batches of 64 through the features
stage's own extractor (resize + this layer): 11.4 images/s, 0.085 s of CPU per image (5-8
images/s while the other job took more of the CPU), so the ~35,900 FER2013 images take about
an hour; dlib's batch overload (a list of chips) runs at the same speed (11.5 images/s).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError

keras = tf.keras

CHIP_SIZE = 150  # dlib's aligned face chip
DESCRIPTOR_SIZE = 128
PACKAGE = "face_recognition_models"
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_LOCK = threading.Lock()  # one dlib network object; its forward pass keeps state


def model_file() -> Path:
    """Path of the weights file inside the installed ``face_recognition_models`` package.

    Found with ``importlib.util.find_spec``, without importing the package: its
    ``__init__`` imports setuptools' deprecated ``pkg_resources``, which an environment
    need not have.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FerError(
            f"dlib: the {PACKAGE} package is not installed (pip install {PACKAGE}==0.3.0); "
            f"it ships {MODEL_FILE}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise FerError(f"dlib: {path} not found; reinstall the {PACKAGE} package, which ships it")
    return path


@functools.lru_cache(maxsize=1)
def dlib_net():
    """dlib's ``face_recognition_model_v1``, loaded once per process."""
    path = model_file()
    try:
        import dlib
    except ImportError:
        raise FerError("dlib: the dlib package is not installed (pip install dlib-bin)") from None
    try:
        return dlib.face_recognition_model_v1(str(path))
    except RuntimeError as err:
        raise FerError(f"dlib: {path} is not a dlib face recognition model ({err})") from None


def to_chip(image: np.ndarray) -> np.ndarray:
    """Float RGB (150, 150, 3) -> the uint8 chip dlib takes: rounded half to even, clipped."""
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


def describe(images: np.ndarray) -> np.ndarray:
    """(N, 150, 150, 3) float RGB in [0, 255] -> (N, 128) float32 dlib descriptors."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise FerError(
            f"dlib: expected images of shape (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {images.shape}"
        )
    net = dlib_net()
    out = np.empty((len(images), DESCRIPTOR_SIZE), dtype=np.float32)
    with _LOCK:
        for i, image in enumerate(images):
            out[i] = np.asarray(net.compute_face_descriptor(to_chip(image), num_jitters=0))
    return out


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


def dlib_preprocess(x: tf.Tensor) -> tf.Tensor:
    """Float32 RGB in [0, 255] is dlib's input already (rounded to uint8 inside the layer)."""
    return tf.cast(x, tf.float32)


def load_dlib_pretrained(model: keras.Model) -> None:
    """Nothing to copy (the layer calls dlib); check that dlib and its weights file load."""
    dlib_net()
