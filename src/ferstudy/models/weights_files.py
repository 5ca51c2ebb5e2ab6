"""Pretrained weights files that other libraries download and cache (deepface, Keras
applications), and the checked copy of a weights file into the backbone as the study cuts it.

A file already in its library's cache is used as it is; a missing one is downloaded by the
library's own code, and on an offline machine that becomes a one-line error naming the
expected path and URL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError
from ferstudy.models.transfer import set_checked_weights

keras = tf.keras


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


def keras_weights_file(file_name: str, url: str, file_hash: str | None, backbone: str) -> Path:
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


def load_h5(model: keras.Model, path: Path, backbone: str) -> None:
    """Load a Keras weights file into ``model``; a file of another network is one clear line."""
    try:
        model.load_weights(str(path))
    except (ValueError, OSError) as err:
        raise FerError(f"{path}: not a weights file for {backbone} ({err})") from None


@contextlib.contextmanager
def deepface_without_weights() -> Iterator[None]:
    """Run a deepface builder with its download-and-load step turned off (random init)."""
    from deepface.commons import weight_utils

    saved = weight_utils.download_weights_if_necessary, weight_utils.load_model_weights
    weight_utils.download_weights_if_necessary = lambda file_name, source_url, **kw: file_name
    weight_utils.load_model_weights = lambda model, weight_file: model
    try:
        yield
    finally:
        weight_utils.download_weights_if_necessary, weight_utils.load_model_weights = saved


def drop_last_layer(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs, model.layers[-2].output, name=model.name)


def weight_urls(module) -> list[str]:
    """A deepface model module's ``WEIGHTS_URL``, as a list."""
    urls = module.WEIGHTS_URL
    return urls if isinstance(urls, list) else [urls]


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
