"""Check that `ferstudy predict --no-detect` reproduces the evaluation stage, and time it.

usage: python scripts/predict_vs_evaluate.py RUN [RUN ...] [--speed-images 1000]

For each run: writes the run's FER2013 test images as PNG files to a temporary folder,
classifies them with the predictor's public API (whole image = one aligned face), and
prints its accuracy beside metrics/eval/<run>.json's; then times the predictor at batch 1
(ms per face) and on a folder of --speed-images images (faces per second). Writes
bench/predict_<run>.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import ferstudy  # noqa: F401  (before TensorFlow)
from ferstudy import CLASSES
from ferstudy.core import paths
from ferstudy.core.files import load_dataset, read_json, write_json
from ferstudy.data.feature_cache import CachedFeatures
from ferstudy.models.classifier import EmotionClassifier
from ferstudy.tools.predict import analyze


def check(run: str, speed_images: int) -> dict:
    dataset = load_dataset(paths.DATASET_FILE)
    rows = CachedFeatures(paths.features_dir(run)).rows["test"]
    classifier = EmotionClassifier(paths.model_dir(run))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for row in rows:
            Image.fromarray(dataset.images[row]).save(folder / f"{row:06d}.png")
        start = time.perf_counter()
        records = analyze(folder, classifier, detector=None, batch_size=64, progress=True)
        seconds = time.perf_counter() - start
        predicted = np.array([CLASSES.index(r["emotion"]) for r in records])
        truth = dataset.labels[[int(Path(r["file"]).stem) for r in records]]
        accuracy = float(np.mean(predicted == truth))
        one = sorted(folder.iterdir())[0]
        analyze(one, classifier, detector=None)
        singles = []
        for _ in range(20):
            t = time.perf_counter()
            analyze(one, classifier, detector=None)
            singles.append(time.perf_counter() - t)
        subset = folder / "subset"
        subset.mkdir()
        for path in sorted(folder.glob("*.png"))[:speed_images]:
            path.rename(subset / path.name)
        start = time.perf_counter()
        analyze(subset, classifier, detector=None, batch_size=64)
        folder_seconds = time.perf_counter() - start
    result = {
        "run": run,
        "test_images": int(len(records)),
        "predict_accuracy": round(accuracy, 6),
        "evaluate_accuracy": read_json(paths.METRICS_DIR / "eval" / f"{run}.json")["accuracy"],
        "predict_seconds_all": round(seconds, 1),
        "ms_per_face_batch1": round(1000 * float(np.median(singles)), 1),
        "faces_per_second_folder": round(min(speed_images, len(records)) / folder_seconds, 1),
        "folder_images": min(speed_images, len(records)),
    }
    write_json(Path("bench") / f"predict_{run}.json", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--speed-images", type=int, default=1000)
    args = parser.parse_args()
    for run in args.runs:
        print(check(run, args.speed_images))


if __name__ == "__main__":
    main()
