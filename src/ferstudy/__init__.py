"""ferstudy: identify and compare facial emotion recognition backbones on FER2013.

deepface builds its networks with tf_keras (Keras 2); the environment variable below makes
``tf.keras`` resolve to the same Keras, so it is set before TensorFlow is ever imported.
"""

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "ferstudy must be imported before tensorflow (or run with TF_USE_LEGACY_KERAS=1): "
        "deepface's networks need tf.keras to be tf_keras (Keras 2)"
    )
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

#: The seven FER2013 emotions in the challenge's label order (label i is CLASSES[i]).
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Public functions of ``ferstudy.tools.predict``, reached as ``ferstudy.analyze`` without
#: loading TensorFlow at ``import ferstudy``.
_API = ("analyze", "analyze_video")


def __getattr__(name: str):  # noqa: ANN202  (PEP 562 module attribute)
    if name in _API:
        import importlib  # by name: the stages' import closures do not include the tools

        return getattr(importlib.import_module("ferstudy.tools.predict"), name)
    raise AttributeError(f"module 'ferstudy' has no attribute {name!r}")
