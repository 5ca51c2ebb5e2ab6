"""Stage ``evaluate``: each trained model on the held-out test set, and what it costs to run.

Scores of a study run come from its cached test features through its trained tail, which is
exactly the full model on the test images (tests/test_transfer.py shows it); a fine-tuned run
(``<run>-finetune``, no feature cache) is scored on the test images of its own split through
the whole model. Writes

- ``metrics/eval/<run>/seed<seed>.json``: accuracy, macro-F1, per-class precision/recall/F1, the
  confusion matrix (rows: true class, columns: predicted), the test probabilities' checksum;
- ``metrics/eval/<run>/seed<seed>/predictions.csv``: true and predicted class per test image, for
  DVC's confusion plot, and ``test_probabilities.npz`` (dataset row and the 7 probabilities
  of each test image, for the report's per-emotion figures);
- ``metrics/speed/<run>/seed<seed>.json``: parameters, trainable parameters, size on disk,
  ms per image at batch 1 and images per second at batch 64 of the full model on 48x48
  inputs, on this machine (timings vary from run to run, so they are kept apart from the scores).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferstudy import CLASSES
from ferstudy.analysis.scores import privatetest_scores, scores
from ferstudy.core import paths, runtime
from ferstudy.core.files import (
    load_dataset,
    load_labels,
    load_usage,
    save_npz,
    write_json,
    write_text,
)
from ferstudy.core.params import Params
from ferstudy.core.paths import TEST_PROBABILITIES
from ferstudy.data.feature_cache import CachedFeatures, predict_features
from ferstudy.data.splits import split_rows
from ferstudy.models.registry import get_backbone
from ferstudy.models.store import WEIGHTS, LoadedModel, load_model
from ferstudy.models.transfer import image_transform, predict_images, split_frozen_tail


def inference_cost(
    model: tf.keras.Model,
    trainable_parameters: int,
    transform,
    weights_file: Path,
    repeats: int = 10,
) -> dict[str, Any]:
    """Parameter counts, size on disk and speed of the full model on 48x48 images.

    ``trainable_parameters`` is what the study's recipe trains (the tail and classifier).
    """
    infer = tf.function(lambda x: model(transform(x), training=False), reduce_retracing=True)
    rng = np.random.default_rng(0)
    one = tf.constant(rng.integers(0, 256, (1, 48, 48), dtype=np.uint8))
    batch = tf.constant(rng.integers(0, 256, (64, 48, 48), dtype=np.uint8))
    infer(one).numpy()
    infer(batch).numpy()
    singles = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer(one).numpy()
        singles.append(time.perf_counter() - start)
    batches = max(1, repeats // 5)
    start = time.perf_counter()
    for _ in range(batches):
        infer(batch).numpy()
    per_batch = (time.perf_counter() - start) / batches
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": trainable_parameters,
        "size_mb": round(weights_file.stat().st_size / 1e6, 2),
        "ms_per_image_batch1": round(1000 * float(np.median(singles)), 2),
        "images_per_second_batch64": round(64 / per_batch, 1),
        "device": runtime.device_name(),
    }


def trainable_parameters(model: tf.keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _cached_test(loaded: LoadedModel, run_id: str) -> tuple[np.ndarray, np.ndarray, int]:
    """A study run: test rows, their probabilities (cached features through the trained tail)
    and the tail's trainable parameters."""
    cache = CachedFeatures(paths.features_dir(run_id))
    cut = split_frozen_tail(loaded.model, int(loaded.config["trainable_layers"]))
    trainable = trainable_parameters(cut.tail)
    return cache.rows["test"], predict_features(cut.tail, cache, "test"), trainable


def _finetuned_test(loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray, int]:
    """A fine-tuned run: test rows of its own split, their probabilities from the images
    through the whole model, and its trainable parameters (every layer's weights; not the
    BatchNormalization statistics)."""
    dataset = load_dataset(paths.DATASET_FILE)
    rows = split_rows(dataset, loaded.config["split"])["test"]
    backbone = get_backbone(loaded.config["backbone"])
    transform = image_transform(backbone.preprocess, int(loaded.config["input_size"]))
    probs = predict_images(loaded.model, transform, dataset.images[rows])
    return rows, probs, trainable_parameters(loaded.model)


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``evaluate`` stage for one run (study or ``-finetune``) under one seed."""
    run_id = paths.run_id(run, seed)
    runtime.configure(seed, deterministic=True)
    loaded = load_model(paths.model_dir(run_id))
    finetuned = loaded.config.get("mode") == "finetune"
    rows, probs, trainable = _finetuned_test(loaded) if finetuned else _cached_test(loaded, run_id)
    labels = load_labels(paths.DATASET_FILE)[rows]
    predicted = probs.argmax(axis=1)
    result = scores(labels, predicted)
    result["test_images"] = int(len(labels))
    result["privatetest"] = privatetest_scores(
        load_usage(paths.DATASET_FILE)[rows], labels, predicted
    )
    write_json(paths.eval_file(run_id), result)
    lines = ["actual,predicted"] + [f"{CLASSES[a]},{CLASSES[p]}" for a, p in zip(labels, predicted)]
    write_text(paths.eval_dir(run_id) / "predictions.csv", "\n".join(lines) + "\n")
    save_npz(
        paths.eval_dir(run_id) / TEST_PROBABILITIES,
        rows=rows,
        probabilities=probs.astype(np.float32),
    )

    # Speed: the full model on images, at the precision its features were computed at.
    precision = loaded.config["precision"]
    timed = load_model(paths.model_dir(run_id), precision).model if precision == "bf16" else None
    backbone = get_backbone(loaded.config["backbone"])
    speed = inference_cost(
        timed or loaded.model,
        trainable,
        image_transform(backbone.preprocess, loaded.config["input_size"]),
        paths.model_dir(run_id) / WEIGHTS,
    )
    speed["precision"] = precision
    write_json(paths.speed_file(run_id), speed)
    return {"run": run_id, "scores": result, "speed": speed}


def describe(result: dict[str, Any]) -> str:
    s, sp = result["scores"], result["speed"]
    return (
        f"evaluate {result['run']}: test accuracy {s['accuracy']:.4f}, "
        f"macro-F1 {s['macro_f1']:.4f}; {sp['ms_per_image_batch1']} ms/img at batch 1, "
        f"{sp['images_per_second_batch64']} img/s at batch 64 ({sp['precision']})"
    )
