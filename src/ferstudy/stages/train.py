"""Stage ``train``: train one run's tail on its cached features and log every epoch.

The backbone is rebuilt from the registry with the weights the features stage saved, the
classifier is cut exactly where the features were taken, and only the tail is trained (in
fp32, whatever the features' precision).
Epoch 0 is an evaluation of the untrained model; epochs 1..N are Keras' own training-epoch
averages (train) and an evaluation after the epoch (validation). All are logged with
dvclive under ``metrics/train/<run>/seed<seed>/`` so that ``dvc plots diff`` draws the curves.

Training is checkpointed (tail weights, optimizer state, the log so far) under
``.ferstudy/checkpoints/<run>/seed<seed>/``; a run killed mid-way resumes after its last
checkpointed epoch when the same settings are run again, and ends with the same numbers. A
checkpoint is written at the end of an epoch once ``FERSTUDY_CHECKPOINT_SECONDS`` (default
300) have passed since the previous one, and never sooner than 20 times the previous write's
duration, so that checkpointing costs at most about 5 % of training time (VGG-Face's tail and
its Adam state are 1.4 GB); ``0`` checkpoints every epoch.
"""

from __future__ import annotations

import time
from typing import Any

import tensorflow as tf
from dvclive import Live

from ferstudy.core import paths, runtime
from ferstudy.core.code import code_digest
from ferstudy.core.errors import FerError
from ferstudy.core.files import file_sha256, json_sha256, read_json
from ferstudy.core.params import Params
from ferstudy.data.feature_cache import CachedFeatures, rebuild_classifier
from ferstudy.models.store import save_model
from ferstudy.models.training import (
    Checkpoint,
    FeatureBatches,
    log_epoch,
    make_optimizer,
    seed_dropout,
    start_log,
)
from ferstudy.models.transfer import runs_convolutions

keras = tf.keras


def training_settings(params: Params, seed: int) -> dict[str, Any]:
    """The params that decide a training run under ``seed``."""
    return {
        "lr": params.need("lr"),
        "epochs": params.epochs,
        "batch_size": params.batch_size,
        "optimizer": params.optimizer,
        "seed": int(seed),
    }


class _EpochLog(keras.callbacks.Callback):
    """Logs each epoch to dvclive and checkpoints it."""

    def __init__(self, live: Live, checkpoint: Checkpoint):
        super().__init__()
        self.live, self.checkpoint = live, checkpoint

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        log_epoch(self.live, logs["accuracy"], logs["loss"], logs["val_accuracy"], logs["val_loss"])
        if self.checkpoint.due():
            self.checkpoint.save(epoch + 1)


def compile_tail(tail: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> None:
    """Compile a tail as this stage trains it: categorical cross-entropy, accuracy, and a tail
    of matmuls under XLA, which fuses the optimizer's update of every tail variable. A tail
    that runs convolution kernels trains without XLA, whose CPU convolutions are slower than
    oneDNN's (docs/performance.md)."""
    tail.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=not runs_convolutions(tail),
    )


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``train`` stage for one run (``<backbone>-<init>``) under one seed."""
    backbone, init = paths.parse_run_name(run)
    run_id = paths.run_id(run, seed)
    settings = training_settings(params, seed)
    cache = CachedFeatures(paths.features_dir(run_id))
    meta = cache.meta
    if (meta["backbone"], meta["init"]) != (backbone, init) or meta["seed"] not in (None, seed):
        raise FerError(
            f"{cache.folder}: features of {meta['backbone']}-{meta['init']} seed "
            f"{meta['seed']}, not {run_id}"
        )
    runtime.configure(settings["seed"])
    runtime.set_precision("fp32")  # the tail trains in fp32 (bf16 cost accuracy: README, Speed)
    start = time.perf_counter()

    classifier, cut = rebuild_classifier(cache, settings["seed"])
    optimizer = make_optimizer(settings["optimizer"], settings["lr"])
    optimizer.build(cut.tail.trainable_variables)  # slots exist before a checkpoint restores them
    compile_tail(cut.tail, optimizer)

    live_dir = paths.live_dir(run_id)
    fingerprint = json_sha256(
        {
            "settings": settings,
            "meta": meta,
            "features": (cache.folder / "train.npy").stat().st_size,
            "dataset": file_sha256(paths.DATASET_FILE),
            "split": file_sha256(paths.SPLIT_FILE),
            "code": code_digest(__name__, backbone),
        }
    )
    generators = seed_dropout(cut.tail, settings["seed"])
    checkpoint = Checkpoint(run_id, fingerprint, cut.tail, optimizer, live_dir, generators)
    val = FeatureBatches(cache, "val", settings["batch_size"])
    done = checkpoint.restore()

    def untrained() -> tuple[float, float, float, float]:
        loss, acc = cut.tail.evaluate(
            FeatureBatches(cache, "train", settings["batch_size"]), verbose=0
        )
        val_loss, val_acc = cut.tail.evaluate(val, verbose=0)
        return acc, loss, val_acc, val_loss

    live = start_log(live_dir, done, run_id, untrained)
    if done < settings["epochs"]:
        train = FeatureBatches(
            cache, "train", settings["batch_size"], seed=settings["seed"], epoch=done
        )
        cut.tail.fit(
            train,
            validation_data=val,
            epochs=settings["epochs"],
            initial_epoch=done,
            shuffle=False,
            verbose=2,
            callbacks=[_EpochLog(live, checkpoint)],
        )
    live.end()
    seconds = time.perf_counter() - start
    config = {
        "backbone": backbone,
        "init": init,
        "input_size": meta["input_size"],
        "descriptor": meta.get("descriptor"),
        "frozen_bn": meta.get("frozen_bn", "inference"),
        "trainable_layers": meta["trainable_layers"],
        "precision": meta["precision"],
        "fraction": meta["fraction"],
        **settings,
    }
    save_model(paths.model_dir(run_id), classifier, config)
    checkpoint.clear()
    history = read_json(live_dir / "metrics.json")
    return {
        "run": run_id,
        "seconds": round(seconds, 1),
        "checkpoint_seconds": round(checkpoint.seconds, 1),
        "checkpoints": checkpoint.writes,
        "final": history,
    }


def describe(result: dict[str, Any]) -> str:
    final = result["final"]
    return (
        f"train {result['run']}: val accuracy {final['val']['accuracy']:.4f} after "
        f"{final['step']} epochs; {result['seconds']} s, of which "
        f"{result['checkpoint_seconds']} s in {result['checkpoints']} checkpoints"
    )
