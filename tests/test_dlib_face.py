"""dlib backbone: our Keras layer computes dlib's own descriptor; pretrained only, fully frozen."""

from __future__ import annotations

import contextlib
import select
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import fer_faces

from ferstudy.core.errors import FerError
from ferstudy.core.params import BACKBONE_NAMES, PRETRAINED_ONLY, validate_params
from ferstudy.data.feature_cache import extractor
from ferstudy.models import dlib_net
from ferstudy.models.dlib_face import DlibDescriptor, build_dlib
from ferstudy.models.dlib_net import model_file, to_chip
from ferstudy.models.registry import REGISTRY, build_backbone, get_backbone
from ferstudy.models.transfer import build_classifier, image_transform, split_frozen_tail

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def reference():
    """dlib's own network, loaded here independently of ferstudy's cached one."""
    return dlib.face_recognition_model_v1(str(model_file()))


def _dlib_own(net, chips: np.ndarray) -> np.ndarray:
    """dlib's descriptor of each uint8 150x150 RGB chip (the aligned-chip overload)."""
    return np.array([np.array(net.compute_face_descriptor(c)) for c in chips])


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return np.stack(fer_faces(4))


@pytest.fixture(scope="module")
def cut():
    return split_frozen_tail(build_classifier(build_backbone("dlib", "pretrained", 150, 0)), 0)


def test_layer_matches_dlib_on_real_faces(faces, cut, reference) -> None:
    transform = image_transform(get_backbone("dlib").preprocess, 150)
    x = transform(tf.constant(faces)).numpy()  # the pipeline's own upscaled RGB float input
    assert x.shape == (4, 150, 150, 3) and x.dtype == np.float32
    chips = np.clip(np.round(x), 0, 255).astype(np.uint8)  # rounded as the module documents
    want = _dlib_own(reference, chips)
    got = cut.frozen(tf.constant(x)).numpy()
    assert got.shape == (4, 128) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # the same chips as integral floats reach dlib unchanged
    np.testing.assert_allclose(cut.frozen(chips.astype(np.float32)).numpy(), want, atol=1e-6)
    # the features stage's own compiled extractor on the uint8 48x48 faces
    np.testing.assert_allclose(extractor(cut.frozen, transform)(faces).numpy(), want, atol=1e-6)
    # not vacuous: different faces, different descriptors
    assert np.linalg.norm(want[0] - want[1]) > 0.1


def test_layer_keeps_rgb_order_and_orientation(faces, cut, reference) -> None:
    """FER2013 is grayscale (all channels equal): a colour chip checks channel order too."""
    face = to_chip(image_transform(lambda v: v, 150)(faces[:1]).numpy()[0])[..., 0]
    chip = np.stack([face, face[:, ::-1], 255 - face], axis=-1)[None]
    want = _dlib_own(reference, chip)
    np.testing.assert_allclose(cut.frozen(chip.astype(np.float32)).numpy(), want, atol=1e-6)
    # not vacuous: dlib tells BGR and a transposed chip from the chip itself
    for changed in (chip[..., ::-1], chip.transpose(0, 2, 1, 3)):
        assert np.abs(_dlib_own(reference, np.ascontiguousarray(changed)) - want).max() > 1e-3


def test_to_chip_rounds_half_to_even_and_clips() -> None:
    x = np.full((150, 150, 3), 7.0, np.float32)
    x[0, :6, 0] = [0.5, 1.5, 2.5, 254.6, -3.0, 300.0]
    chip = to_chip(x)
    assert chip.dtype == np.uint8 and chip.flags["C_CONTIGUOUS"]
    assert chip[0, :6, 0].tolist() == [0, 2, 2, 255, 0, 255]


def test_random_init_is_refused() -> None:
    with pytest.raises(FerError) as err:
        build_backbone("dlib", "random", 150, 0)
    assert str(err.value) == (
        "dlib has no random initialisation (dlib's C++ network ships only with its trained "
        "weights); use dlib-pretrained"
    )
    assert "\n" not in str(err.value)
    with pytest.raises(FerError, match=r"unknown init 'imagenet'"):
        build_backbone("dlib", "imagenet", 150, 0)


def test_registry_entry() -> None:
    entry = get_backbone("dlib")
    assert (entry.native_input_size, entry.fixed_input_size, entry.bf16) == (150, True, False)
    assert entry.inits == ("pretrained",) and entry.frozen_only
    others = [b for name, b in REGISTRY.items() if name != "dlib"]
    assert all(b.inits == ("pretrained", "random") and not b.frozen_only for b in others)
    # params.py knows the same names and the same pretrained-only backbones
    assert set(BACKBONE_NAMES) == set(REGISTRY)
    assert set(PRETRAINED_ONLY) == {n for n, b in REGISTRY.items() if "random" not in b.inits}


