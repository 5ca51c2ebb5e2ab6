"""``ferstudy bench``: how close the pipeline sits to its cost floor, measured in one run.

In one process, on one machine: forward-pass images/s of each backbone at its input size
(fp32 and bf16); the feature stage's images/s; seconds per training epoch on cached
features; and the same training done the naive way (Keras ``fit`` of the full model with
frozen layers on images, every epoch through the backbone) on the same subset. Then each
stage against its floor (``floors``): the feature stage against the same forward passes
alone; the tail's training GFLOPS against TensorFlow's matmul rate of the shape of
MobileNet's tail; and a checkpoint write against the training time between two writes.
Prints a table and writes JSON with the machine described. ``ferstudy precision-check``
(:func:`precision_effect`) measures what bf16 features cost in test accuracy, paired over
seeds and test images.
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

from ferstudy import CLASSES
from ferstudy.analysis.stats import Summary, paired_difference, summarize
from ferstudy.core import paths, runtime
from ferstudy.core.errors import FerError
from ferstudy.core.files import SPLITS, load_dataset, load_split, write_json
from ferstudy.core.params import Params
from ferstudy.data.feature_cache import LABELS, META, CachedFeatures, extract_to_file, extractor
from ferstudy.data.splits import stratified_subset
from ferstudy.models.registry import REGISTRY, build_backbone, get_backbone
from ferstudy.models.transfer import build_classifier, image_transform, split_frozen_tail

keras = tf.keras
layers = keras.layers
#: The matmul of MobileNet's tail at 224x224 and batch 64: 64 x 7 x 7 rows, 1,024 channels.
MATMUL_SHAPE = (3136, 1024, 1024)
#: Epochs of tail training timed, after one untimed epoch that traces the training step.
TAIL_EPOCHS = 2
#: Each stage's ratio to its floor (checkpoint: the largest share of training time).
TARGETS = {"features_vs_forward": 0.95, "tail_vs_matmul_fp32": 0.70, "checkpoint_share": 0.05}


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
        for f in (paths.DATASET_FILE, paths.SPLIT_FILE):
            os.symlink(here / f, Path(tmp) / f)
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(here)


def matmul_gflops(
    precision: str,
    m: int = MATMUL_SHAPE[0],
    k: int = MATMUL_SHAPE[1],
    n: int = MATMUL_SHAPE[2],
    repeats: int = 10,
) -> float:
    """TensorFlow's rate, in GFLOPS, of an (m x k) by (k x n) matmul in fp32 or bf16."""
    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[precision]
    a = tf.cast(tf.random.stateless_normal((m, k), (0, 0)), dtype)
    b = tf.cast(tf.random.stateless_normal((k, n), (0, 1)), dtype)
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def _forward_flops(layer: keras.layers.Layer, output_shape: tf.TensorShape) -> float:
    """FLOPs of one image through a Dense, Conv2D or DepthwiseConv2D layer (0 for others)."""
    if isinstance(layer, layers.DepthwiseConv2D):
        kernel = layer.depthwise_kernel
    elif isinstance(layer, (layers.Conv2D, layers.Dense)):
        kernel = layer.kernel
    else:
        return 0.0
    positions = np.prod(output_shape[1:-1])  # output pixels (channels last); 1 for Dense
    return 2.0 * float(np.prod(kernel.shape)) * float(positions)


def tail_training_flops(tail_model: keras.Model) -> float:
    """FLOPs of one training image through a model: 2 per multiply-add of its Dense, Conv2D
    and DepthwiseConv2D layers, elementwise ops ignored. Each such layer costs its forward
    pass, as much again for its weights' gradient when it trains, and as much again for its
    input's gradient when a trainable layer lies upstream: a layer fed by the features alone
    needs none, and TensorFlow does not compute it."""
    needs_gradient: dict[int, bool] = {}  # node -> its output depends on trainable weights
    total = 0.0

    def visit(node: Any) -> bool:
        nonlocal total
        if id(node) not in needs_gradient:
            upstream = any([visit(parent) for parent in node.parent_nodes])
            trains = bool(node.layer.trainable_weights)
            shape = tf.nest.flatten(node.outputs)[0].shape
            total += _forward_flops(node.layer, shape) * (1 + trains + upstream)
            needs_gradient[id(node)] = trains or upstream
        return needs_gradient[id(node)]

    for output in tail_model.outputs:
        history = output._keras_history
        visit(history.layer._inbound_nodes[history.node_index])
    return total


