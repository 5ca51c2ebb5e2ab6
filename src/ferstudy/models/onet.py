"""MTCNN's ONet (output network) as a backbone: its trunk up to the 256-unit layer, heads dropped.

ONet is the third stage of MTCNN (Zhang et al., 2016, "Joint Face Detection and Alignment
using Multi-task Cascaded Convolutional Networks"), trained to refine 48x48 face proposals:
face / non-face classification, bounding-box regression and five facial landmarks.

Architecture and weights are those of the ``mtcnn`` package, version 1.0.0 (Iván de Paz
Centeno, MIT licence), ``mtcnn/network/onet.py`` and ``mtcnn/assets/weights/onet.lz4``
(1,557,637 bytes: 21 float32 arrays, 389,040 parameters with the heads, 384,928 without), read
with mtcnn's own public loader ``mtcnn.utils.tensorflow.load_weights`` (joblib + lz4) into
mtcnn's own ``ONet`` model, exactly as ``mtcnn.stages.StageONet`` does, and copied from
there layer by layer. Nothing is downloaded.

Input: mtcnn 1.0.0 normalises the whole RGB image with ``(x - 127.5) / 128``
(``mtcnn.utils.images.normalize_images``), then crops and bilinearly resizes each proposal to
48x48 (``tf.image.crop_and_resize``), rows first: no transpose and no BGR swap (images come
from ``tf.image.decode_image``, RGB). Normalisation is affine and the resize linear, so
normalising a 48x48 RGB crop gives the network what mtcnn gives it. (mtcnn < 1.0 fed
transposed crops; 1.0.0 does not, and its ONet has a ``Permute((2, 1, 3))`` before flatten.)
"""

from __future__ import annotations

from importlib.resources import files

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError

keras = tf.keras
layers = keras.layers

NATIVE_INPUT_SIZE = 48
MIN_INPUT_SIZE = 27  # smallest size whose feature maps stay non-empty
WEIGHTS_FILE = "onet.lz4"
HEADS = ("fc6-1", "fc6-2", "fc6-3")  # mtcnn's box, landmark and face/non-face heads


def build_onet(input_size: int = NATIVE_INPUT_SIZE) -> keras.Model:
    """ONet trunk, randomly initialised (Keras defaults), output the 256-unit PReLU.

    Same layers, order, padding and PReLU shared axes as mtcnn 1.0.0's ``ONet``; weighted
    layers carry mtcnn's names. Any ``input_size >= 27`` builds (random init), but fc5's
    input size follows the input size, so mtcnn's pretrained weights fit only 48
    (1152 = 3x3x128 inputs): treat the backbone as fixed-size 48.
    """
    if input_size < MIN_INPUT_SIZE:
        raise FerError(f"onet: input_size {input_size} is below the minimum of {MIN_INPUT_SIZE}")
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = inputs
    blocks = ((32, 3, (3, "same")), (64, 3, (3, "valid")), (64, 3, (2, "same")), (128, 2, None))
    for i, (filters, kernel, pool) in enumerate(blocks, start=1):
        x = layers.Conv2D(filters, kernel, padding="valid", name=f"conv{i}")(x)
        x = layers.PReLU(shared_axes=[1, 2], name=f"prelu{i}")(x)
        if pool is not None:
            x = layers.MaxPooling2D(pool[0], strides=2, padding=pool[1], name=f"pool{i}")(x)
    x = layers.Permute((2, 1, 3), name="permute")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, name="fc5")(x)
    x = layers.PReLU(name="prelu5")(x)
    return keras.Model(inputs, x, name="onet")


def mtcnn_onet() -> keras.Model:
    """mtcnn's own full ONet (with heads), built and loaded as ``StageONet`` does."""
    from mtcnn.network.onet import ONet
    from mtcnn.utils.tensorflow import load_weights

    net = ONet()
    net.build()
    # An absolute path: load_weights would first try a file of that name in the working dir.
    net.set_weights(load_weights(str(files("mtcnn.assets.weights") / WEIGHTS_FILE)))
    return net


def architecture(size: int, descriptor: str | None) -> keras.Model:
    """The port's builder (the registry's signature): :func:`build_onet`."""
    return build_onet(size)


def load_pretrained(model: keras.Model) -> None:
    """Copy mtcnn's shipped ONet weights into ``model`` (from :func:`build_onet`) by layer."""
    source = {layer.name: layer for layer in mtcnn_onet().layers if layer.weights}
    trunk = {name for name in source if name not in HEADS}
    ours = [layer for layer in model.layers if layer.weights]
    if {layer.name for layer in ours} != trunk:
        raise FerError(
            f"onet: model's weighted layers {sorted(layer.name for layer in ours)} "
            f"are not mtcnn's ONet trunk {sorted(trunk)}"
        )
    for layer in ours:
        values = source[layer.name].get_weights()
        want = [tuple(w.shape) for w in layer.weights]
        got = [v.shape for v in values]
        if want != got:
            raise FerError(f"onet: layer {layer.name}: model weights {want} but mtcnn's are {got}")
        layer.set_weights(values)


def preprocess(x: tf.Tensor) -> tf.Tensor:
    """Float32 RGB in [0, 255], (batch, H, W, 3) -> ONet input: ``(x - 127.5) / 128``.

    As mtcnn 1.0.0: same channel order (RGB), no transpose.
    """
    return (x - 127.5) / 128.0
