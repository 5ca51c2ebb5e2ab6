"""Backbone registry: pretrained weights through the project's own loading code, offline errors."""

import numpy as np
import pytest

from ferstudy.core.errors import FerError
from ferstudy.models.registry import REGISTRY, build_backbone, get_backbone
from ferstudy.models.transfer import build_classifier, split_frozen_tail


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_registry_has_the_study_backbones():
    assert {n: b.native_input_size for n, b in REGISTRY.items()} == {
        "vggface": 224,
        "openface": 96,
        "resnet50": 224,
        "mobilenet": 224,
        "mobilenetv2": 224,
        "facenet": 160,
        "onet": 48,
        "dlib": 150,
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


def _trainable(cut) -> int:
    return int(sum(np.prod(w.shape) for w in cut.tail.trainable_weights))


def test_vggface_default_is_the_studys_fc8_cut():
    """deepface 2022: descriptor = Flatten over fc8; dropped, the last 4 layers are
    dropout, fc7, dropout, fc8: fc7 and fc8 train on frozen fc6 output (4,096 values), as
    matmuls (1x1 convolutions over a 1x1 map)."""
    cut = split_frozen_tail(build_classifier(build_backbone("vggface", "random", 224, 0)), 4)
    assert cut.boundary_shapes == [(1, 1, 4096)]
    assert [type(layer).__name__ for layer in cut.tail.layers][-5:-2] == [
        "PointwiseMatmul",
        "Dropout",
        "PointwiseMatmul",
    ]
    assert _trainable(cut) == 16_781_312 + 10_742_334 + (2622 * 7 + 7)  # fc7, fc8, classifier


def test_vggface_fc7_descriptor_keeps_the_0_0_103_cut():
    model = build_backbone("vggface", "random", 224, 0, descriptor="fc7")
    cut = split_frozen_tail(build_classifier(model), 4)
    assert cut.boundary_shapes == [(7, 7, 512)]  # the max-pool moved into the frozen part
    assert "Dropout" in [type(layer).__name__ for layer in cut.tail.layers]
    with pytest.raises(FerError, match="unknown descriptor 'fc6'"):
        build_backbone("vggface", "random", 224, 0, descriptor="fc6")


def _compare_with_file(model, reference, path=None):
    """Every weighted layer of ``model`` equals the same-position layer of ``reference``
    (after ``reference`` loaded ``path``, when given: what was written to the file)."""
    if path is not None:
        reference.load_weights(str(path))
    theirs = [layer for layer in reference.layers if layer.weights]
    ours = [layer for layer in model.layers if layer.weights]
    assert len(ours) <= len(theirs)
    for mine, source in zip(ours, theirs):
        for a, b in zip(mine.get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=mine.name)
    return len(ours)


def test_vggface_pretrained_loads_deepfaces_own_base_model_file(tmp_path, monkeypatch):
    """The pretrained path reads the file deepface's own base_model() writes, for both cuts."""
    import tensorflow as tf
    from deepface.models.facial_recognition.tf import VGGFace

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    tf.keras.utils.set_random_seed(11)
    full = VGGFace.base_model()
    path = tmp_path / ".deepface" / "weights" / "vgg_face_weights.h5"
    path.parent.mkdir(parents=True)
    full.save_weights(str(path))  # the file holds exactly the weights ``full`` has
    fc8 = build_backbone("vggface", "pretrained", 224, seed=0)
    assert _compare_with_file(fc8, full) == 16  # 13 conv + fc6, 7, 8
    del fc8
    fc7 = build_backbone("vggface", "pretrained", 224, seed=0, descriptor="fc7")
    assert _compare_with_file(fc7, full) == 15


def test_openface_pretrained_loads_deepfaces_own_model_file(tmp_path, monkeypatch):
    """deepface 0.0.103's OpenFace (its L2 layer included), saved with random weights, loads
    into the project's OpenFace (L2 dropped) layer by layer."""
    from deepface.models.facial_recognition.tf import OpenFace

    from ferstudy.models.weights_files import deepface_without_weights

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    with deepface_without_weights():
        theirs = OpenFace.load_model()
    theirs.set_weights(
        [np.random.default_rng(i).normal(size=w.shape) for i, w in enumerate(theirs.weights)]
    )
    path = tmp_path / ".deepface" / "weights" / "openface_weights.h5"
    path.parent.mkdir(parents=True)
    theirs.save_weights(str(path))
    ours = build_backbone("openface", "pretrained", 96, seed=0)
    with deepface_without_weights():
        reference = OpenFace.load_model()
    assert _compare_with_file(ours, reference, path) == len(
        [layer for layer in theirs.layers if layer.weights]
    )


def test_a_weights_file_of_another_shape_is_refused(tmp_path):
    from ferstudy.models.weights_files import copy_weights

    small = build_backbone("mobilenet", "random", 32, seed=0)
    other = build_backbone("resnet50", "random", 32, seed=0)
    with pytest.raises(FerError, match="has weight shapes"):
        copy_weights(small, other, "mobilenet")
