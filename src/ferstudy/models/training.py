"""What the training stages share: optimizers, the per-epoch dvclive log, and checkpoints.

Training is checkpointed (weights, optimizer state, dropout's random state, the log so far) under
``.ferstudy/checkpoints/<run>/seed<seed>/``; a run killed mid-way resumes after its last
checkpointed epoch when the same settings are run again, and ends with the same numbers. A
checkpoint is written at the end of an epoch once ``FERSTUDY_CHECKPOINT_SECONDS`` (default
300) have passed since the previous one, and never sooner than 20 times the previous write's
duration, so that checkpointing costs at most about 5 % of training time; ``0`` checkpoints
every epoch.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from dvclive import Live

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.core.runtime import checkpoint_seconds
from ferstudy.data.feature_cache import CachedFeatures

keras = tf.keras

CHECKPOINTS = Path(".ferstudy/checkpoints")
#: A checkpoint waits at least this many times its previous write's duration (<= 5 %).
CHECKPOINT_COST_FACTOR = 20
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def make_optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    try:
        return OPTIMIZERS[name](learning_rate=lr)
    except KeyError:
        raise FerError(f"unknown optimizer '{name}' (known: {', '.join(OPTIMIZERS)})") from None


def seed_dropout(model: keras.Model, seed: int) -> dict[str, tf.random.Generator]:
    """Give every dropout layer of ``model`` its own seeded, stateful random generator.

    Keras' default dropout draws from a stateful op whose position is not saved, so a resumed
    run would draw other masks than an uninterrupted one. A ``tf.random.Generator`` keeps its
    position in a variable, which :class:`Checkpoint` saves; the generators are returned for
    it, by layer name.
    """
    from tf_keras.src.backend import RandomGenerator

    generators = {}
    for index, layer in enumerate(model.layers):
        if isinstance(layer, keras.layers.Dropout):
            layer._random_generator = RandomGenerator(seed * 1000 + index, rng_type="stateful")
            layer._random_generator._maybe_init()
            generators[layer.name] = layer._random_generator._generator
    return generators


def log_epoch(live: Live, acc: float, loss: float, val_acc: float, val_loss: float) -> None:
    for name, value in (
        ("train/accuracy", acc),
        ("train/loss", loss),
        ("val/accuracy", val_acc),
        ("val/loss", val_loss),
    ):
        live.log_metric(name, round(float(value), 6))
    live.next_step()


def start_log(
    live_dir: Path,
    done: int,
    run_id: str,
    untrained: Callable[[], tuple[float, float, float, float]],
) -> Live:
    """The run's dvclive log: resumed after checkpointed epoch ``done``, or new, with epoch 0
    as the untrained model (``untrained()``: accuracy, loss, val accuracy, val loss)."""
    live = Live(str(live_dir), resume=done > 0, save_dvc_exp=False, dvcyaml=None, report=None)
    if done:
        print(f"resuming {run_id} after epoch {done}", flush=True)
        return live
    shutil.rmtree(live_dir / "plots", ignore_errors=True)
    acc, loss, val_acc, val_loss = untrained()
    log_epoch(live, acc, loss, val_acc, val_loss)
    print(f"epoch 0 (untrained): accuracy {acc:.4f} val_accuracy {val_acc:.4f}", flush=True)
    return live


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder, its ``epoch.json`` first: never a marker beside half a
    state, whenever a kill comes."""
    (folder / "epoch.json").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


class Checkpoint:
    """Per-epoch checkpoint of a run: the weights, optimizer state and dropout generators
    (:func:`seed_dropout`) of what trains, its dvclive log and the fingerprint of everything
    that decides its numbers."""

    def __init__(
        self,
        run: str,
        fingerprint: str,
        model: tf.Module,
        optimizer: keras.optimizers.Optimizer,
        live_dir: Path,
        generators: dict[str, tf.random.Generator],
    ):
        self.dir = CHECKPOINTS / run
        self.fingerprint, self.live_dir = fingerprint, live_dir
        self.ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, dropout=generators)
        self.interval = checkpoint_seconds()
        self.last = time.monotonic()
        self.seconds, self.writes = 0.0, 0

    def due(self) -> bool:
        """Whether enough time has passed since the last checkpoint (or the start)."""
        last_cost = self.seconds / self.writes if self.writes else 0.0
        wait = max(self.interval, CHECKPOINT_COST_FACTOR * last_cost) if self.interval else 0
        return time.monotonic() - self.last >= wait

    def save(self, epoch: int) -> None:
        start = time.monotonic()
        self._write(epoch)
        self.last = time.monotonic()
        self.seconds += self.last - start
        self.writes += 1

    def _write(self, epoch: int) -> None:
        tmp = self._sibling(".tmp")
        _remove(tmp)
        self.ckpt.write(str(tmp / "state"))
        shutil.copytree(self.live_dir, tmp / "live")
        marker = tmp / "epoch.json.part"
        marker.write_text(json.dumps({"epoch": epoch, "fingerprint": self.fingerprint}))
        marker.rename(tmp / "epoch.json")  # last, atomically: the folder is whole
        old = self._sibling(".old")
        _remove(old)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        _remove(old)

    def _complete(self) -> list[tuple[int, Path]]:
        """Complete checkpoints of these settings: ``epoch.json`` is written last, so a
        folder that has it is whole; a kill between the two renames of :meth:`save` leaves
        the newest one under ``.tmp`` and the previous one under ``.old``."""
        found = []
        for folder in (self.dir, self._sibling(".tmp"), self._sibling(".old")):
            try:
                state = json.loads((folder / "epoch.json").read_text())
            except (OSError, ValueError):
                continue
            if state.get("fingerprint") == self.fingerprint:
                found.append((int(state["epoch"]), folder))
        return sorted(found, reverse=True)

    def _sibling(self, suffix: str) -> Path:
        return self.dir.with_name(self.dir.name + suffix)

    def restore(self) -> int:
        """Restore the last finished epoch of the same settings; 0 when there is none."""
        complete = self._complete()
        if not complete:
            return 0
        epoch, folder = complete[0]
        self.ckpt.read(str(folder / "state")).assert_existing_objects_matched()
        shutil.rmtree(self.live_dir, ignore_errors=True)
        shutil.copytree(folder / "live", self.live_dir)
        return epoch

    def clear(self) -> None:
        for folder in (self.dir, self._sibling(".tmp"), self._sibling(".old")):
            _remove(folder)


class FeatureBatches(keras.utils.Sequence):
    """Batches of (features, one-hot labels) from a memory-mapped feature file.

    With ``seed``, the order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone,
    so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        cache: CachedFeatures,
        subset: str,
        batch_size: int,
        seed: int | None = None,
        epoch: int = 0,
    ):
        super().__init__()
        self.cache, self.stored = cache, cache.array(subset)
        self.labels = cache.labels[subset]
        self.batch_size, self.seed, self.epoch = batch_size, seed, epoch
        self._order()

    def _order(self) -> None:
        n = len(self.labels)
        self.order = (
            np.arange(n)
            if self.seed is None
            else np.random.default_rng([self.seed, self.epoch]).permutation(n)
        )

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])
        x = self.cache.decode(self.stored[idx])
        y = np.eye(len(CLASSES), dtype=np.float32)[self.labels[idx]]
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order()
