"""Seconds per fine-tuning epoch of each backbone on this machine, from a few real steps.

usage: python scripts/finetune_cost.py [--runs onet-pretrained,mobilenet-random,...]
                                       [--steps 20] [--out bench/finetune_cost.json]

For each run: builds the model and the compiled training step exactly as ``ferstudy
finetune`` does (params.yaml's ``finetune`` section, its input size, augmentation and batch
size), times ``--steps`` steps on FER2013 training images after two warm-up steps, and
extrapolates to one epoch of the ``usage`` split's 28,709 training images (validation not
included: about 1 s for ONet).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import tensorflow as tf

import ferstudy  # noqa: F401  (before TensorFlow)
from ferstudy.core import paths, runtime
from ferstudy.core.files import load_dataset, write_json
from ferstudy.core.params import load_params
from ferstudy.data.splits import split_rows
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.transfer import build_classifier, image_transform
from ferstudy.stages.finetune import class_weights, learning_rate, settings, train_step


def seconds_per_epoch(params: dict, run: str, steps: int, images, labels) -> dict:
    backbone, init = paths.parse_run_name(run)
    s = settings(params, backbone, init, 42)
    runtime.configure(42)
    model = build_backbone(backbone, init, s.input_size, 42)
    classifier = build_classifier(model)
    per_epoch = math.ceil(len(labels) / s.batch_size)
    optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate(s, per_epoch))
    transform = image_transform(get_backbone(backbone).preprocess, s.input_size)
    step = train_step(classifier, model, optimizer, transform, s, class_weights(labels, "none"))
    order = np.random.default_rng(0).permutation(len(labels))
    times = []
    for b in range(steps + 2):
        idx = order[b * s.batch_size : (b + 1) * s.batch_size]
        start = time.perf_counter()
        loss, _ = step(images[idx], labels[idx], tf.constant([42, b], tf.int64))
        float(loss)
        times.append(time.perf_counter() - start)
    step_seconds = float(np.median(times[2:]))
    return {
        "input_size": s.input_size,
        "parameters": int(classifier.count_params()),
        "seconds_per_step": round(step_seconds, 4),
        "steps_per_epoch": per_epoch,
        "seconds_per_epoch": round(step_seconds * per_epoch, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="onet-pretrained,mobilenet-random,openface-random")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="bench/finetune_cost.json")
    args = parser.parse_args()
    params = load_params()
    dataset = load_dataset(paths.DATASET_FILE)
    train = split_rows(dataset, {"kind": "usage"})["train"]
    images, labels = dataset.images[train], dataset.labels[train]
    result = {
        "machine": runtime.device_name(),
        "command": f"python scripts/finetune_cost.py --runs {args.runs} --steps {args.steps}",
        "runs": {
            run: seconds_per_epoch(params, run, args.steps, images, labels)
            for run in args.runs.split(",")
        },
    }
    write_json(args.out, result)
    for run, r in result["runs"].items():
        print(f"{run} at {r['input_size']} px: {r['seconds_per_epoch']} s per epoch")


if __name__ == "__main__":
    main()
