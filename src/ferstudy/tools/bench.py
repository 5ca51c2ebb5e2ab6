"""``ferstudy bench``: how close the pipeline sits to its cost floor, measured in one run.

In one process, on one machine: forward-pass images/s of each backbone at its input size
(fp32 and bf16); seconds per training epoch on cached features against the same training
done the naive way (Keras ``fit`` of the full model with frozen layers on images, every epoch
through the backbone) on the same subset; and, for every backbone, each stage against its
floor (``floors``): the feature stage against the same forward passes alone, a training step
of the tail against the matmuls of the tail's own shapes plus the optimizer's update, and a
checkpoint write against the training time between two writes. Prints tables and writes JSON
with the machine described. ``ferstudy precision-check`` (:func:`precision_effect`) measures
what bf16 features cost in test accuracy, paired over seeds and test images.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf

from ferstudy import CLASSES
from ferstudy.analysis.stats import Summary, paired_difference, summarize
from ferstudy.core import paths, runtime
from ferstudy.core.errors import FerError
from ferstudy.core.files import SPLITS, load_dataset, load_split, write_json
from ferstudy.core.machine import cpu_kind
from ferstudy.core.params import Params
from ferstudy.data.feature_cache import LABELS, META, CachedFeatures, extract_to_file, extractor
from ferstudy.data.splits import stratified_subset
from ferstudy.models.registry import REGISTRY, build_backbone, get_backbone
from ferstudy.models.transfer import build_classifier, image_transform, split_frozen_tail

keras = tf.keras
layers = keras.layers
#: A large square-ish matmul (MobileNet's pointwise layer at 224x224, batch 64): the machine's
#: matmul rate, for reference beside the floors.
MATMUL_SHAPE = (3136, 1024, 1024)
#: Epochs of tail training timed, after one untimed epoch that traces the training step.
TAIL_EPOCHS = 2
#: Least seconds of repeated calls timed per matmul floor and per optimizer update.
MATMUL_SECONDS = 0.05
#: Least seconds of repeated passes over the images timed per feature floor side.
FEATURE_SECONDS = 1.0
#: Each stage's ratio to its floor (checkpoint: the largest share of training time).
TARGETS = {"features_vs_forward": 0.95, "tail_vs_floor_fp32": 0.70, "checkpoint_share": 0.05}


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
        "kind": cpu_kind(),  # what the timing log records
        "cores": os.cpu_count(),
        "gpus": gpus,
        "tensorflow": tf.__version__,
        "fast_bf16": runtime.has_fast_bf16(),
        "python": platform.python_version(),
    }


def _cut(params: Params, backbone: str, size: int | None = None) -> tuple[keras.Model, Any]:
    """``backbone``'s classifier and its frozen part and tail as the stages cut it under
    ``params`` (the input size, unless ``size`` is given, descriptor and trainable layers),
    built with its architecture's init and seed 0."""
    entry = get_backbone(backbone)
    settings = params.backbone_settings(backbone)
    model = build_backbone(
        backbone,
        entry.architecture_init,
        size or settings.input_size,
        0,
        descriptor=settings.descriptor,
    )
    classifier = build_classifier(model)
    return classifier, split_frozen_tail(
        classifier, entry.trainable_layers(params.trainable_layers)
    )


def _seconds_per_call(call: Callable[[], Any], seconds: float = MATMUL_SECONDS) -> float:
    """Seconds of one ``call()`` (which waits for its result), repeated for about ``seconds``
    after a warm-up call."""
    call()
    start = time.perf_counter()
    call()
    repeats = int(np.clip(seconds / max(time.perf_counter() - start, 1e-6), 3, 1000))
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def _images_per_second(call: Callable[[], Any], images: int) -> float:
    """Images/s of ``call()``, one pass over ``images`` images, repeated until
    ``FEATURE_SECONDS`` have passed (at least once)."""
    passes, start = 0, time.perf_counter()
    while True:
        call()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= FEATURE_SECONDS:
            return passes * images / elapsed


