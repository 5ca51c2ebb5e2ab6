"""Stage ``finetune``: a whole backbone and its emotion classifier trained end to end.

Beyond the study's recipe (frozen backbone, last layers trained on cached features): every
layer trains, on images augmented on the fly (:mod:`ferstudy.data.augment`), so nothing is
cached. The run ``<backbone>-<init>-finetune`` starts from the backbone's pretrained weights
or its random initialisation, at the input size given in ``finetune.input_size``, and

- trains with Adam under a learning-rate schedule: linear warm-up over
  ``finetune.warmup_epochs``, then cosine decay to 0 at ``finetune.epochs``;
- drops out ``finetune.dropout`` of the backbone's output before the classifier (stateless,
  drawn from the seed, epoch and batch like the augmentation);
- stops early once validation accuracy has not improved for ``finetune.patience`` epochs, and
  keeps the weights of its best validation epoch;
- logs epoch 0 (the untrained model) and every epoch with dvclive, in the same layout as the
  ``train`` stage, so the study's metrics, curves and the report treat it like any run.

The split is ``finetune.split``: ``usage`` (FER2013's Training / PublicTest / PrivateTest, the
protocol published results use) or ``stratified`` (the study's, from ``data``). Training is
checkpointed and resumes exactly as ``train`` does (same folder layout and timing rule).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ferstudy import CLASSES
from ferstudy.core import paths, runtime
from ferstudy.core.code import code_digest
from ferstudy.core.errors import FerError
from ferstudy.core.files import file_sha256, json_sha256, load_dataset, read_json, write_json
from ferstudy.core.params import Params
from ferstudy.data.augment import Augmentation, augment
from ferstudy.data.splits import split_rows
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.store import save_model
from ferstudy.models.training import Checkpoint, log_epoch, seed_dropout, start_log
from ferstudy.models.transfer import build_classifier, image_transform, predict_images

keras = tf.keras
#: Batches per epoch are numbered below this in the augmentation seed (epoch * this + batch).
SEED_STRIDE = 1_000_000


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides one fine-tuning run (validated by :mod:`ferstudy.core.params`)."""

    backbone: str
    init: str
    seed: int
    input_size: int
    split: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: int
    patience: int
    dropout: float
    class_weight: str
    augmentation: Augmentation

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["augmentation"] = dict(self.augmentation.__dict__)
        return out


def settings(params: Params, backbone: str, init: str, seed: int) -> FinetuneSettings:
    """The fine-tuning settings of ``<backbone>-<init>`` under ``seed``, from params."""
    section = params.finetune
    if get_backbone(backbone).frozen_only:
        raise FerError(f"{backbone} cannot be fine-tuned: its layers are not Keras layers")
    sizes = section.input_size
    if backbone not in sizes:
        raise FerError(f"finetune.input_size.{backbone}: missing (the size {backbone} trains at)")
    data = params.data
    split = (
        {"kind": "usage"}
        if section.split == "usage"
        else {
            "kind": "stratified",
            "test_size": data.test_size,
            "val_size": data.val_size,
            "random_state": data.random_state,
        }
    )
    return FinetuneSettings(
        backbone=backbone,
        init=init,
        seed=int(seed),
        input_size=int(sizes[backbone]),
        split=split,
        epochs=section.epochs,
        batch_size=section.batch_size,
        lr=section.lr,
        warmup_epochs=section.warmup_epochs,
        patience=section.patience,
        dropout=section.dropout,
        class_weight=section.class_weight,
        augmentation=Augmentation(**section.augment.model_dump()),
    )


def class_weights(labels: np.ndarray, kind: str) -> np.ndarray:
    """Per-class loss weights: ``balanced`` (n / (classes * count), as scikit-learn) or ones."""
    if kind == "none":
        return np.ones(len(CLASSES), np.float32)
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (len(CLASSES) * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def learning_rate(
    s: FinetuneSettings, steps_per_epoch: int
) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up to ``lr`` over the warm-up epochs, then cosine decay to 0 at the end."""
    warmup = s.warmup_epochs * steps_per_epoch
    decay = max(1, (s.epochs - s.warmup_epochs) * steps_per_epoch)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(s.lr, decay)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay, warmup_target=s.lr, warmup_steps=warmup
    )


def loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean categorical cross-entropy and accuracy (Keras' clipping of probabilities)."""
    p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(p))), float(np.mean(probabilities.argmax(1) == labels))


