"""Saving and loading trained models without ever executing code from a model file.

A model folder ``models/<backbone>-<init>/`` holds ``weights.h5`` (plain arrays) and
``config.json`` (backbone, input size, training settings, the sha256 of the weights). Loading
rebuilds the architecture from the backbone registry and reads the arrays into it: no Keras
model config, Lambda or pickle is ever deserialised. A folder whose weights do not match
their recorded checksum, or written by an unknown format version, is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from ferstudy import CLASSES, __version__
from ferstudy.core import paths, runtime
from ferstudy.core.errors import FerError
from ferstudy.core.files import atomic_path, read_json, write_json
from ferstudy.models.registry import REGISTRY, build_backbone
from ferstudy.models.transfer import build_classifier

FORMAT = "ferstudy-model/1"
WEIGHTS = "weights.h5"
CONFIG = "config.json"


@dataclass
class LoadedModel:
    model: tf.keras.Model
    config: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


#: Models saved before a backbone had a descriptor choice were cut at what is now this one.
LEGACY_DESCRIPTORS = {"vggface": "fc7"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(folder: str | Path, classifier: tf.keras.Model, config: dict[str, Any]) -> None:
    """Write weights and config into ``folder`` atomically."""
    with atomic_path(folder, directory=True) as tmp:
        classifier.save_weights(str(tmp / WEIGHTS))
        full = {
            **config,
            "format": FORMAT,
            "ferstudy_version": __version__,
            "classes": list(CLASSES),
            "weights_sha256": _sha256(tmp / WEIGHTS),
        }
        write_json(tmp / CONFIG, full)


def available_models(models_dir: str | Path = paths.MODELS_DIR) -> list[str]:
    """Model folders under ``models_dir``, as run ids (``<run>/seed<seed>``) or run names."""
    root = Path(models_dir)
    found = [*root.glob(f"*/{CONFIG}"), *root.glob(f"*/seed*/{CONFIG}")] if root.is_dir() else []
    return sorted(p.parent.relative_to(root).as_posix() for p in found)


def load_model(folder: str | Path, precision: str = "fp32") -> LoadedModel:
    """Rebuild a trained classifier from its folder (see module doc for what is refused).

    ``precision="bf16"`` builds it under Keras' ``mixed_bfloat16`` policy, as the features
    of a bf16 run were computed; the tail of every run was trained in fp32.
    """
    folder = Path(folder)
    config_file, weights_file = folder / CONFIG, folder / WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        runs = ", ".join(available_models(folder.parent)) or "none"
        raise FerError(f"{folder}: not a model folder of this project (models there: {runs})")
    config = read_json(config_file)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise FerError(f"{folder}: unknown model format {config.get('format')!r}; refused")
    if config.get("backbone") not in REGISTRY or list(config.get("classes", [])) != list(CLASSES):
        raise FerError(f"{folder}: unknown backbone or classes in {CONFIG}; refused")
    if _sha256(weights_file) != config.get("weights_sha256"):
        raise FerError(f"{folder}: {WEIGHTS} does not match its recorded sha256; refused")
    runtime.set_precision(precision)
    try:
        classifier = build_classifier(
            build_backbone(
                config["backbone"],
                REGISTRY[config["backbone"]].architecture_init,
                int(config["input_size"]),
                seed=0,
                descriptor=config.get("descriptor", LEGACY_DESCRIPTORS.get(config["backbone"])),
            )
        )
        classifier.load_weights(str(weights_file))
    except (ValueError, OSError) as err:
        raise FerError(f"{folder}: weights do not fit {config['backbone']} ({err})") from None
    finally:
        runtime.set_precision("fp32")
    return LoadedModel(classifier, config, folder)
