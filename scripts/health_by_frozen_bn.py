"""Feature health of random backbones under each `frozen_bn` mode, on the same images.

usage: python scripts/health_by_frozen_bn.py RUN [RUN ...] [--images 512] [--out FILE]

For each random-init run (with params.yaml's input size and seed) builds the frozen part
the features stage builds, and measures the health of its output
(:mod:`ferstudy.analysis.health`) on the same seeded training images twice: with the frozen
BatchNormalization in inference mode (random statistics 0/1) and recalibrated on
`bn_calibration_images` training images, as the features stage does. Needs
data/fer2013.npz and data/split.npz (`dvc repro split`). Writes
reference/health_by_frozen_bn.json, which the report shows.
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

import ferstudy  # noqa: F401  (before TensorFlow)
from ferstudy.analysis.health import health_summary
from ferstudy.core import paths
from ferstudy.core.files import load_dataset, load_split, write_json
from ferstudy.core.params import Params, load_params
from ferstudy.data.extraction import calibrate, run_settings
from ferstudy.data.feature_cache import extractor
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.transfer import (
    build_classifier,
    frozen_batchnorm_layers,
    image_transform,
    split_frozen_tail,
)
from ferstudy.reporting.protocol import HEALTH_BY_FROZEN_BN


def measure(params: Params, run: str, images: np.ndarray, count: int) -> dict:
    backbone, init = paths.parse_run_name(run)
    settings = run_settings(params, backbone)
    seed = params.seeds[0]
    pick = np.sort(np.random.default_rng(seed).permutation(len(images))[:count])
    out = {}
    for mode in ("inference", "recalibrated"):
        model = build_backbone(backbone, init, settings["input_size"], seed, settings["descriptor"])
        cut = split_frozen_tail(build_classifier(model), params.trainable_layers)
        transform = image_transform(get_backbone(backbone).preprocess, settings["input_size"])
        layers = len(frozen_batchnorm_layers(cut.frozen))
        calibration = None
        if mode == "recalibrated" and layers:
            calibration = calibrate(
                cut.frozen,
                transform,
                images,
                params.bn_calibration_images,
                params.features_batch_size,
                seed,
            )
        extract = extractor(cut.frozen, transform)
        features = np.concatenate(
            [extract(tf.constant(images[pick[i : i + 64]])).numpy() for i in range(0, count, 64)]
        ).astype(np.float32)
        out[mode] = health_summary(
            features,
            init=init,
            frozen_bn=mode,
            frozen_batchnorm_layers=layers,
            calibration=calibration,
        )
        print(f"{run} {mode}: rms {out[mode]['rms']:.3g}, degenerate {out[mode]['degenerate']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--out", default=str(HEALTH_BY_FROZEN_BN))
    args = parser.parse_args()
    params = load_params()
    tf.keras.mixed_precision.set_global_policy("float32")
    dataset, split = load_dataset(paths.DATASET_FILE), load_split(paths.SPLIT_FILE)
    train = dataset.images[split["train"]]
    write_json(args.out, {run: measure(params, run, train, args.images) for run in args.runs})
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