class _State(tf.Module):
    """What a checkpoint holds beyond the optimizer: the model and the best epoch so far."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model
        self.best = [tf.Variable(w, trainable=False) for w in model.weights]
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_accuracy = tf.Variable(-1.0, dtype=tf.float64, trainable=False)

    def keep_if_best(self, epoch: int, accuracy: float) -> bool:
        if accuracy <= float(self.best_accuracy.numpy()):
            return False
        for saved, current in zip(self.best, self.model.weights):
            saved.assign(current)
        self.best_epoch.assign(epoch)
        self.best_accuracy.assign(accuracy)
        return True

    def restore_best(self) -> None:
        for saved, current in zip(self.best, self.model.weights):
            current.assign(saved)


def train_step(
    classifier: keras.Model,
    backbone_model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    transform,
    s: FinetuneSettings,
    weights: np.ndarray,
):
    """One compiled optimisation step: augment, forward with dropout, weighted loss, update."""
    head = classifier.get_layer("emotion")
    weight_table = tf.constant(weights)
    variables = classifier.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor):
        augment_seed, dropout_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        x = augment(images, s.augmentation, augment_seed) if s.augmentation.active else images
        x = transform(x)
        with tf.GradientTape() as tape:
            features = backbone_model(x, training=True)
            features = tf.reshape(features, (tf.shape(features)[0], -1))
            if s.dropout:
                keep = tf.random.stateless_uniform(tf.shape(features), dropout_seed) >= s.dropout
                features = tf.where(keep, features / (1.0 - s.dropout), 0.0)
            probs = head(features)
            losses = keras.losses.categorical_crossentropy(tf.one_hot(labels, len(CLASSES)), probs)
            w = tf.gather(weight_table, labels)
            loss = tf.reduce_sum(losses * w) / tf.reduce_sum(w)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        correct = tf.cast(
            tf.equal(tf.argmax(probs, 1, output_type=labels.dtype), labels), tf.float32
        )
        return tf.reduce_sum(losses), tf.reduce_sum(correct)

    return step


def _train_epoch(
    step, images: np.ndarray, labels: np.ndarray, s: FinetuneSettings, epoch: int
) -> tuple[float, float]:
    """One epoch in the order drawn from ``(seed, epoch)``: mean accuracy and loss."""
    order = np.random.default_rng([s.seed, epoch]).permutation(len(labels))
    total_loss = total_correct = 0.0
    for b in range(math.ceil(len(labels) / s.batch_size)):
        idx = order[b * s.batch_size : (b + 1) * s.batch_size]
        loss, correct = step(
            images[idx], labels[idx], tf.constant([s.seed, epoch * SEED_STRIDE + b], tf.int64)
        )
        total_loss += float(loss)
        total_correct += float(correct)
    return total_correct / len(labels), total_loss / len(labels)


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``finetune`` stage for one run (``<backbone>-<init>``) under one seed."""
    backbone, init = paths.parse_run_name(run)
    s = settings(params, backbone, init, seed)
    run_id = paths.run_id(paths.finetune_run(run), seed)
    runtime.configure(s.seed)
    runtime.set_precision("fp32")
    start = time.perf_counter()
    dataset = load_dataset(paths.DATASET_FILE)
    rows = split_rows(dataset, s.split)
    train_x, train_y = dataset.images[rows["train"]], dataset.labels[rows["train"]]
    val_x, val_y = dataset.images[rows["val"]], dataset.labels[rows["val"]]

    backbone_model = build_backbone(backbone, init, s.input_size, s.seed)
    keras.utils.set_random_seed(s.seed)
    classifier = build_classifier(backbone_model)
    transform = image_transform(get_backbone(backbone).preprocess, s.input_size)
    steps = math.ceil(len(train_y) / s.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(s, steps))
    optimizer.build(classifier.trainable_variables)
    state = _State(classifier)
    step = train_step(
        classifier, backbone_model, optimizer, transform, s, class_weights(train_y, s.class_weight)
    )

    live_dir = paths.live_dir(run_id)
    fingerprint = json_sha256(
        {
            "settings": s.as_dict(),
            "dataset": file_sha256(paths.DATASET_FILE),
            "split": file_sha256(paths.SPLIT_FILE) if paths.SPLIT_FILE.is_file() else None,
            "code": code_digest(__name__, backbone),
        }
    )
    generators = seed_dropout(classifier, s.seed)
    checkpoint = Checkpoint(run_id, fingerprint, state, optimizer, live_dir, generators)
    done = checkpoint.restore()

    def untrained() -> tuple[float, float, float, float]:
        loss, acc = loss_and_accuracy(predict_images(classifier, transform, train_x), train_y)
        val_loss, val_acc = loss_and_accuracy(predict_images(classifier, transform, val_x), val_y)
        return acc, loss, val_acc, val_loss

    live = start_log(live_dir, done, run_id, untrained)

    epoch = done
    stopped = done - int(state.best_epoch.numpy()) >= s.patience if done else False
    while epoch < s.epochs and not stopped:
        epoch += 1
        began = time.perf_counter()
        acc, loss = _train_epoch(step, train_x, train_y, s, epoch)
        val_loss, val_acc = loss_and_accuracy(predict_images(classifier, transform, val_x), val_y)
        log_epoch(live, acc, loss, val_acc, val_loss)
        improved = state.keep_if_best(epoch, val_acc)
        stopped = epoch - int(state.best_epoch.numpy()) >= s.patience
        print(
            f"epoch {epoch}/{s.epochs}: accuracy {acc:.4f} val_accuracy {val_acc:.4f}"
            f"{' (best)' if improved else ''}; {time.perf_counter() - began:.0f} s",
            flush=True,
        )
        if checkpoint.due() and epoch < s.epochs and not stopped:
            checkpoint.save(epoch)
    live.end()
    state.restore_best()
    seconds = time.perf_counter() - start
    best_epoch = int(state.best_epoch.numpy())
    config = {
        **s.as_dict(),
        "mode": "finetune",
        "trainable_layers": "all",
        "precision": "fp32",
        "fraction": 1.0,
        "descriptor": None,
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "val_accuracy": round(float(state.best_accuracy.numpy()), 6),
    }
    save_model(paths.model_dir(run_id), classifier, config)
    write_json(
        paths.training_time_file(run_id),
        {"train_seconds": round(seconds, 1), "epochs_run": epoch},
    )
    checkpoint.clear()
    return {
        "run": run_id,
        "seconds": round(seconds, 1),
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "val_accuracy": config["val_accuracy"],
        "final": read_json(live_dir / "metrics.json"),
    }


def describe(result: dict[str, Any]) -> str:
    return (
        f"finetune {result['run']}: best val accuracy {result['val_accuracy']:.4f} at epoch "
        f"{result['best_epoch']} of {result['epochs_run']}; {result['seconds']} s"
    )
