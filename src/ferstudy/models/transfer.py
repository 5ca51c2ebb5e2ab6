"""The study's transfer recipe: classifier on a backbone, frozen part and trainable tail.

``build_classifier`` puts the emotion classifier (Flatten when the backbone output is
spatial, then Dense(7, softmax)) on a backbone. ``split_frozen_tail`` cuts the classifier
into

- the **frozen part**: every backbone layer except the last ``trainable_layers``. Its output
  for an image never changes during training, so the features stage computes it once;
- the **tail**: the last ``trainable_layers`` backbone layers plus the classifier, rebuilt
  on a flat feature vector (the frozen part's boundary tensors flattened and concatenated;
  ResNet-50's cut crosses a skip connection, so its boundary is two tensors).

Weightless layers that act the same in training and inference (padding, pooling, flatten,
concatenate, add, activations) at the start of the tail, whose inputs are all frozen, are
moved into the frozen part: that changes no result and makes the cached features smaller.
Frozen layers always run in inference mode (BatchNormalization uses its moving statistics,
Dropout is off), as Keras runs frozen BatchNormalization and as ``base(x, training=False)``
does in Keras' transfer-learning guide. Tail layers, Dropout and BatchNormalization
included, train exactly as they would inside the full model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ferstudy import CLASSES
from ferstudy.core.errors import FerError

keras = tf.keras
layers = keras.layers

#: Weightless layers that compute the same function in training and inference.
STATELESS_LAYERS = (
    layers.ZeroPadding2D,
    layers.MaxPooling2D,
    layers.AveragePooling2D,
    layers.GlobalAveragePooling2D,
    layers.GlobalMaxPooling2D,
    layers.Flatten,
    layers.Reshape,
    layers.Permute,
    layers.Activation,
    layers.ReLU,
    layers.Concatenate,
    layers.Add,
)


class PointwiseMatmul(layers.Conv2D):
    """A 1x1, stride-1 convolution computed as the matmul it is, over the channel axis.

    Same weights (kernel ``(1, 1, in, out)``), outputs and gradients as :class:`Conv2D`; on a
    CPU, a 1x1 convolution over a 1x1 map runs several times slower as a convolution kernel
    than as a matmul.
    """

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.tensordot(inputs, kernel[0, 0], axes=[[3], [0]])


#: Layers that compute a convolution kernel (a :class:`PointwiseMatmul` computes a matmul).
CONVOLUTIONS = (
    layers.Conv1D,
    layers.Conv2D,
    layers.Conv3D,
    layers.DepthwiseConv1D,
    layers.DepthwiseConv2D,
    layers.SeparableConv1D,
    layers.SeparableConv2D,
)


def runs_convolutions(model: keras.Model) -> bool:
    """Whether any layer of ``model`` computes a convolution kernel."""
    return any(
        isinstance(layer, CONVOLUTIONS) and not isinstance(layer, PointwiseMatmul)
        for layer in model.submodules
    )


def _is_pointwise_on_one_pixel(layer: keras.layers.Layer) -> bool:
    return (
        type(layer) is layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and tuple(layer.input_shape[1:3]) == (1, 1)
    )


def pointwise_as_matmul(model: keras.Model) -> keras.Model:
    """``model`` with every 1x1 convolution over a 1x1 map computed as a matmul
    (:class:`PointwiseMatmul`); the same layers, names and weights otherwise. VGG-Face's fc7
    and fc8 are such convolutions."""
    if not any(_is_pointwise_on_one_pixel(layer) for layer in model.layers):
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if _is_pointwise_on_one_pixel(layer):
            return PointwiseMatmul.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def build_classifier(backbone: keras.Model) -> keras.Model:
    """Backbone -> [Flatten] -> Dense(7, softmax): the emotion classifier of the study."""
    x = backbone.output
    if len(x.shape) > 2:
        x = layers.Flatten(name="emotion_flatten")(x)
    out = layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="emotion")(x)
    return keras.Model(backbone.inputs, out, name=f"{backbone.name}_emotion")


def set_checked_weights(
    layer: tf.keras.layers.Layer, values: list, owner: str, source: str
) -> None:
    """Set ``layer``'s weights to ``values``; a shape that differs is refused with one line
    naming ``owner`` (the backbone) and ``source`` (where the values came from)."""
    expected = [tuple(w.shape) for w in layer.weights]
    given = [tuple(np.shape(v)) for v in values]
    if given != expected:
        raise FerError(
            f"{owner}: layer {layer.name} has weight shapes {expected}, {source} {given}"
        )
    layer.set_weights(values)


@dataclass
class FrozenTail:
    """A classifier cut in two; ``tail`` shares its layers (and weights) with the classifier."""

    frozen: keras.Model  # image batch -> list of boundary tensors
    tail: keras.Model  # flat features (batch, feature_size) -> class probabilities
    boundary_shapes: list[tuple[int, ...]]
    trainable_layer_names: list[str]  # the backbone layers the study calls trainable

    @property
    def feature_size(self) -> int:
        return int(sum(np.prod(s) for s in self.boundary_shapes))


def _node(layer: keras.layers.Layer):
    """The node that places ``layer`` in the classifier graph (its first call)."""
    return layer._inbound_nodes[0]


def _inputs_of(layer: keras.layers.Layer) -> list:
    return tf.nest.flatten(_node(layer).call_args) + tf.nest.flatten(_node(layer).call_kwargs)


def _producer(tensor) -> keras.layers.Layer:
    return tensor._keras_history.layer


def split_frozen_tail(classifier: keras.Model, trainable_layers: int) -> FrozenTail:
    """Cut a :func:`build_classifier` model into frozen part and tail (see module doc)."""
    head = {"emotion", "emotion_flatten"}
    body = [
        layer
        for layer in classifier.layers
        if not isinstance(layer, layers.InputLayer) and layer.name not in head
    ]
    if not 0 <= trainable_layers <= len(body):
        raise FerError(f"trainable_layers must be between 0 and {len(body)}")
    tail = body[len(body) - trainable_layers :]
    trainable_names = [layer.name for layer in tail]
    tail += [layer for layer in classifier.layers if layer.name in head]
    in_tail = {id(layer) for layer in tail}

    # Move stateless layers fed only by frozen tensors into the frozen part.
    for layer in list(tail):
        if isinstance(layer, STATELESS_LAYERS) and all(
            id(_producer(t)) not in in_tail
            for t in _inputs_of(layer)
            if hasattr(t, "_keras_history")
        ):
            tail.remove(layer)
            in_tail.discard(id(layer))

    boundary, seen = [], set()
    for layer in tail:
        for t in _inputs_of(layer):
            if (
                hasattr(t, "_keras_history")
                and id(_producer(t)) not in in_tail
                and id(t) not in seen
            ):
                seen.add(id(t))
                boundary.append(t)
    frozen = keras.Model(classifier.inputs, boundary, name="frozen")
    for layer in classifier.layers:
        layer.trainable = id(layer) in in_tail

    shapes = [tuple(int(d) for d in t.shape[1:]) for t in boundary]
    sizes = [int(np.prod(s)) for s in shapes]
    features = keras.Input((sum(sizes),), name="features")
    parts = tf.split(features, sizes, axis=1) if len(sizes) > 1 else [features]
    tensor_map = {
        id(t): layers.Reshape(shape, name=f"boundary_{i}")(part)
        for i, (t, shape, part) in enumerate(zip(boundary, shapes, parts))
    }

    def remap(x):
        return tensor_map[id(x)] if hasattr(x, "_keras_history") else x

    for layer in tail:
        node = _node(layer)
        args = tf.nest.map_structure(remap, node.call_args)
        kwargs = tf.nest.map_structure(remap, node.call_kwargs)
        outputs = layer(*args, **kwargs)
        for original, rebuilt in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            tensor_map[id(original)] = rebuilt
    tail_model = keras.Model(features, tensor_map[id(classifier.output)], name="tail")
    return FrozenTail(frozen, tail_model, shapes, trainable_names)


def frozen_batchnorm_layers(frozen: keras.Model) -> list[keras.layers.Layer]:
    """The BatchNormalization layers of a frozen part, in the model's layer order."""
    return [layer for layer in frozen.layers if isinstance(layer, layers.BatchNormalization)]


