"""Backbone registry: pretrained weights through the project's own loading code, offline errors."""

import numpy as np
import pytest

from ferstudy.backbones import REGISTRY, build_backbone, get_backbone
from ferstudy.errors import FerError
from ferstudy.transfer import build_classifier, split_frozen_tail


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_registry_has_the_study_backbones():
    assert set(REGISTRY) == {"vggface", "openface", "resnet50", "mobilenet"}
    assert {n: b.native_input_size for n, b in REGISTRY.items()} == {
        "vggface": 224,
        "openface": 96,
        "resnet50": 224,
        "mobilenet": 224,
    }
    with pytest.raises(FerError, match="unknown backbone 'vgg'"):
        get_backbone("vgg")
    with pytest.raises(FerError, match="takes only 96x96"):
        build_backbone("openface", "random", 64, 0)


def test_openface_pretrained_through_deepface_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    source = build_backbone("openface", "random", 96, seed=5)
    weights = tmp_path / ".deepface" / "weights" / "openface_weights.h5"
    weights.parent.mkdir(parents=True)
    source.save_weights(str(weights))
    loaded = build_backbone("openface", "pretrained", 96, seed=0)
    assert _same(source, loaded)
    assert not _same(loaded, build_backbone("openface", "random", 96, seed=0))


def test_mobilenet_pretrained_through_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    source = build_backbone("mobilenet", "random", 32, seed=5)
    (tmp_path / "models").mkdir()
    source.save_weights(str(tmp_path / "models" / "mobilenet_1_0_224_tf_no_top.h5"))
    assert _same(source, build_backbone("mobilenet", "pretrained", 32, seed=0))


def test_missing_deepface_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    from deepface.models.facial_recognition.tf import OpenFace

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    monkeypatch.setattr(OpenFace, "WEIGHTS_URL", ["http://127.0.0.1:9/openface_weights.h5"])
    with pytest.raises(FerError) as err:
        build_backbone("openface", "pretrained", 96, seed=0)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / ".deepface" / "weights" / "openface_weights.h5") in message
    assert "http://127.0.0.1:9/openface_weights.h5" in message


def test_missing_keras_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    from tf_keras.src.applications import resnet

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(resnet, "BASE_WEIGHTS_PATH", "http://127.0.0.1:9/")
    with pytest.raises(FerError, match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        build_backbone("resnet50", "pretrained", 32, seed=0)


def test_vggface_cut_keeps_dropout_in_the_trainable_tail():
    cut = split_frozen_tail(build_classifier(build_backbone("vggface", "random", 224, 0)), 4)
    assert cut.boundary_shapes == [(7, 7, 512)]  # the max-pool moved into the frozen part
    kinds = [type(layer).__name__ for layer in cut.tail.layers]
    assert "Dropout" in kinds
