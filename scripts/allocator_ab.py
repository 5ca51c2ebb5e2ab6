"""Time one batch loop of a stage with the allocator as every ``ferstudy`` command sets it, or
with glibc's defaults (``FERSTUDY_ALLOCATOR=system``), and print its page faults, CPU seconds
and a hash of its outputs (docs/performance.md, "The allocator"). Run from a project whose
features and dataset are there:

    python scripts/allocator_ab.py features mobilenetv2 224 8
    FERSTUDY_ALLOCATOR=system python scripts/allocator_ab.py features mobilenetv2 224 8
    python scripts/allocator_ab.py tail mobilenetv2-random/seed42 60
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import time

import numpy as np

from ferstudy.core.allocator import keep_freed_memory

KEPT = keep_freed_memory()

from ferstudy.core import paths, runtime  # noqa: E402  (after the allocator is set)
from ferstudy.core.files import load_dataset  # noqa: E402
from ferstudy.data.feature_cache import CachedFeatures, extractor, rebuild_classifier  # noqa: E402
from ferstudy.models.registry import build_backbone, get_backbone  # noqa: E402
from ferstudy.models.training import FeatureBatches, make_optimizer  # noqa: E402
from ferstudy.models.transfer import (  # noqa: E402
    build_classifier,
    image_transform,
    split_frozen_tail,
)
from ferstudy.stages.train import compile_tail  # noqa: E402


def timed(loop) -> tuple[float, float, float, float]:
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    loop()
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return (
        seconds,
        after.ru_minflt - before.ru_minflt,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
    )


def features(backbone: str, size: int, batches: int) -> str:
    """A random backbone's feature pass over ``batches`` batches of 64 dataset images."""
    entry = get_backbone(backbone)
    runtime.configure(42, deterministic=False)
    runtime.set_precision("fp32")
    model = build_backbone(backbone, "random", size, 42, None)
    cut = split_frozen_tail(build_classifier(model), entry.trainable_layers(4))
    forward = extractor(cut.frozen, image_transform(entry.preprocess, size))
    images = load_dataset(paths.DATASET_FILE).images[: 64 * (batches + 2)]
    batch = [images[64 * i : 64 * (i + 1)] for i in range(batches + 2)]
    for warm in batch[:2]:
        forward(warm).numpy()
    outs: list[np.ndarray] = []
    seconds, faults, user, system = timed(
        lambda: outs.extend(forward(b).numpy() for b in batch[2:])
    )
    digest = hashlib.sha256(np.concatenate(outs).tobytes()).hexdigest()[:16]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return (
        f"{64 * batches / seconds:.1f} img/s, {faults / batches:.0f} faults a batch, "
        f"user {user:.1f} s sys {system:.1f} s, features {digest}, peak {rss} MB"
    )


def tail(run_id: str, steps: int) -> str:
    """The train stage's tail step on a run's cached features, ``steps`` steps after 10."""
    cache = CachedFeatures(paths.features_dir(run_id))
    runtime.configure(42)
    runtime.set_precision("fp32")
    _, cut = rebuild_classifier(cache, 42)
    optimizer = make_optimizer("adam", 1e-4)
    optimizer.build(cut.tail.trainable_variables)
    compile_tail(cut.tail, optimizer)
    train = FeatureBatches(cache, "train", 64, seed=42)
    cut.tail.fit(train, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)
    seconds, faults, user, system = timed(
        lambda: cut.tail.fit(train, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    )
    weights = b"".join(w.numpy().tobytes() for w in cut.tail.weights)
    return (
        f"{1000 * seconds / steps:.1f} ms a step, {faults / steps:.0f} faults a step, user "
        f"{user:.1f} s sys {system:.1f} s, weights {hashlib.sha256(weights).hexdigest()[:16]}"
    )


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    result = (
        features(args[0], int(args[1]), int(args[2]))
        if what == "features"
        else tail(args[0], int(args[1]))
    )
    allocator = "kept" if KEPT else os.environ.get("FERSTUDY_ALLOCATOR", "glibc's defaults")
    print(f"{what} {' '.join(args)} ({allocator}): {result}")
