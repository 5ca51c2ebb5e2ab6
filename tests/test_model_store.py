"""Models load by rebuilding from the registry: nothing stored in a model folder is executed."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import saved_model

from ferstudy.core.errors import FerError
from ferstudy.models.store import load_model


def test_round_trip(tmp_path):
    folder = saved_model(tmp_path / "mobilenet-random", seed=3)
    a = load_model(folder).model
    b = load_model(folder).model
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert load_model(folder).config["backbone"] == "mobilenet"


def test_loaded_model_equals_the_saved_model(tmp_path):
    """Every weight array (by layer name) and the outputs, against the model that was saved."""
    from ferstudy.models.registry import build_backbone
    from ferstudy.models.store import save_model
    from ferstudy.models.transfer import build_classifier

    saved = build_classifier(build_backbone("mobilenet", "random", 32, seed=3))
    # move every array (BatchNormalization statistics, zero biases included) away from what
    # a fresh build holds, so that a layer the loader skipped cannot match by chance
    rng = np.random.default_rng(7)
    for layer in saved.layers:
        layer.set_weights(
            [
                w * (1 + 0.1 * rng.uniform(-1, 1, w.shape)) + 0.01 * rng.standard_normal(w.shape)
                for w in layer.get_weights()
            ]
        )
    config = {"backbone": "mobilenet", "init": "random", "input_size": 32, "precision": "fp32"}
    save_model(tmp_path / "mobilenet-random", saved, config)
    loaded = load_model(tmp_path / "mobilenet-random").model

    saved_layers = {layer.name: layer for layer in saved.layers if layer.weights}
    loaded_layers = {layer.name: layer for layer in loaded.layers if layer.weights}
    assert sorted(loaded_layers) == sorted(saved_layers)
    assert len(saved_layers) > 50  # the backbone's layers, not only the classifier's
    for name, layer in saved_layers.items():
        want = {w.name.split("/")[-1]: w.numpy() for w in layer.weights}
        got = {w.name.split("/")[-1]: w.numpy() for w in loaded_layers[name].weights}
        assert list(got) == list(want), name
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}/{key}")

    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    want = saved(x, training=False).numpy()
    got = loaded(x, training=False).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    fresh = build_classifier(build_backbone("mobilenet", "random", 32, seed=0))
    assert not np.allclose(fresh(x, training=False).numpy(), want, atol=1e-6)


def test_tampered_weights_are_refused(tmp_path):
    folder = saved_model(tmp_path / "m")
    data = bytearray((folder / "weights.h5").read_bytes())
    data[-100] ^= 0xFF
    (folder / "weights.h5").write_bytes(bytes(data))
    with pytest.raises(FerError, match="does not match its recorded sha256"):
        load_model(folder)


def test_unknown_format_or_backbone_is_refused(tmp_path):
    folder = saved_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": "ferstudy-model/99"}))
    with pytest.raises(FerError, match="unknown model format"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**config, "backbone": "evil"}))
    with pytest.raises(FerError, match="unknown backbone"):
        load_model(folder)


def test_a_keras_model_file_with_code_is_never_executed(tmp_path):
    """A full Keras model with a Lambda that would write a file, put where weights go."""
    marker = tmp_path / "pwned"
    folder = saved_model(tmp_path / "m")
    inp = tf.keras.Input((4,))
    code = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # no closure: storable
    out = tf.keras.layers.Lambda(code)(inp)
    tf.keras.Model(inp, out).save(str(folder / "weights.h5"))
    assert marker.exists()  # the stored code does run when Keras deserialises the model
    marker.unlink()
    config = json.loads((folder / "config.json").read_text())
    import hashlib

    config["weights_sha256"] = hashlib.sha256((folder / "weights.h5").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FerError, match="weights do not fit"):
        load_model(folder)
    assert not marker.exists()


def test_not_a_model_folder_lists_the_runs(tmp_path):
    saved_model(tmp_path / "openface-random", backbone="mobilenet")
    with pytest.raises(FerError, match="models there: openface-random"):
        load_model(tmp_path / "resnet50-random")