def forward_speed(
    params: Params, backbone: str, precision: str, batches: int, batch_size: int = 64
) -> float:
    """Images/s of the frozen part on uint8 48x48 input (resize and preprocessing included)."""
    entry = get_backbone(backbone)
    runtime.set_precision(precision, bf16_supported=entry.bf16)
    cut = _cut(params, backbone, entry.native_input_size)[1]
    extract = extractor(cut.frozen, image_transform(entry.preprocess, entry.native_input_size))
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch_size, 48, 48), np.uint8))
    extract(images).numpy()
    start = time.perf_counter()
    for _ in range(batches):
        extract(images).numpy()
    runtime.set_precision("fp32")
    return batches * batch_size / (time.perf_counter() - start)


def _trace(extract, images: np.ndarray, batch_size: int) -> None:
    """Trace every batch shape of ``extract`` before timing, as a stage on the full dataset
    amortises it."""
    for n in {1, batch_size, len(images) % batch_size or batch_size}:
        extract(tf.constant(images[:n]))


def feature_floor(params: Params, backbone: str, images: np.ndarray) -> dict[str, Any]:
    """The feature stage's way over ``images`` (its input pipeline into a memory-mapped .npy,
    :func:`extract_to_file`) against the same forward passes alone, at the stage's input
    size, descriptor, batch size and precision."""
    entry = get_backbone(backbone)
    settings = params.backbone_settings(backbone)
    precision = runtime.set_precision(
        params.precision, bf16_supported=entry.bf16, bf16_auto=entry.bf16_auto
    )
    keras.utils.set_random_seed(0)
    cut = _cut(params, backbone)[1]
    extract = extractor(cut.frozen, image_transform(entry.preprocess, settings.input_size))
    batch_size = params.features_batch_size
    _trace(extract, images, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        stage = _images_per_second(
            lambda: extract_to_file(extract, images, Path(tmp) / "f.npy", batch_size, backbone),
            len(images),
        )
    batches = [tf.constant(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    forward = _images_per_second(lambda: [extract(b).numpy() for b in batches], len(images))
    runtime.set_precision("fp32")
    return {
        "precision": precision,
        "input_size": settings.input_size,
        "images": int(len(images)),
        "stage_images_per_second": round(stage, 1),
        "forward_images_per_second": round(forward, 1),
        "ratio": stage / forward,
    }


def cached_vs_naive(
    params: Params, images: np.ndarray, labels: np.ndarray, backbone: str, epochs: int
) -> dict[str, Any]:
    """The project's way (features once, then the tail) against Keras fit on images."""
    entry = get_backbone(backbone)
    size, batch_size, lr = entry.native_input_size, params.batch_size, params.need("lr")
    y = np.eye(len(CLASSES), dtype=np.float32)[labels]
    runtime.set_precision("fp32")

    keras.utils.set_random_seed(0)
    cut = _cut(params, backbone, size)[1]
    transform = image_transform(entry.preprocess, size)
    extract = extractor(cut.frozen, transform)
    _trace(extract, images, batch_size)
    with tempfile.TemporaryDirectory() as tmp:  # the feature stage's own code path
        stage_speed = extract_to_file(extract, images, Path(tmp) / "f.npy", batch_size, "features")
        feats = np.load(Path(tmp) / "f.npy")
    feature_seconds = len(images) / stage_speed
    cut.tail.compile(keras.optimizers.Adam(lr), "categorical_crossentropy", ["accuracy"])
    start = time.perf_counter()
    cut.tail.fit(feats, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    train_seconds = time.perf_counter() - start

    keras.utils.set_random_seed(0)
    classifier = _cut(params, backbone, size)[0]  # all but the tail frozen
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


def _operands(m: int, k: int, n: int, precision: str, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[precision]
    a = tf.cast(tf.random.stateless_normal((m, k), (seed, 0)), dtype)
    return a, tf.cast(tf.random.stateless_normal((k, n), (seed, 1)), dtype)


def matmul_gflops(
    precision: str, m: int = MATMUL_SHAPE[0], k: int = MATMUL_SHAPE[1], n: int = MATMUL_SHAPE[2]
) -> float:
    """TensorFlow's rate, in GFLOPS, of an (m x k) by (k x n) matmul in fp32 or bf16."""
    a, b = _operands(m, k, n, precision)
    return 2 * m * k * n / _seconds_per_call(lambda: tf.matmul(a, b)[0, 0].numpy()) / 1e9


def _tail_nodes(model: keras.Model) -> list[tuple[keras.layers.Layer, Any, bool, bool]]:
    """``(layer, output shape, trains, upstream)`` of every node of a model, nested functional
    models walked into: whether the layer has trainable weights, and whether a trainable layer
    lies upstream of it."""
    return _walk(model, upstream_in=False)[0]


def _walk(
    model: keras.Model, upstream_in: bool
) -> tuple[list[tuple[keras.layers.Layer, Any, bool, bool]], bool]:
    """:func:`_tail_nodes` (``upstream_in``: a trainable layer lies upstream of the model's
    inputs), and whether the model's output depends on trainable weights."""
    needs_gradient: dict[int, bool] = {}  # node -> its output depends on trainable weights
    found: list[tuple[keras.layers.Layer, Any, bool, bool]] = []

    def visit(node: Any) -> bool:
        if id(node) not in needs_gradient:
            parents = node.parent_nodes
            upstream = any([visit(parent) for parent in parents]) if parents else upstream_in
            if getattr(node.layer, "_is_graph_network", False):  # a model inside the model
                inner, needs = _walk(node.layer, upstream)
                found.extend(inner)
                needs_gradient[id(node)] = needs
            else:
                trains = bool(node.layer.trainable_weights)
                shape = tf.nest.flatten(node.outputs)[0].shape
                found.append((node.layer, shape, trains, upstream))
                needs_gradient[id(node)] = trains or upstream
        return needs_gradient[id(node)]

    outputs = []
    for output in model.outputs:
        history = output._keras_history
        outputs.append(visit(history.layer._inbound_nodes[history.node_index]))
    return found, any(outputs)


def _gemm(layer: keras.layers.Layer, output_shape: tf.TensorShape) -> tuple[int, int] | None:
    """``(rows per image, k x n)`` of a Dense, Conv2D or DepthwiseConv2D layer's forward pass
    as one matmul (im2col: output pixels x kernel inputs by kernel inputs x outputs; a
    depthwise kernel as kernel pixels by channels); None for other layers."""
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw, channels, multiplier = layer.depthwise_kernel.shape
        inner, outer = kh * kw, channels * multiplier
    elif isinstance(layer, (layers.Conv2D, layers.Dense)):
        *kernel_in, outer = layer.kernel.shape
        inner = int(np.prod(kernel_in))
    else:
        return None
    positions = int(np.prod(output_shape[1:-1]))  # output pixels (channels last); 1 for Dense
    return positions, (int(inner), int(outer))


def tail_gemms(tail_model: keras.Model, batch_size: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of every matmul of one training step of a batch: each Dense, Conv2D and
    DepthwiseConv2D layer's forward pass, its weights' gradient when it trains, and its
    input's gradient when a trainable layer lies upstream (a layer fed by the features alone
    needs none, and TensorFlow does not compute it)."""
    gemms = []
    for layer, shape, trains, upstream in _tail_nodes(tail_model):
        found = _gemm(layer, shape)
        if found is None:
            continue
        positions, (k, n) = found
        m = batch_size * positions
        gemms.append((m, k, n))
        if trains:
            gemms.append((k, m, n))
        if upstream:
            gemms.append((m, n, k))
    return gemms


def tail_training_flops(tail_model: keras.Model) -> float:
    """FLOPs of one training image through a model: 2 per multiply-add of the matmuls of
    :func:`tail_gemms`, elementwise ops ignored."""
    return float(sum(2 * m * k * n for m, k, n in tail_gemms(tail_model, 1)))


def gemm_program(gemms: list[tuple[int, int, int]], precision: str) -> Callable[[], list]:
    """One XLA-compiled program of TensorFlow matmuls of these shapes, each on operands of its
    own (so that none is merged with another of its shape), as a training step's compiled
    program runs them; it returns every product."""
    operands = [_operands(*shape, precision, seed=i) for i, shape in enumerate(gemms)]

    @tf.function(jit_compile=True)
    def program() -> list:
        return [tf.matmul(a, b) for a, b in operands]

    return program


def gemm_seconds(gemms: list[tuple[int, int, int]], precision: str) -> float:
    """Seconds of one run of :func:`gemm_program`."""
    program = gemm_program(gemms, precision)
    return _seconds_per_call(lambda: program()[-1][0, 0].numpy()) if gemms else 0.0


def step_floor(gemms: list[tuple[int, int, int]], update: float, step: float) -> dict[str, Any]:
    """A training step of ``step`` seconds against its floor: the :func:`gemm_seconds` of
    ``gemms`` in fp32 and bf16, plus ``update`` seconds of the optimizer (``vs_floor``
    unrounded)."""
    matmuls = {p: gemm_seconds(gemms, p) for p in ("fp32", "bf16")}
    return {
        "step_ms": round(1000 * step, 3),
        "matmuls": len(gemms),
        "matmul_ms": {p: round(1000 * t, 3) for p, t in matmuls.items()},
        "optimizer_ms": round(1000 * update, 3),
        "floor_ms": {p: round(1000 * (t + update), 3) for p, t in matmuls.items()},
        "vs_floor": {p: (t + update) / step for p, t in matmuls.items()},
    }


def optimizer_seconds(optimizer: keras.optimizers.Optimizer, variables: list) -> float:
    """Seconds of one update of ``variables`` by ``optimizer`` (built first, as the train stage
    builds it), compiled with XLA, which fuses it (the train stage compiles a tail of matmuls so;
    one with convolution kernels runs it unfused), on constant gradients."""
    optimizer.build(variables)
    gradients = [tf.ones_like(v) * 1e-3 for v in variables]

    @tf.function(jit_compile=True)
    def update() -> None:
        optimizer.apply_gradients(zip(gradients, variables))

    return _seconds_per_call(lambda: (update(), variables[0][..., :1].numpy()))


def _random_features(folder: Path, images: int, size: int, precision: str) -> CachedFeatures:
    """A feature cache in the features stage's layout: ``images`` random non-negative rows
    (as after a ReLU) of ``size`` features, stored as the stage stores them at ``precision``
    (float32, or bfloat16 as uint16 bits)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = np.abs(rng.standard_normal((images, size), np.float32))
    if precision == "bf16":
        rows = rows.astype(ml_dtypes.bfloat16).view(np.uint16)
    np.save(folder / "train.npy", rows)
    labels = rng.integers(0, len(CLASSES), images)
    np.savez(
        folder / LABELS,
        **{f"{n}_labels": labels for n in SPLITS},
        **{f"{n}_rows": np.arange(images) for n in SPLITS},
    )
    write_json(folder / META, {"dtype": "bfloat16" if precision == "bf16" else "float32"})
    return CachedFeatures(folder)


class _EpochTimes(keras.callbacks.Callback):
    """Seconds of each epoch from its first batch to its end (no ``fit`` or iterator setup)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def tail_and_checkpoint(
    params: Params, backbone: str, images: int, train_images: int, feature_precision: str
) -> dict[str, Any]:
    """Train ``backbone``'s tail in fp32 as the train stage does (its cut, optimizer and
    compiled step; Keras ``fit`` on :class:`ferstudy.models.training.FeatureBatches` of a
    memory-mapped feature file stored at ``feature_precision``) on ``images`` random features
    (its time does not depend on their values) for ``TAIL_EPOCHS`` timed epochs, against its
    floor: the matmuls of the tail's own shapes (:func:`gemm_program` of :func:`tail_gemms`,
    fp32 and bf16) plus the optimizer's update. Then write
    its :class:`ferstudy.models.training.Checkpoint` with the optimizer state twice, in a
    scratch folder. The epoch time on ``train_images`` is the measured time per image times
    ``train_images``. A write comes at most once an epoch, and under the train stage's
    schedule no sooner than its interval and ``CHECKPOINT_COST_FACTOR`` times a write after
    the previous one."""
    from ferstudy.models import training
    from ferstudy.stages.train import compile_tail

    batch_size = params.batch_size
    runtime.set_precision("fp32")
    keras.utils.set_random_seed(0)
    cut = _cut(params, backbone)[1]
    optimizer = training.make_optimizer(params.optimizer, params.need("lr"))
    optimizer.build(cut.tail.trainable_variables)
    compile_tail(cut.tail, optimizer)
    gemms = tail_gemms(cut.tail, batch_size)
    flops = tail_training_flops(cut.tail)
    with _workdir_with_data():
        cache = _random_features(Path("features"), images, cut.feature_size, feature_precision)
        batches = training.FeatureBatches(cache, "train", batch_size, seed=0)
        epochs = _EpochTimes()  # the first epoch traces the training step: not timed
        cut.tail.fit(batches, epochs=1 + TAIL_EPOCHS, shuffle=False, verbose=0, callbacks=[epochs])
        per_image = sum(epochs.seconds[1:]) / (TAIL_EPOCHS * images)
        live = Path("live")
        live.mkdir()
        generators = training.seed_dropout(cut.tail, 0)
        checkpoint = training.Checkpoint("bench", "bench", cut.tail, optimizer, live, generators)
        for epoch in (1, 2):
            checkpoint.save(epoch)
        size = sum(f.stat().st_size for f in checkpoint.dir.rglob("*") if f.is_file())
    update = optimizer_seconds(
        training.make_optimizer(params.optimizer, params.need("lr")), cut.tail.trainable_variables
    )
    step = per_image * batch_size
    write = checkpoint.seconds / checkpoint.writes
    epoch_seconds = per_image * train_images
    interval = checkpoint.interval
    wait = max(interval, training.CHECKPOINT_COST_FACTOR * write) if interval else 0.0
    between = max(wait, epoch_seconds)
    return {
        "tail": {
            "feature_precision": feature_precision,
            "images": images,
            "epochs": TAIL_EPOCHS,
            "batch_size": batch_size,
            "trainable_parameters": int(
                sum(np.prod(v.shape) for v in cut.tail.trainable_variables)
            ),
            "training_flops_per_image": round(flops),
            "gflops": round(flops / per_image / 1e9, 2),
            **step_floor(gemms, update, step),
        },
        "checkpoint": {
            "checkpoint_seconds": round(write, 4),
            "megabytes": round(size / 1e6, 1),
            "train_images": train_images,
            "epoch_seconds": round(epoch_seconds, 3),
            "interval_seconds": interval,
            "cost_factor": training.CHECKPOINT_COST_FACTOR,
            "seconds_between_writes": round(between, 2),
            "per_epoch_share": write / epoch_seconds,
            "scheduled_share": write / between,
        },
    }


def finetune_floor(params: Params, run: str) -> dict[str, Any]:
    """A fine-tuning step of ``run`` (``<backbone>-<init>``) as the finetune stage takes it
    (its compiled step: augmentation, forward with dropout, loss, Adam's update of every
    layer), timed on a batch of random images, against its floor: the matmuls of the whole
    network's shapes (:func:`tail_gemms`; no input gradient for the first layer) in fp32 and
    bf16, plus the optimizer's compiled update."""
    from ferstudy.stages import finetune

    backbone, init = paths.parse_run_name(run)
    s = finetune.settings(params, backbone, init, 0)
    runtime.set_precision("fp32")
    keras.utils.set_random_seed(0)
    model = build_backbone(backbone, init, s.input_size, 0)
    classifier = build_classifier(model)
    transform = image_transform(get_backbone(backbone).preprocess, s.input_size)
    optimizer = keras.optimizers.Adam(learning_rate=finetune.learning_rate(s, 100))
    optimizer.build(classifier.trainable_variables)
    ones = np.ones(len(CLASSES), np.float32)
    step = finetune.train_step(classifier, model, optimizer, transform, s, ones)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (s.batch_size, 48, 48), np.uint8))
    labels = tf.constant(rng.integers(0, len(CLASSES), s.batch_size))
    seed = tf.constant([0, 0], tf.int64)
    step_seconds = _seconds_per_call(lambda: float(step(images, labels, seed)[0]), 1.0)
    update = optimizer_seconds(
        keras.optimizers.Adam(learning_rate=s.lr), classifier.trainable_variables
    )
    measured = step_floor(tail_gemms(classifier, s.batch_size), update, step_seconds)
    measured["vs_floor"] = {p: round(r, 3) for p, r in measured["vs_floor"].items()}
    return {
        "input_size": s.input_size,
        "batch_size": s.batch_size,
        "trainable_parameters": int(sum(np.prod(v.shape) for v in classifier.trainable_variables)),
        "training_flops_per_image": round(tail_training_flops(classifier)),
        **measured,
    }


def floors(
    params: Params,
    backbones: list[str],
    images: np.ndarray,
    tail_images: int,
    train_images: int,
) -> dict[str, Any]:
    """Every backbone's stages against their floors (:func:`feature_floor` on ``images``;
    :func:`tail_and_checkpoint`, epochs of its ``fraction`` of ``train_images``) and every
    fine-tuned run's step (:func:`finetune_floor`), with ``TARGETS``, whether each is met, and
    the ones that are not."""
    out: dict[str, Any] = {
        "matmul_gflops": {p: round(matmul_gflops(p), 1) for p in ("fp32", "bf16")},
        "matmul_shape": list(MATMUL_SHAPE),
        "targets": TARGETS,
        "backbones": {},
    }
    for name in backbones:
        features = feature_floor(params, name, images)
        epoch_images = round(train_images * params.backbone_settings(name).fraction)
        measured = {
            "features": features,
            **tail_and_checkpoint(params, name, tail_images, epoch_images, features["precision"]),
        }
        tail, checkpoint = measured["tail"], measured["checkpoint"]
        ratios = {
            "features_vs_forward": features["ratio"],
            "tail_vs_floor_fp32": tail["vs_floor"]["fp32"],
            "checkpoint_share": checkpoint["scheduled_share"],
        }
        measured["met"] = {
            key: ratios[key] <= target if key == "checkpoint_share" else ratios[key] >= target
            for key, target in TARGETS.items()
        }
        features["ratio"] = round(features["ratio"], 3)  # rounded once judged
        tail["vs_floor"] = {p: round(r, 3) for p, r in tail["vs_floor"].items()}
        for key in ("per_epoch_share", "scheduled_share"):
            checkpoint[key] = round(checkpoint[key], 4)
        out["backbones"][name] = measured
        print(f"floors {name}: {ratios}", flush=True)
    out["finetune"] = {}
    for run in params.finetune.runs:
        measured = finetune_floor(params, run)
        measured["met"] = measured["vs_floor"]["fp32"] >= TARGETS["tail_vs_floor_fp32"]
        out["finetune"][run] = measured
        print(f"floors finetune {run}: {measured['vs_floor']}", flush=True)
    out["not_met"] = [
        f"{name}: {key}"
        for name, measured in out["backbones"].items()
        for key, ok in measured["met"].items()
        if not ok
    ] + [f"{run}: finetune_vs_floor_fp32" for run, m in out["finetune"].items() if not m["met"]]
    return out


#: ``auto`` keeps bf16 only where the interval of its test-accuracy change lies above this.
BF16_TOLERANCE = -0.01


def seed_correctness_at(params: Params, run: str, seeds: list[int]) -> np.ndarray:
    """Train and evaluate ``run`` under each seed in a scratch folder; per seed, which test
    images it classified right."""
    from ferstudy.stages import evaluate, features, pretrained_features, train

    labels = load_dataset(paths.DATASET_FILE).labels
    correct = []
    with _workdir_with_data():
        pretrained_features.run(params, run, None)
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
    feature_images: int = 256,
    tail_images: int = 2048,
) -> dict[str, Any]:
    """The benchmark of ``backbones`` (default: all): forward passes and floors, the floors'
    features on ``feature_images`` training images and tails on ``tail_images`` rows; the
    cached-against-naive comparison of ``backbone`` on ``subset`` training images."""
    names = backbones or list(REGISTRY)
    for name in (*names, backbone):  # an unknown name or setting fails before the timings
        get_backbone(name)
        params.backbone_settings(name)
    if tail_images < 1 or feature_images < 1:
        raise FerError("--tail-images and --feature-images must be at least 1")
    runtime.configure(0, deterministic=False)
    result: dict[str, Any] = {"machine": machine(), "forward_images_per_second": {}}
    for name in names:
        entry = get_backbone(name)
        speeds = {"fp32": round(forward_speed(params, name, "fp32", batches), 1)}
        if entry.bf16:
            speeds["bf16"] = round(forward_speed(params, name, "bf16", batches), 1)
        result["forward_images_per_second"][name] = {
            "input_size": entry.native_input_size,
            **speeds,
        }
        print(f"forward {name}: {speeds}", flush=True)
    dataset = load_dataset(paths.DATASET_FILE)
    train_rows = load_split(paths.SPLIT_FILE)["train"]
    rows = stratified_subset(train_rows, dataset.labels, min(1.0, subset / len(train_rows)), 0)
    result["cached_vs_naive"] = cached_vs_naive(
        params, dataset.images[rows], dataset.labels[rows], backbone, epochs
    )
    print(f"cached vs naive: {result['cached_vs_naive']}", flush=True)
    result["floors"] = floors(
        params, names, dataset.images[train_rows[:feature_images]], tail_images, len(train_rows)
    )
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
        f"Speed-up: **{c['speedup']}x** (the feature stage ran at "
        f"{c['features_images_per_second']} img/s).",
    ]
    return "\n".join(lines + ["", _floors_table(result)])