def _random_features(folder: Path, images: int, size: int) -> CachedFeatures:
    """A feature cache in the features stage's layout: ``images`` random non-negative rows
    (as after a ReLU) of ``size`` float32 features."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "train.npy", np.abs(rng.standard_normal((images, size), np.float32)))
    labels = rng.integers(0, len(CLASSES), images)
    np.savez(
        folder / LABELS,
        **{f"{n}_labels": labels for n in SPLITS},
        **{f"{n}_rows": np.arange(images) for n in SPLITS},
    )
    write_json(folder / META, {"dtype": "float32"})
    return CachedFeatures(folder)


def tail_and_checkpoint(
    params: Params, backbone: str, images: int, train_images: int
) -> dict[str, Any]:
    """Train ``backbone``'s tail (native input size, fp32) as the train stage does (Keras
    ``fit`` on :class:`ferstudy.stages.training.FeatureBatches` of a memory-mapped feature file) on
    ``images`` random features (its time does not depend on their values) for
    ``TAIL_EPOCHS`` epochs; then write its :class:`ferstudy.models.training.Checkpoint` with the
    optimizer state twice, in a scratch folder. The epoch time on ``train_images`` is the
    measured time per image times ``train_images``. A write comes at most once an epoch,
    and under the train stage's schedule no sooner than its interval and
    ``CHECKPOINT_COST_FACTOR`` times a write after the previous one."""
    from ferstudy.models import training

    entry = get_backbone(backbone)
    batch_size = params.batch_size
    runtime.set_precision("fp32")
    keras.utils.set_random_seed(0)
    cut = _cut(backbone, entry.native_input_size)
    optimizer = training.make_optimizer(params.optimizer, params.need("lr"))
    optimizer.build(cut.tail.trainable_variables)
    cut.tail.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    flops = tail_training_flops(cut.tail)
    with _workdir_with_data():
        cache = _random_features(Path("features"), images, cut.feature_size)
        batches = training.FeatureBatches(cache, "train", batch_size, seed=0)
        cut.tail.fit(batches, epochs=1, shuffle=False, verbose=0)  # traces the training step
        start = time.perf_counter()
        cut.tail.fit(batches, epochs=TAIL_EPOCHS, shuffle=False, verbose=0)
        per_image = (time.perf_counter() - start) / (TAIL_EPOCHS * images)
        live = Path("live")
        live.mkdir()
        generators = training.seed_dropout(cut.tail, 0)
        checkpoint = training.Checkpoint("bench", "bench", cut.tail, optimizer, live, generators)
        for epoch in (1, 2):
            checkpoint.save(epoch)
        size = sum(f.stat().st_size for f in checkpoint.dir.rglob("*") if f.is_file())
    write = checkpoint.seconds / checkpoint.writes
    epoch_seconds = per_image * train_images
    interval = checkpoint.interval
    wait = max(interval, training.CHECKPOINT_COST_FACTOR * write) if interval else 0.0
    between = max(wait, epoch_seconds)
    return {
        "tail": {
            "backbone": backbone,
            "input_size": entry.native_input_size,
            "images": images,
            "epochs": TAIL_EPOCHS,
            "batch_size": batch_size,
            "training_flops_per_image": round(flops),
            "seconds_per_epoch": round(per_image * images, 3),
            "images_per_second": round(1 / per_image, 1),
            "gflops": round(flops / per_image / 1e9, 2),
        },
        "checkpoint": {
            "checkpoint_seconds": round(write, 4),
            "megabytes": round(size / 1e6, 1),
            "train_images": train_images,
            "epoch_seconds": round(epoch_seconds, 3),
            "interval_seconds": interval,
            "cost_factor": training.CHECKPOINT_COST_FACTOR,
            "seconds_between_writes": round(between, 2),
            "per_epoch_share": round(write / epoch_seconds, 4),
            "scheduled_share": round(write / between, 4),
        },
    }


def floors(
    params: Params,
    comparison: dict[str, Any],
    tail_backbone: str,
    tail_images: int,
    train_images: int,
) -> dict[str, Any]:
    """Each stage's ratio to its floor, with ``TARGETS`` and whether each is met."""
    matmul = {p: round(matmul_gflops(p), 1) for p in ("fp32", "bf16")}
    measured = tail_and_checkpoint(params, tail_backbone, tail_images, train_images)
    ratios = {
        "features_vs_forward": comparison["features_vs_forward"],
        "tail_vs_matmul_fp32": round(measured["tail"]["gflops"] / matmul["fp32"], 3),
        "checkpoint_share": measured["checkpoint"]["scheduled_share"],
    }
    return {
        "features_backbone": comparison["backbone"],
        "features_vs_forward": ratios["features_vs_forward"],
        "tail_gflops": measured["tail"]["gflops"],
        "tail_vs_matmul_fp32": ratios["tail_vs_matmul_fp32"],
        "matmul_gflops": matmul,
        "matmul_shape": list(MATMUL_SHAPE),
        **measured,
        "targets": TARGETS,
        "met": {
            name: ratios[name] <= target if name == "checkpoint_share" else ratios[name] >= target
            for name, target in TARGETS.items()
        },
    }


#: ``auto`` keeps bf16 only where the interval of its test-accuracy change lies above this.
BF16_TOLERANCE = -0.01


