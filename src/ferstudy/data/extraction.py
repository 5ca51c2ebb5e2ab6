"""Feature extraction: the frozen part's output for every image of a run, written once.

One folder per extraction (``data/features/<run>/<name>/``): ``train.npy``, ``val.npy``,
``test.npy`` (one row per image, the frozen part's boundary tensors flattened, float32, or
bfloat16 stored as uint16 bits under ``precision: bf16``), ``labels.npz`` (labels and dataset
rows per subset), ``backbone.weights.h5`` (the backbone exactly as used, so training rebuilds
it without any download), ``meta.json`` and ``health.json``, the features' health
(:mod:`ferstudy.analysis.health`), with a flag and its reason when they carry no signal.

``frozen_bn: recalibrated`` re-estimates the moving statistics of a *random* backbone's
frozen BatchNormalization layers on ``bn_calibration_images`` training images before any
feature is computed (AdaBN; :func:`ferstudy.models.transfer.recalibrate_batchnorm`); the saved
backbone weights hold the recalibrated statistics, so training, evaluation and prediction
compute exactly what was cached. Pretrained backbones keep their own statistics.

An extraction killed part-way resumes from its partial files
(``.ferstudy/partial/features/<run>/<name>``) when the same code, settings and data compute it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferstudy.analysis.health import health_summary
from ferstudy.core import paths, runtime
from ferstudy.core.code import code_digest
from ferstudy.core.files import (
    SPLITS,
    atomic_path,
    file_sha256,
    json_sha256,
    load_dataset,
    load_split,
    write_json,
)
from ferstudy.core.params import Params
from ferstudy.data.feature_cache import (
    BACKBONE_WEIGHTS,
    HEALTH,
    LABELS,
    META,
    CachedFeatures,
    extract_to_file,
    extractor,
    weights_sha256,
)
from ferstudy.data.splits import stratified_subset
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.transfer import (
    build_classifier,
    frozen_batchnorm_layers,
    image_transform,
    recalibrate_batchnorm,
    split_frozen_tail,
)

#: The folder name of a pretrained run's features, shared by its seeds.
PRETRAINED = "pretrained"
#: Training images on which the feature health is measured.
HEALTH_IMAGES = 512
#: Independent random streams (with the seed) for calibration and health images.
CALIBRATION_STREAM, HEALTH_STREAM = 1, 2


def run_settings(params: Params, backbone: str) -> dict[str, Any]:
    """The settings of one backbone's runs: input size, data fraction, descriptor."""
    settings = params.backbone_settings(backbone)
    return {
        "input_size": settings.input_size,
        "fraction": settings.fraction,
        "descriptor": get_backbone(backbone).check_descriptor(settings.descriptor),
    }