def _floors_table(result: dict[str, Any]) -> str:
    """Each backbone's stages against their floors as a Markdown table."""
    f = result["floors"]
    target, mm = f["targets"], f["matmul_gflops"]

    def mark(ok: bool) -> str:
        return "" if ok else " **(below)**"

    lines = [
        "Each stage against its floor, in the same run (feature stage: its images/s over the "
        "same forward passes alone; tail: the matmuls of its own shapes plus the optimizer's "
        "update over a measured training step; checkpoint: a write's share of the training "
        f"between writes). Targets: >= {target['features_vs_forward']}, >= "
        f"{target['tail_vs_floor_fp32']}, <= {target['checkpoint_share']}.",
        "",
        "| backbone | feature stage / forward (img/s) | tail step (ms) | floor fp32 (ms) | "
        "floor / step | floor bf16 (ms) | checkpoint share |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, b in f["backbones"].items():
        feats, tail, met = b["features"], b["tail"], b["met"]
        lines.append(
            f"| {name} | {feats['ratio']}{mark(met['features_vs_forward'])} "
            f"({feats['stage_images_per_second']} / {feats['forward_images_per_second']}, "
            f"{feats['precision']}) | {tail['step_ms']} | {tail['floor_ms']['fp32']} | "
            f"{tail['vs_floor']['fp32']}{mark(met['tail_vs_floor_fp32'])} | "
            f"{tail['floor_ms']['bf16']} | {b['checkpoint']['scheduled_share']}"
            f"{mark(met['checkpoint_share'])} |"
        )
    for run, t in f.get("finetune", {}).items():
        lines.append(
            f"| {run}, fine-tuned (every layer, {t['input_size']} px) | | {t['step_ms']} | "
            f"{t['floor_ms']['fp32']} | {t['vs_floor']['fp32']}{mark(t['met'])} | "
            f"{t['floor_ms']['bf16']} | |"
        )
    m, k, n = f["matmul_shape"]
    lines += [
        "",
        f"A {m}x{k} by {k}x{n} matmul ran at {mm['fp32']} GFLOPS in fp32 and {mm['bf16']} in "
        "bf16. Below target: " + (", ".join(f["not_met"]) or "none") + ".",
    ]
    return "\n".join(lines)
