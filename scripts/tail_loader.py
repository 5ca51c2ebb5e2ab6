"""How much of a tail's training step is its batch loader: the train stage's step on the stage's
loader (:class:`ferstudy.models.training.FeatureBatches` over a memory-mapped file) against the
same step on arrays in memory (Keras slicing them in-graph), per backbone.

    python scripts/tail_loader.py mobilenet resnet50 onet [--images 1024]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ferstudy import CLASSES  # first: sets the Keras variable before TensorFlow loads
from ferstudy.core.params import load_params
from ferstudy.models import training
from ferstudy.stages.train import compile_tail
from ferstudy.tools import bench

tf = bench.tf


class EpochSeconds(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def ms_per_step(model: tf.keras.Model, steps: int, **data) -> float:
    """Mean ms per step of ``model.fit(**data)`` over 2 epochs, after one that traces it."""
    timer = EpochSeconds()
    model.fit(**data, epochs=3, shuffle=False, verbose=0, callbacks=[timer])
    return 1000 * float(np.mean(timer.seconds[1:])) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+")
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()
    params = load_params()
    here = Path.cwd()
    for name in args.backbones:
        tf.keras.utils.set_random_seed(0)
        cut = bench._cut(params, name)[1]
        optimizer = training.make_optimizer(params.optimizer, params.need("lr"))
        optimizer.build(cut.tail.trainable_variables)
        compile_tail(cut.tail, optimizer)
        steps = args.images // params.batch_size
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            cache = bench._random_features(Path("f"), args.images, cut.feature_size, "fp32")
            batches = training.FeatureBatches(cache, "train", params.batch_size, seed=0)
            loader = ms_per_step(cut.tail, steps, x=batches)
            x = np.asarray(cache.array("train"))
            y = np.eye(len(CLASSES), dtype=np.float32)[cache.labels["train"]]
            memory = ms_per_step(cut.tail, steps, x=x, y=y, batch_size=params.batch_size)
            os.chdir(here)
        print(f"{name}: {loader:.1f} ms a step on the stage's loader, {memory:.1f} in memory")


if __name__ == "__main__":
    main()