def calibrate(
    frozen: tf.keras.Model, transform, images: np.ndarray, count: int, batch_size: int, seed: int
) -> dict[str, Any]:
    """Recalibrate ``frozen``'s BatchNormalization on ``count`` seeded training images.

    The images are drawn in a seeded random order (the dataset is sorted by class, so
    batches in row order would hold one emotion each) and only whole batches are used (a
    short last batch would weigh as much as a full one).
    """
    pick = np.random.default_rng([seed, CALIBRATION_STREAM]).permutation(len(images))[:count]
    whole = max(len(pick) // batch_size, 1) * batch_size
    chosen = images[pick[:whole]]
    batches = (
        transform(tf.constant(chosen[i : i + batch_size]))
        for i in range(0, len(chosen), batch_size)
    )
    return {"images": recalibrate_batchnorm(frozen, batches)}


def subset_rows(
    split: dict[str, np.ndarray], labels: np.ndarray, fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Dataset rows of each subset, a stratified ``fraction`` of the split's (all when 1)."""
    return {name: stratified_subset(split[name], labels, fraction, seed) for name in SPLITS}


def calibrated(
    params: Params, init: str, frozen: tf.keras.Model, transform, images: np.ndarray, seed: int
) -> dict[str, Any] | None:
    """AdaBN on a *random* backbone's frozen BatchNormalization under ``frozen_bn:
    recalibrated`` (:func:`calibrate`); None when nothing was recalibrated."""
    bn_layers = len(frozen_batchnorm_layers(frozen))
    if init != "random" or params.frozen_bn != "recalibrated" or not bn_layers:
        return None
    calibration = calibrate(
        frozen, transform, images, params.bn_calibration_images, params.features_batch_size, seed
    )
    print(
        f"recalibrated {bn_layers} frozen BatchNormalization layers on "
        f"{calibration['images']} training images"
    )
    return calibration


def extract(params: Params, run: str, seed: int, part: str) -> dict[str, Any]:
    """Extract the features of ``run`` (``<backbone>-<init>``), its backbone built under
    ``seed``, into ``data/features/<run>/<part>``; returns its meta, health and speed."""
    backbone, init = paths.parse_run_name(run)
    entry = get_backbone(backbone)
    settings = run_settings(params, backbone)
    trainable = entry.trainable_layers(params.trainable_layers)
    batch_size = params.features_batch_size
    sample_seed = params.data.random_state  # subsets and health: the same every seed
    runtime.configure(seed, deterministic=False)  # inference only; keep the fast kernels
    precision = runtime.set_precision(
        params.precision, bf16_supported=entry.bf16, bf16_auto=entry.bf16_auto
    )
    run_id = f"{run}/{part}"
    out_dir = paths.features_dir(run_id)
    dataset = load_dataset(paths.DATASET_FILE)
    rows = subset_rows(
        load_split(paths.SPLIT_FILE), dataset.labels, settings["fraction"], sample_seed
    )
    start = time.perf_counter()
    model = build_backbone(backbone, init, settings["input_size"], seed, settings["descriptor"])
    cut = split_frozen_tail(build_classifier(model), trainable)
    transform = image_transform(entry.preprocess, settings["input_size"])
    calibration = calibrated(
        params, init, cut.frozen, transform, dataset.images[rows["train"]], seed
    )
    forward = extractor(cut.frozen, transform)
    partial = paths.partial_features_dir(run_id)  # survives a kill: the next run resumes it
    partial.mkdir(parents=True, exist_ok=True)
    fingerprint = json_sha256(
        {
            "run": run,
            "settings": settings,
            "trainable_layers": trainable,
            "weights": weights_sha256(cut.frozen),
            "rows": {name: json_sha256(rows[name].tolist()) for name in SPLITS},
            "dataset": file_sha256(paths.DATASET_FILE),
            "batch_size": batch_size,
            "precision": precision,
            "code": code_digest(__name__, backbone),
        }
    )
    speeds = {
        name: extract_to_file(
            forward,
            dataset.images[rows[name]],
            partial / f"{name}.npy",
            batch_size,
            f"{run} {name}",
            fingerprint=fingerprint,
        )
        for name in SPLITS
    }
    with atomic_path(out_dir, directory=True) as tmp:
        for name in SPLITS:  # linked, not moved: a failure below keeps the partial files
            link_or_copy(partial / f"{name}.npy", tmp / f"{name}.npy")
        np.savez(
            tmp / LABELS,
            **{f"{n}_labels": dataset.labels[rows[n]] for n in SPLITS},
            **{f"{n}_rows": rows[n] for n in SPLITS},
        )
        tf.keras.mixed_precision.set_global_policy("float32")
        model.save_weights(str(tmp / BACKBONE_WEIGHTS))
        meta = {
            "backbone": backbone,
            "init": init,
            "seed": seed if init == "random" else None,  # pretrained: the same for every seed
            "precision": precision,
            **settings,
            "frozen_bn": params.frozen_bn if calibration else "inference",
            "bn_calibration_images": calibration["images"] if calibration else 0,
            "trainable_layers": trainable,
            "trainable_layer_names": cut.trainable_layer_names,
            "boundary_shapes": [list(s) for s in cut.boundary_shapes],
            "feature_size": cut.feature_size,
            "dtype": "bfloat16" if precision == "bf16" else "float32",
            "counts": {n: int(len(rows[n])) for n in SPLITS},
        }
        write_json(tmp / META, meta)
        bn_layers = len(frozen_batchnorm_layers(cut.frozen))
        health = measure_health(tmp, meta, init, bn_layers, calibration, sample_seed)
        write_json(tmp / HEALTH, health)
    shutil.rmtree(partial)
    return {
        **meta,
        "health": health,
        "seconds": round(time.perf_counter() - start, 1),
        "images_per_second": {k: round(v, 1) for k, v in speeds.items()},
    }


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link of ``source`` at ``target`` (no second copy on disk), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def measure_health(
    folder: Path,
    meta: dict[str, Any],
    init: str,
    bn_layers: int,
    calibration: dict[str, Any] | None,
    sample_seed: int,
) -> dict[str, Any]:
    """Health of the cached training features (first ``HEALTH_IMAGES`` of a seeded sample)."""
    cache = CachedFeatures(folder)
    stored = cache.array("train")
    rng = np.random.default_rng([sample_seed, HEALTH_STREAM])
    pick = np.sort(rng.permutation(len(stored))[:HEALTH_IMAGES])
    return health_summary(
        cache.decode(stored[pick]),
        init=init,
        frozen_bn=meta["frozen_bn"],
        frozen_batchnorm_layers=bn_layers,
        calibration=calibration,
    )
