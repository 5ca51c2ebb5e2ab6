"""Stage ``features``: the frozen part's output for every image, computed once per run.

Writes ``data/features/<backbone>-<init>/seed<seed>/``: ``train.npy``, ``val.npy``,
``test.npy`` (one row per image, the frozen part's boundary tensors flattened, float32, or
bfloat16 stored as uint16 bits under ``precision: bf16``), ``labels.npz`` (labels and
dataset rows per subset), ``backbone.weights.h5`` (the backbone exactly as used, so training
rebuilds it without any download) and ``meta.json``; and
``metrics/features/<backbone>-<init>/seed<seed>.json``, the features' health
(:mod:`ferstudy.health`), with a flag and its reason when they carry no signal.

The seed decides a *random* backbone's weights, so random runs have features per seed. A
pretrained backbone's features do not depend on the seed (the ``fraction`` subset is drawn
with ``data.random_state``, so every seed sees the same images): a seed whose sibling seed
already holds features of the same recipe (same settings, dataset, split and code) reuses
them byte for byte, and DVC's content-addressed cache stores them once.

``frozen_bn: recalibrated`` re-estimates the moving statistics of a *random* backbone's
frozen BatchNormalization layers on ``bn_calibration_images`` training images before any
feature is computed (AdaBN; :func:`ferstudy.transfer.recalibrate_batchnorm`); the saved
backbone weights hold the recalibrated statistics, so training, evaluation and prediction
compute exactly what was cached. Pretrained backbones keep their own statistics.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from ferstudy import params as P
from ferstudy import runtime
from ferstudy.backbones import build_backbone, get_backbone
from ferstudy.errors import FerError
from ferstudy.health import health_summary
from ferstudy.io import (
    SPLITS,
    atomic_path,
    file_sha256,
    load_dataset,
    load_split,
    read_json,
    write_json,
)
from ferstudy.split import stratified_subset
from ferstudy.transfer import (
    build_classifier,
    flatten_boundary,
    frozen_batchnorm_layers,
    image_transform,
    recalibrate_batchnorm,
    split_frozen_tail,
)

META = "meta.json"
LABELS = "labels.npz"
BACKBONE_WEIGHTS = "backbone.weights.h5"
#: Training images on which the feature health is measured.
HEALTH_IMAGES = 512
#: Independent random streams (with the seed) for calibration and health images.
CALIBRATION_STREAM, HEALTH_STREAM = 1, 2
#: The code a features folder is computed by (the features stage's code deps in dvc.yaml).
RECIPE_MODULES = (
    "features.py",
    "health.py",
    "backbones.py",
    "onet.py",
    "dlib_face.py",
    "transfer.py",
    "split.py",
)


def run_settings(params: dict[str, Any], backbone: str) -> dict[str, Any]:
    """The settings of one backbone's runs: input size, data fraction, descriptor."""
    entry = get_backbone(backbone)
    per_backbone = P.require(params, f"backbone.{backbone}")
    fraction = float(per_backbone.get("fraction", 1.0))
    if not 0 < fraction <= 1:
        raise FerError(f"backbone.{backbone}.fraction must be in (0, 1] (got {fraction})")
    return {
        "input_size": int(per_backbone["input_size"]),
        "fraction": fraction,
        "descriptor": entry.check_descriptor(per_backbone.get("descriptor")),
    }


def health_file(run_id: str) -> Path:
    return P.METRICS_DIR / "features" / f"{run_id}.json"


def recipe_digest(settings: dict[str, Any]) -> str:
    """SHA-256 of everything a pretrained backbone's features depend on: ``settings``, the
    dataset and split files and the source of :data:`RECIPE_MODULES`."""
    package = Path(__file__).parent
    parts = {
        "settings": settings,
        "dataset": file_sha256(P.DATASET_FILE),
        "split": file_sha256(P.SPLIT_FILE),
        "code": {name: file_sha256(package / name) for name in RECIPE_MODULES},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def reusable_sibling(run: str, recipe: str, exclude: Path) -> Path | None:
    """Another seed's features folder of ``run`` computed by the same recipe, if any."""
    for folder in sorted((P.FEATURES_DIR / run).glob("seed*")):
        if folder == exclude or not (folder / META).is_file():
            continue
        try:
            if read_json(folder / META).get("recipe") == recipe:
                return folder
        except FerError:
            continue
    return None


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


def extractor(frozen: tf.keras.Model, transform) -> tf.types.experimental.GenericFunction:
    """Compiled uint8 image batch -> flat feature batch (stored dtype: float32 or bf16 bits)."""

    @tf.function(reduce_retracing=True)
    def extract(images: tf.Tensor) -> tf.Tensor:
        flat = flatten_boundary(frozen(transform(images), training=False))
        if flat.dtype == tf.bfloat16:
            return tf.bitcast(flat, tf.uint16)
        return tf.cast(flat, tf.float32)

    return extract


def extract_to_file(extract, images: np.ndarray, path: Path, batch_size: int, desc: str) -> float:
    """Run ``extract`` over ``images`` in batches into a .npy file; return images per second."""
    first = extract(tf.constant(images[:1])).numpy()
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=first.dtype, shape=(len(images), first.shape[1])
    )
    data = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).prefetch(2)
    start, offset = time.perf_counter(), 0
    with tqdm(total=len(images), desc=desc, unit="img", mininterval=5.0) as bar:
        for batch in data:
            result = extract(batch).numpy()
            out[offset : offset + len(result)] = result
            offset += len(result)
            bar.update(len(result))
    out.flush()
    del out
    return len(images) / max(time.perf_counter() - start, 1e-9)


