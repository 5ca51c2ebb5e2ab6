"""Trained models as functions from 48x48 uint8 faces to the 7 emotion probabilities.

- :class:`EmotionClassifier`: one model folder of the pipeline (a study run or a fine-tuned one).
- :class:`Ensemble`: the mean of several classifiers' probabilities, optionally over each face
  and its mirror image (horizontal-flip test-time augmentation).
- :func:`load_shipped`: the model that ships inside the package (``ferstudy/shipped``), written
  by the ``export`` stage: its card names the members and the sha256 of their weights and
  configs, and a file that does not match its card is refused before it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferstudy.core.errors import FerError
from ferstudy.core.files import file_sha256, read_json
from ferstudy.data.feature_cache import extractor
from ferstudy.models.registry import get_backbone
from ferstudy.models.store import CONFIG, WEIGHTS, load_model
from ferstudy.models.transfer import image_transform, split_frozen_tail

#: Where the shipped model lives inside the installed package.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped"
#: The shipped model's card: members, their sha256, the choice and its measured scores.
CARD_FILE = "card.json"
CARD_FORMAT = "ferstudy-shipped/1"


class EmotionClassifier:
    """A trained run as a function: uint8 48x48 faces -> 7 probabilities.

    It computes exactly what the evaluation stage does: the frozen part at the run's
    precision (bf16 when its features were bf16), then the trained tail in fp32.
    """

    def __init__(self, folder: str | Path):
        exact = load_model(folder)
        self.config = exact.config
        # a run id (``<run>/seed<seed>``) for a seed folder, else the folder's name
        path = exact.path
        self.name = f"{path.parent.name}/{path.name}" if path.name.startswith("seed") else path.name
        backbone = get_backbone(exact.config["backbone"])
        transform = image_transform(backbone.preprocess, int(exact.config["input_size"]))
        if exact.config.get("mode") == "finetune":  # one network on the image, all in fp32
            self.tail, self.bf16 = exact.model, False
            self._extract = tf.function(transform, reduce_retracing=True)
            return
        layers = int(exact.config["trainable_layers"])
        self.tail = split_frozen_tail(exact.model, layers).tail
        self.bf16 = exact.config.get("precision") == "bf16"
        frozen_model = load_model(folder, precision="bf16").model if self.bf16 else exact.model
        self._extract = extractor(split_frozen_tail(frozen_model, layers).frozen, transform)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        flat = self._extract(tf.constant(faces)).numpy()
        if self.bf16:
            import ml_dtypes

            flat = flat.view(ml_dtypes.bfloat16).astype(np.float32)
        return self.tail.predict_on_batch(flat)


def mirrored(faces: np.ndarray) -> np.ndarray:
    """Each face flipped left to right (``faces`` is N x H x W)."""
    return np.ascontiguousarray(np.asarray(faces)[:, :, ::-1])


class Ensemble:
    """The mean of ``members``' probabilities; with ``flip``, over each face and its mirror."""

    def __init__(self, members: list[EmotionClassifier], flip: bool, name: str):
        if not members:
            raise FerError(f"{name}: an ensemble needs at least one member")
        self.members, self.flip, self.name = members, flip, name
        self.config: dict[str, Any] = {"mode": "shipped", "members": [m.name for m in members]}

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        views = [faces, mirrored(faces)] if self.flip else [faces]
        return np.mean([member(view) for member in self.members for view in views], axis=0)


def read_card(folder: str | Path = SHIPPED_DIR) -> dict[str, Any]:
    """The shipped model's card, after checking every member's weights against it."""
    folder = Path(folder)
    card_file = folder / CARD_FILE
    if not card_file.is_file():
        raise FerError(
            f"{card_file}: no shipped model in this install (reinstall ferstudy, or run "
            f"`dvc repro export`, or pass a model folder)"
        )
    card = read_json(card_file)
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise FerError(f"{card_file}: unknown model card format; refused")
    for member in card["members"]:
        for name, key in ((WEIGHTS, "weights_sha256"), (CONFIG, "config_sha256")):
            file = folder / member["folder"] / name
            if not file.is_file():
                raise FerError(f"{file}: missing; the model card {card_file} lists it")
            if file_sha256(file) != member[key]:
                raise FerError(f"{file}: sha256 does not match the model card {card_file}; refused")
    return card


def load_shipped(folder: str | Path = SHIPPED_DIR) -> Ensemble:
    """The model the ``export`` stage chose, as one function of faces (see :class:`Ensemble`)."""
    folder = Path(folder)
    card = read_card(folder)
    members = [EmotionClassifier(folder / member["folder"]) for member in card["members"]]
    model = Ensemble(members, bool(card["flip"]), card["name"])
    model.config = {**model.config, "card": card}
    return model


def predict_in_batches(model, faces: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``model``'s probabilities of many faces, ``batch_size`` at a time (float32, N x 7)."""
    out = [model(faces[i : i + batch_size]) for i in range(0, len(faces), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 7), np.float32)