def test_other_input_sizes_are_refused() -> None:
    with pytest.raises(FerError, match=r"^dlib takes only 150x150 input \(got input_size 224\)$"):
        build_backbone("dlib", "pretrained", 224, 0)
    with pytest.raises(FerError, match="150x150"):
        build_dlib(48)


def test_classifier_is_frozen_descriptor_and_dense_tail(cut) -> None:
    assert cut.boundary_shapes == [(128,)] and cut.feature_size == 128
    assert cut.frozen.output_shape == (None, 128)
    assert cut.trainable_layer_names == []
    assert not cut.frozen.trainable_weights and not cut.frozen.weights
    trainable = [w.name for w in cut.tail.trainable_weights]
    assert [w.shape.as_list() for w in cut.tail.trainable_weights] == [[128, 7], [7]]
    assert all(name.startswith("emotion") for name in trainable)
    # the study's default of 4 trainable layers does not exist here: one layer only
    classifier = build_classifier(build_backbone("dlib", "pretrained", 150, 0))
    with pytest.raises(FerError, match="between 0 and 1"):
        split_frozen_tail(classifier, 4)


def test_layer_config_round_trip() -> None:
    model = build_dlib(150)
    layer = model.get_layer("dlib_resnet_v1")
    assert isinstance(layer, DlibDescriptor) and not layer.trainable
    clone = tf.keras.Model.from_config(
        model.get_config(), custom_objects={"DlibDescriptor": DlibDescriptor}
    )
    assert isinstance(clone.layers[-1], DlibDescriptor) and clone.output_shape == (None, 128)


def test_missing_package_is_one_line(monkeypatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FerError, match=r"face_recognition_models package is not installed"):
        dlib_net.model_file()


def test_params_refuse_dlib_random() -> None:
    backbone = {"dlib": {"input_size": 150}, "onet": {"input_size": 48}}
    with pytest.raises(FerError) as err:
        validate_params({"runs": ["onet-pretrained", "dlib-random"], "backbone": backbone})
    assert str(err.value) == (
        "params.yaml: runs: dlib-random: dlib has no random initialisation; use dlib-pretrained"
    )
    ok = validate_params({"runs": ["dlib-pretrained"], "backbone": backbone})
    assert ok.runs == ["dlib-pretrained"]


def _workers(pid: int | None = None) -> list:
    """The dlib worker processes of a process, this one by default (not multiprocessing's
    resource tracker)."""
    import psutil

    workers = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):  # ended since it was listed
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
    return workers


def _ended(process) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def test_batches_are_spread_over_worker_processes_in_order(faces, reference, monkeypatch) -> None:
    """One piece per core, each in its own process: the same descriptors, in the same order,
    as dlib's own network one chip at a time, whatever the number of workers."""
    x = image_transform(get_backbone("dlib").preprocess, 150)(tf.constant(faces)).numpy()
    x = np.concatenate([x, x[::-1, :, ::-1]])  # 8 distinct faces
    want = _dlib_own(reference, np.stack([to_chip(image) for image in x]))
    dlib_net.shutdown()
    for workers in (1, 3, 2):
        monkeypatch.setattr(dlib_net, "cores", lambda workers=workers: workers)
        np.testing.assert_allclose(dlib_net.describe(x), want, atol=1e-6, rtol=0)
        assert len(_workers()) == (0 if workers == 1 else workers)  # the pool of 3 ended
    assert dlib_net.describe(x[:0]).shape == (0, 128)
    # a worker that dies while idle breaks the pool: the next call starts a new one
    _workers()[0].kill()
    np.testing.assert_allclose(dlib_net.describe(x), want, atol=1e-6, rtol=0)
    # Ctrl-C is the parent's: a worker ignores it
    worker = _workers()[0]
    worker.send_signal(signal.SIGINT)
    time.sleep(1)
    assert worker.is_running() and not _ended(worker)
    dlib_net.shutdown()
    assert not _workers()


def test_workers_end_when_their_process_is_killed(tmp_path) -> None:
    """SIGKILL runs no exit code: the workers see their parent gone and end by themselves."""
    import subprocess
    import sys

    script = tmp_path / "describe.py"
    script.write_text(
        "import sys, time\n"
        "import numpy as np\n"
        "from ferstudy.models import dlib_net\n"
        "if __name__ == '__main__':\n"
        "    dlib_net.cores = lambda: 2\n"
        "    dlib_net.describe(np.zeros((2, 150, 150, 3), np.float32))\n"
        "    print(flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 120)
        assert ready and parent.stdout.readline() == b"\n", "no descriptors within 120 s"
        workers = _workers(parent.pid)
        assert len(workers) == 2
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while not all(_ended(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_ended(w) for w in workers), "workers outlived their killed parent"
