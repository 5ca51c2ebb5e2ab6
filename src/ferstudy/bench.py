"""``ferstudy bench``: how close the pipeline sits to its cost floor, measured in one run.

In one process, on one machine: forward-pass images/s of each backbone at its input size
(fp32 and bf16); the feature stage's images/s; seconds per training epoch on cached
features; and the same training done the naive way (Keras ``fit`` of the full model with
frozen layers on images, every epoch through the backbone) on the same subset. Optionally
(``--precision-check``) the final validation accuracy of one run under fp32 and bf16.
Prints a table and writes JSON with the machine described.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferstudy import CLASSES, runtime
from ferstudy import params as P
from ferstudy.backbones import REGISTRY, build_backbone, get_backbone
from ferstudy.features import extract_to_file, extractor
from ferstudy.io import load_dataset, load_split, write_json
from ferstudy.split import stratified_subset
from ferstudy.stats import Summary, paired_difference, summarize
from ferstudy.transfer import build_classifier, image_transform, split_frozen_tail

keras = tf.keras


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpus = [
        tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": gpus,
        "tensorflow": tf.__version__,
        "fast_bf16": runtime.has_fast_bf16(),
        "python": platform.python_version(),
    }


def _cut(backbone: str, size: int, seed: int = 0):
    entry = get_backbone(backbone)
    model = build_backbone(backbone, entry.architecture_init, size, seed)
    return split_frozen_tail(build_classifier(model), entry.trainable_layers(4))


def forward_speed(backbone: str, precision: str, batches: int, batch_size: int = 64) -> float:
    """Images/s of the frozen part on uint8 48x48 input (resize and preprocessing included)."""
    entry = get_backbone(backbone)
    runtime.set_precision(precision, bf16_supported=entry.bf16)
    cut = _cut(backbone, entry.native_input_size)
    extract = extractor(cut.frozen, image_transform(entry.preprocess, entry.native_input_size))
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch_size, 48, 48), np.uint8))
    extract(images).numpy()
    start = time.perf_counter()
    for _ in range(batches):
        extract(images).numpy()
    runtime.set_precision("fp32")
    return batches * batch_size / (time.perf_counter() - start)


def cached_vs_naive(
    images: np.ndarray, labels: np.ndarray, backbone: str, epochs: int, batch_size: int, lr: float
) -> dict[str, Any]:
    """The project's way (features once, then the tail) against Keras fit on images."""
    entry = get_backbone(backbone)
    size = entry.native_input_size
    y = np.eye(len(CLASSES), dtype=np.float32)[labels]
    runtime.set_precision("fp32")

    keras.utils.set_random_seed(0)
    cut = _cut(backbone, size)
    transform = image_transform(entry.preprocess, size)
    extract = extractor(cut.frozen, transform)
    for n in (1, batch_size, len(images) % batch_size or batch_size):
        extract(tf.constant(images[:n]))  # trace every batch shape before timing, as a stage
        # on the full dataset amortises it
    with tempfile.TemporaryDirectory() as tmp:  # the feature stage's own code path
        stage_speed = extract_to_file(extract, images, Path(tmp) / "f.npy", batch_size, "features")
        feats = np.load(Path(tmp) / "f.npy")
    feature_seconds = len(images) / stage_speed
    batches = [tf.constant(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    start = time.perf_counter()  # the same forward passes alone: no input pipeline, no file
    for batch in batches:
        extract(batch).numpy()
    forward_alone = len(images) / (time.perf_counter() - start)
    cut.tail.compile(keras.optimizers.Adam(lr), "categorical_crossentropy", ["accuracy"])
    start = time.perf_counter()
    cut.tail.fit(feats, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    train_seconds = time.perf_counter() - start

    keras.utils.set_random_seed(0)
    entry = get_backbone(backbone)
    classifier = build_classifier(build_backbone(backbone, entry.architecture_init, size, 0))
    split_frozen_tail(classifier, entry.trainable_layers(4))  # freezes all but the tail
    inp = keras.Input((48, 48), dtype="uint8")
    naive = keras.Model(inp, classifier(transform(inp)))
    naive.compile(keras.optimizers.Adam(lr), "categorical_crossentropy", ["accuracy"])
    data = (
        tf.data.Dataset.from_tensor_slices((images, y))
        .shuffle(len(images), seed=0)
        .batch(batch_size)
        .prefetch(2)
    )
    start = time.perf_counter()
    naive.fit(data, epochs=epochs, verbose=0)
    naive_seconds = time.perf_counter() - start
    cached = feature_seconds + train_seconds
    return {
        "backbone": backbone,
        "images": int(len(images)),
        "epochs": epochs,
        "features_seconds": round(feature_seconds, 2),
        "features_images_per_second": round(len(images) / feature_seconds, 1),
        "cached_train_seconds_per_epoch": round(train_seconds / epochs, 3),
        "cached_total_seconds": round(cached, 2),
        "naive_seconds_per_epoch": round(naive_seconds / epochs, 2),
        "naive_total_seconds": round(naive_seconds, 2),
        "speedup": round(naive_seconds / cached, 1),
        "forward_alone_images_per_second": round(forward_alone, 1),
        "features_vs_forward": round(len(images) / feature_seconds / forward_alone, 3),
    }


@contextlib.contextmanager
def _workdir_with_data() -> Any:
    """A temporary working folder that sees the project's dataset and split files."""
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="ferstudy-bench-") as tmp:
        (Path(tmp) / "data").mkdir()
        for f in (P.DATASET_FILE, P.SPLIT_FILE):
            os.symlink(here / f, Path(tmp) / f)
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(here)


#: ``auto`` keeps bf16 only where the interval of its test-accuracy change lies above this.
BF16_TOLERANCE = -0.01


def seed_correctness_at(params: dict[str, Any], run: str, seeds: list[int]) -> np.ndarray:
    """Train and evaluate ``run`` under each seed in a scratch folder; per seed, which test
    images it classified right."""
    from ferstudy import evaluate, features, train

    backbone, init = P.parse_run_name(run)
    labels = load_dataset(P.DATASET_FILE).labels
    correct = []
    with _workdir_with_data():
        for seed in seeds:
            features.run(params, backbone, init, seed)
            train.run(params, backbone, init, seed)
            evaluate.run(P.run_id(run, seed))
            with np.load(P.eval_dir(P.run_id(run, seed)) / evaluate.TEST_PROBABILITIES) as npz:
                correct.append(npz["probabilities"].argmax(axis=1) == labels[npz["rows"]])
    return np.array(correct)


def precision_effect(params: dict[str, Any], runs: list[str], seeds: list[int]) -> dict[str, Any]:
    """Test accuracy of each run with its features in bf16 minus fp32, the same seeds, paired
    on the same test images (:func:`ferstudy.stats.paired_difference`); the tail trains in
    fp32 either way. ``keeps_bf16``: the 95 % interval lies above ``BF16_TOLERANCE``."""
    out: dict[str, Any] = {"seeds": seeds, "tolerance": BF16_TOLERANCE, "runs": {}}
    for run in runs:
        correct, record = {}, {}
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            correct[precision] = seed_correctness_at({**params, "precision": precision}, run, seeds)
            record[precision] = {
                "test_accuracy": summarize(correct[precision].mean(axis=1)).as_dict(),
                "per_seed": [round(float(a), 6) for a in correct[precision].mean(axis=1)],
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(f"precision check {run} {precision}: {record[precision]}", flush=True)
        d = paired_difference(correct["bf16"], correct["fp32"])
        out["runs"][run] = {
            **record,
            "bf16_minus_fp32": d.as_dict(),
            "keeps_bf16": d.low > BF16_TOLERANCE,
        }
    out["keeps_bf16"] = all(r["keeps_bf16"] for r in out["runs"].values())
    return out


def precision_table(result: dict[str, Any]) -> str:
    """The precision check as a Markdown table."""
    lines = [
        "| run | fp32 test acc | bf16 test acc | bf16 - fp32 (points, 95 % CI) | bf16 kept |",
        "|---|---:|---:|---|---|",
    ]
    for run, r in result["runs"].items():
        d = r["bf16_minus_fp32"]
        lines.append(
            f"| {run} | {Summary.from_dict(r['fp32']['test_accuracy']).describe()} | "
            f"{Summary.from_dict(r['bf16']['test_accuracy']).describe()} | "
            f"{100 * d['difference']:+.2f} ({100 * d['low']:+.2f} to {100 * d['high']:+.2f}) | "
            f"{'yes' if r['keeps_bf16'] else 'no'} |"
        )
    return "\n".join(lines)


def run(
    params: dict[str, Any],
    *,
    subset: int,
    epochs: int,
    backbone: str,
    batches: int,
    out: Path,
    backbones: list[str] | None = None,
) -> dict[str, Any]:
    """The benchmark; ``backbones`` limits the forward-pass timings (default: all)."""
    runtime.configure(0, deterministic=False)
    result: dict[str, Any] = {"machine": machine(), "forward_images_per_second": {}}
    for name in backbones or list(REGISTRY):
        entry = get_backbone(name)
        speeds = {"fp32": round(forward_speed(name, "fp32", batches), 1)}
        if entry.bf16:
            speeds["bf16"] = round(forward_speed(name, "bf16", batches), 1)
        result["forward_images_per_second"][name] = {
            "input_size": entry.native_input_size,
            **speeds,
        }
        print(f"forward {name}: {speeds}", flush=True)
    dataset = load_dataset(P.DATASET_FILE)
    train_rows = load_split(P.SPLIT_FILE)["train"]
    rows = stratified_subset(train_rows, dataset.labels, min(1.0, subset / len(train_rows)), 0)
    result["cached_vs_naive"] = cached_vs_naive(
        dataset.images[rows],
        dataset.labels[rows],
        backbone,
        epochs,
        int(params.get("batch_size", 64)),
        float(params.get("lr", 1e-4)),
    )
    print(f"cached vs naive: {result['cached_vs_naive']}", flush=True)
    write_json(out, result)
    return result


def table(result: dict[str, Any]) -> str:
    """The benchmark as Markdown tables."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, GPUs: {', '.join(m['gpus']) or 'none'}, "
        f"TensorFlow {m['tensorflow']}",
        "",
        "| backbone | input | forward fp32 (img/s) | forward bf16 (img/s) |",
        "|---|---:|---:|---:|",
    ]
    for name, s in result["forward_images_per_second"].items():
        lines.append(f"| {name} | {s['input_size']} | {s['fp32']} | {s.get('bf16', 'n/a')} |")
    c = result["cached_vs_naive"]
    lines += [
        "",
        f"Training {c['backbone']} on {c['images']} images for {c['epochs']} epochs:",
        "",
        "| way | features (s) | per epoch (s) | total (s) |",
        "|---|---:|---:|---:|",
        f"| cached features (this project) | {c['features_seconds']} | "
        f"{c['cached_train_seconds_per_epoch']} | {c['cached_total_seconds']} |",
        f"| naive Keras fit on images | - | {c['naive_seconds_per_epoch']} | "
        f"{c['naive_total_seconds']} |",
        "",
        f"Speed-up: **{c['speedup']}x**. The feature stage ran at "
        f"{c['features_images_per_second']} img/s, {100 * c['features_vs_forward']:.0f} % of the "
        f"same forward passes over the same images timed alone "
        f"({c['forward_alone_images_per_second']} img/s).",
    ]
    return "\n".join(lines)