def run(params: dict[str, Any], backbone: str, init: str, seed: int) -> dict[str, Any]:
    """The ``features`` stage for one backbone x init under one seed."""
    settings = run_settings(params, backbone)
    trainable = get_backbone(backbone).trainable_layers(int(params.get("trainable_layers", 4)))
    batch_size = int(params.get("features_batch_size", 64))
    frozen_bn = str(params.get("frozen_bn", "recalibrated"))
    sample_seed = int(params["data"]["random_state"])  # subsets and health: the same every seed
    runtime.configure(seed, deterministic=False)  # inference only; keep the fast kernels
    entry = get_backbone(backbone)
    precision = runtime.set_precision(
        str(params.get("precision", "fp32")),
        bf16_supported=entry.bf16,
        bf16_auto=entry.bf16_auto,
    )
    run = P.run_name(backbone, init)
    run_id = P.run_id(run, seed)
    out_dir = P.features_dir(run_id)
    recipe = None
    if init == "pretrained":
        recipe_settings = {
            **settings,
            "backbone": backbone,
            "precision": precision,
            "trainable_layers": trainable,
            "features_batch_size": batch_size,
            "sample_seed": sample_seed,
        }
        recipe = recipe_digest(recipe_settings)
        sibling = reusable_sibling(run, recipe, out_dir)
        if sibling is not None:
            return reuse(sibling, out_dir, run_id)
    dataset = load_dataset(P.DATASET_FILE)
    split = load_split(P.SPLIT_FILE)
    rows = {
        name: stratified_subset(split[name], dataset.labels, settings["fraction"], sample_seed)
        for name in SPLITS
    }
    start = time.perf_counter()
    model = build_backbone(backbone, init, settings["input_size"], seed, settings["descriptor"])
    cut = split_frozen_tail(build_classifier(model), trainable)
    transform = image_transform(get_backbone(backbone).preprocess, settings["input_size"])
    bn_layers = len(frozen_batchnorm_layers(cut.frozen))
    calibration = None
    if init == "random" and frozen_bn == "recalibrated" and bn_layers:
        count = int(params.get("bn_calibration_images", 1024))
        calibration = calibrate(
            cut.frozen, transform, dataset.images[rows["train"]], count, batch_size, seed
        )
        print(
            f"recalibrated {bn_layers} frozen BatchNormalization layers on "
            f"{calibration['images']} training images"
        )
    extract = extractor(cut.frozen, transform)
    speeds = {}
    with atomic_path(out_dir, directory=True) as tmp:
        for name in SPLITS:
            speeds[name] = extract_to_file(
                extract,
                dataset.images[rows[name]],
                tmp / f"{name}.npy",
                batch_size,
                f"{backbone}-{init} {name}",
            )
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
            "seed": seed if recipe is None else None,  # pretrained: the same for every seed
            "recipe": recipe,
            "precision": precision,
            "input_size": settings["input_size"],
            "fraction": settings["fraction"],
            "descriptor": settings["descriptor"],
            "frozen_bn": frozen_bn if calibration else "inference",
            "bn_calibration_images": calibration["images"] if calibration else 0,
            "trainable_layers": trainable,
            "trainable_layer_names": cut.trainable_layer_names,
            "boundary_shapes": [list(s) for s in cut.boundary_shapes],
            "feature_size": cut.feature_size,
            "dtype": "bfloat16" if precision == "bf16" else "float32",
            "counts": {n: int(len(rows[n])) for n in SPLITS},
        }
        write_json(tmp / META, meta)
        health = measure_health(tmp, meta, init, bn_layers, calibration, sample_seed)
    write_json(health_file(run_id), health)
    seconds = time.perf_counter() - start
    return {
        **meta,
        "health": health,
        "seconds": round(seconds, 1),
        "images_per_second": {k: round(v, 1) for k, v in speeds.items()},
    }


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


def reuse(sibling: Path, out_dir: Path, run_id: str) -> dict[str, Any]:
    """Copy a sibling seed's features (same recipe) and its health record to ``run_id``."""
    start = time.perf_counter()
    with atomic_path(out_dir, directory=True) as tmp:
        for path in sorted(sibling.iterdir()):
            shutil.copy2(path, tmp / path.name)
    health = read_json(health_file(f"{sibling.parent.name}/{sibling.name}"))
    write_json(health_file(run_id), health)
    meta = read_json(out_dir / META)
    print(f"features {run_id}: reused {sibling} (pretrained: the same for every seed)")
    return {
        **meta,
        "health": health,
        "seconds": round(time.perf_counter() - start, 1),
        "images_per_second": {},
        "reused": str(sibling),
    }


class CachedFeatures:
    """Read access to one run's cached features (memory-mapped, decoded to float32)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_json(self.folder / META)
        with np.load(self.folder / LABELS, allow_pickle=False) as npz:
            self.labels = {n: npz[f"{n}_labels"] for n in SPLITS}
            self.rows = {n: npz[f"{n}_rows"] for n in SPLITS}

    def array(self, name: str) -> np.ndarray:
        """The raw stored array of a subset (memory-mapped)."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        if self.meta["dtype"] == "bfloat16":
            return stored.view(ml_dtypes.bfloat16).astype(np.float32)
        return np.asarray(stored, dtype=np.float32)