def recalibrate_batchnorm(frozen: keras.Model, batches) -> int:
    """Re-estimate the moving statistics of the frozen part's BatchNormalization (AdaBN).

    A randomly initialised BatchNormalization has moving mean 0 and variance 1, so in
    inference mode (how frozen layers run) it renormalises nothing. This sets each layer's
    moving mean and variance to the average, over ``batches`` of images (already transformed
    to the network's input), of its per-batch mean and variance, with every layer normalising
    by batch statistics on the way (as PyTorch's ``update_bn`` does). Only the statistics
    change; the layers stay frozen and run in inference mode afterwards. Returns the number
    of images seen.
    """
    bn_layers = frozen_batchnorm_layers(frozen)
    if not bn_layers:
        return 0
    saved = [(layer.trainable, layer.momentum) for layer in bn_layers]
    for layer in bn_layers:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
        layer.trainable = True  # Keras runs a non-trainable BatchNormalization in inference mode
    seen = 0
    try:
        for step, batch in enumerate(batches, start=1):
            for layer in bn_layers:
                layer.momentum = 1.0 - 1.0 / step  # moving = running mean of batch statistics
            frozen(batch, training=True)
            seen += int(batch.shape[0])
    finally:
        for layer, (trainable, momentum) in zip(bn_layers, saved):
            layer.trainable, layer.momentum = trainable, momentum
    return seen


def flatten_boundary(outputs) -> tf.Tensor:
    """Frozen-part outputs -> one (batch, feature_size) tensor, in the tail's input layout."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    flat = [tf.reshape(t, (tf.shape(t)[0], -1)) for t in outputs]
    return flat[0] if len(flat) == 1 else tf.concat(flat, axis=1)


def image_transform(preprocess, input_size: int):
    """uint8 (batch, 48, 48) grayscale -> the backbone's input: 3 channels, resized, preprocessed.

    The same function feeds the features stage, the evaluation and the predictor.
    """

    def transform(images: tf.Tensor) -> tf.Tensor:
        x = tf.cast(images, tf.float32)[..., None]
        x = tf.image.resize(x, (input_size, input_size), method="bilinear")
        x = tf.image.grayscale_to_rgb(x)
        return preprocess(x)

    return transform


def predict_images(
    model: keras.Model, transform, images: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities of uint8 ``(n, 48, 48)`` images through a full classifier."""
    infer = tf.function(lambda x: model(transform(x), training=False), reduce_retracing=True)
    out = [infer(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)
