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

import hashlib
import json
import math
import shutil
import time
from typing import Any

import numpy as np
import tensorflow as tf
from dvclive import Live

from ferstudy import CLASSES
from ferstudy.core import paths, runtime
from ferstudy.core.errors import FerError
from ferstudy.core.files import read_json
from ferstudy.core.params import Params
from ferstudy.data.feature_cache import BACKBONE_WEIGHTS, CachedFeatures
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.store import save_model
from ferstudy.models.training import Checkpoint, log_epoch, make_optimizer
from ferstudy.models.transfer import build_classifier, split_frozen_tail

keras = tf.keras


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

    backbone_model = build_backbone(
        backbone,
        get_backbone(backbone).architecture_init,
        meta["input_size"],
        settings["seed"],
        meta.get("descriptor"),
    )
    backbone_model.load_weights(str(cache.folder / BACKBONE_WEIGHTS))
    keras.utils.set_random_seed(settings["seed"])
    classifier = build_classifier(backbone_model)
    cut = split_frozen_tail(classifier, meta["trainable_layers"])
    if cut.feature_size != meta["feature_size"]:
        raise FerError(f"{cache.folder}: features do not match the {run_id} cut; rerun features")
    optimizer = make_optimizer(settings["optimizer"], settings["lr"])
    optimizer.build(cut.tail.trainable_variables)  # slots exist before a checkpoint restores them
    cut.tail.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    live_dir = paths.live_dir(run_id)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "settings": settings,
                "meta": meta,
                "features": (cache.folder / "train.npy").stat().st_size,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    checkpoint = Checkpoint(run_id, fingerprint, cut.tail, optimizer, live_dir)
    val = FeatureBatches(cache, "val", settings["batch_size"])
    done = checkpoint.restore()
    live = Live(str(live_dir), resume=done > 0, save_dvc_exp=False, dvcyaml=None, report=None)
    if done == 0:
        shutil.rmtree(live_dir / "plots", ignore_errors=True)
        train_eval = FeatureBatches(cache, "train", settings["batch_size"])
        loss0, acc0 = cut.tail.evaluate(train_eval, verbose=0)
        val_loss0, val_acc0 = cut.tail.evaluate(val, verbose=0)
        log_epoch(live, acc0, loss0, val_acc0, val_loss0)  # epoch 0: the untrained model
        print(f"epoch 0 (untrained): accuracy {acc0:.4f} val_accuracy {val_acc0:.4f}")
    else:
        print(f"resuming {run_id} after epoch {done}")
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
