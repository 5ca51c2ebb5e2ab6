"""Checkpoints are written by time: never sooner than FERSTUDY_CHECKPOINT_SECONDS after the
last one, nor sooner than 20 times the last write's duration (at most ~5 % overhead)."""

from __future__ import annotations

import pytest
import tensorflow as tf

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
        return training.Checkpoint("run/seed1", "fp", tail, optimizer, tmp_path / "live")

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