def seed_correctness_at(params: Params, run: str, seeds: list[int]) -> np.ndarray:
    """Train and evaluate ``run`` under each seed in a scratch folder; per seed, which test
    images it classified right."""
    from ferstudy.stages import evaluate, features, train

    labels = load_dataset(paths.DATASET_FILE).labels
    correct = []
    with _workdir_with_data():
        for seed in seeds:
            for stage in (features, train, evaluate):
                stage.run(params, run, seed)
            with np.load(paths.eval_dir(paths.run_id(run, seed)) / paths.TEST_PROBABILITIES) as npz:
                correct.append(npz["probabilities"].argmax(axis=1) == labels[npz["rows"]])
    return np.array(correct)


def precision_effect(params: Params, runs: list[str], seeds: list[int]) -> dict[str, Any]:
    """Test accuracy of each run with its features in bf16 minus fp32, paired on the same test
    images and on the same seeds (a seed decides the same head, data order and random
    backbone under both precisions: :func:`ferstudy.analysis.stats.paired_difference` with
    ``paired_seeds``); the tail trains in fp32 either way. ``keeps_bf16``: the 95 % interval
    lies above ``BF16_TOLERANCE``."""
    out: dict[str, Any] = {"seeds": seeds, "tolerance": BF16_TOLERANCE, "runs": {}}
    for run in runs:
        correct, record = {}, {}
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            correct[precision] = seed_correctness_at(
                params.model_copy(update={"precision": precision}), run, seeds
            )
            record[precision] = {
                "test_accuracy": summarize(correct[precision].mean(axis=1)).as_dict(),
                "per_seed": [round(float(a), 6) for a in correct[precision].mean(axis=1)],
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(f"precision check {run} {precision}: {record[precision]}", flush=True)
        d = paired_difference(correct["bf16"], correct["fp32"], paired_seeds=True)
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
    params: Params,
    *,
    subset: int,
    epochs: int,
    backbone: str,
    batches: int,
    out: Path,
    backbones: list[str] | None = None,
    tail_backbone: str = "mobilenet",
    tail_images: int = 1024,
) -> dict[str, Any]:
    """The benchmark; ``backbones`` limits the forward-pass timings (default: all);
    ``tail_backbone``'s tail is timed on ``tail_images`` against the matmul floor."""
    get_backbone(tail_backbone)  # an unknown name fails before the long timings
    if tail_images < 1:
        raise FerError("--tail-images must be at least 1")
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
    dataset = load_dataset(paths.DATASET_FILE)
    train_rows = load_split(paths.SPLIT_FILE)["train"]
    rows = stratified_subset(train_rows, dataset.labels, min(1.0, subset / len(train_rows)), 0)
    result["cached_vs_naive"] = cached_vs_naive(
        dataset.images[rows],
        dataset.labels[rows],
        backbone,
        epochs,
        params.batch_size,
        params.need("lr"),
    )
    print(f"cached vs naive: {result['cached_vs_naive']}", flush=True)
    result["floors"] = floors(
        params, result["cached_vs_naive"], tail_backbone, tail_images, len(train_rows)
    )
    print(f"floors: {result['floors']}", flush=True)
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
    return "\n".join(lines + ["", _floors_table(result)])


def _floors_table(result: dict[str, Any]) -> str:
    """Each stage against its floor as a Markdown table."""
    c, f = result["cached_vs_naive"], result["floors"]
    t, k, mm, target = f["tail"], f["checkpoint"], f["matmul_gflops"], f["targets"]
    met = {name: "yes" if ok else "no" for name, ok in f["met"].items()}
    m, kk, n = f["matmul_shape"]
    return "\n".join(
        [
            "Each stage against its floor, in the same run:",
            "",
            "| stage | measured | floor | ratio | target | met |",
            "|---|---:|---:|---:|---:|---|",
            f"| feature stage ({f['features_backbone']}) | {c['features_images_per_second']} "
            f"img/s | {c['forward_alone_images_per_second']} img/s (the same forward passes "
            f"alone) | {f['features_vs_forward']} | "
            f">= {target['features_vs_forward']} | {met['features_vs_forward']} |",
            f"| tail training ({t['backbone']} {t['input_size']}x{t['input_size']}, fp32) | "
            f"{t['gflops']} GFLOPS | {mm['fp32']} GFLOPS (fp32 matmul {m}x{kk} by {kk}x{n}) | "
            f"{f['tail_vs_matmul_fp32']} | >= {target['tail_vs_matmul_fp32']} | "
            f"{met['tail_vs_matmul_fp32']} |",
            f"| checkpoint, scheduled ({k['megabytes']} MB) | {k['checkpoint_seconds']} s a "
            f"write | {k['seconds_between_writes']} s of training between writes | "
            f"{k['scheduled_share']} | <= {target['checkpoint_share']} | "
            f"{met['checkpoint_share']} |",
            f"| checkpoint, every epoch (before) | {k['checkpoint_seconds']} s a write | "
            f"{k['epoch_seconds']} s an epoch of {k['train_images']} images | "
            f"{k['per_epoch_share']} | - | - |",
            "",
            f"The bf16 matmul of the same shape ran at {mm['bf16']} GFLOPS; the tail trains in "
            f"fp32 ({t['training_flops_per_image'] / 1e6:.1f} MFLOP per training image).",
        ]
    )
