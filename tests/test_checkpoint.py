"""Checkpoints are written by time: never sooner than FERSTUDY_CHECKPOINT_SECONDS after the
last one, nor sooner than 20 times the last write's duration (at most ~5 % overhead); a
resumed tail with dropout draws the masks an uninterrupted one would."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ferstudy.core import runtime
from ferstudy.core.errors import FerError
from ferstudy.models import training
from ferstudy.stages import train


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    def make(interval: str) -> training.Checkpoint:
        monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", interval)
        monkeypatch.chdir(tmp_path)
        (tmp_path / "live").mkdir(exist_ok=True)
        tail = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
        optimizer = tf.keras.optimizers.Adam()
        optimizer.build(tail.trainable_variables)
        return training.Checkpoint("run/seed1", "fp", tail, optimizer, tmp_path / "live", {})

    clock = Clock()
    monkeypatch.setattr(train.time, "monotonic", clock)
    return make, clock


def test_zero_checkpoints_every_epoch(checkpoint):
    make, _ = checkpoint
    ckpt = make("0")
    assert ckpt.due()
    ckpt.save(1)
    assert ckpt.due() and ckpt.writes == 1
    assert (ckpt.dir / "epoch.json").is_file()


def test_interval_and_twenty_times_the_last_write(checkpoint, monkeypatch):
    make, clock = checkpoint
    ckpt = make("300")
    assert not ckpt.due()
    clock.now += 299.9
    assert not ckpt.due()
    clock.now += 0.1
    assert ckpt.due()
    write = ckpt._write

    def slow_write(epoch: int) -> None:  # a 30 s write (VGG-Face's 1.4 GB)
        write(epoch)
        clock.now += 30

    monkeypatch.setattr(ckpt, "_write", slow_write)
    ckpt.save(3)
    assert (ckpt.seconds, ckpt.writes) == (30, 1)
    clock.now += 599  # 20 x 30 s = 600 s > the 300 s interval
    assert not ckpt.due()
    clock.now += 1
    assert ckpt.due()


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_checkpoint_seconds_must_be_a_number_of_seconds(value, monkeypatch):
    monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", value)
    with pytest.raises(FerError, match="FERSTUDY_CHECKPOINT_SECONDS: expected a number"):
        runtime.checkpoint_seconds()


def test_checkpoint_seconds_default_and_zero(monkeypatch):
    monkeypatch.delenv("FERSTUDY_CHECKPOINT_SECONDS", raising=False)
    assert runtime.checkpoint_seconds() == 300.0
    monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
    assert runtime.checkpoint_seconds() == 0.0


def _dropout_tail(seed: int) -> tuple[tf.keras.Model, tf.keras.optimizers.Optimizer, dict]:
    tf.keras.utils.set_random_seed(seed)
    tail = tf.keras.Sequential(
        [
            tf.keras.Input((16,)),
            tf.keras.layers.Dropout(0.5, name="drop"),
            tf.keras.layers.Dense(3, name="dense"),
        ]
    )
    optimizer = tf.keras.optimizers.Adam(0.01)
    optimizer.build(tail.trainable_variables)
    tail.compile(optimizer=optimizer, loss="mse", jit_compile=True)  # as the train stage
    return tail, optimizer, training.seed_dropout(tail, seed)


def test_a_resumed_tail_with_dropout_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 16)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")

    def fit(tail, epochs: int, initial: int = 0) -> None:
        tail.fit(
            x, y, batch_size=16, epochs=epochs, initial_epoch=initial, shuffle=False, verbose=0
        )

    whole, _, _ = _dropout_tail(7)
    fit(whole, 4)

    (tmp_path / "live").mkdir()
    first, optimizer, generators = _dropout_tail(7)
    fit(first, 2)
    ckpt = training.Checkpoint("run/seed7", "fp", first, optimizer, tmp_path / "live", generators)
    ckpt.save(2)
    # a new process in all but name: new layers, new optimizer, new traced functions
    resumed, optimizer, generators = _dropout_tail(7)
    ckpt = training.Checkpoint("run/seed7", "fp", resumed, optimizer, tmp_path / "live", generators)
    assert ckpt.restore() == 2
    fit(resumed, 4, initial=2)
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
