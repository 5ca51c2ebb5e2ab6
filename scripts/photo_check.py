"""Photo check of ``ferstudy predict``: do its answers follow the faces, or is one class all?

usage: python scripts/photo_check.py [--photos 64] [--model models/<run>/seed<k>]
                                     [--out bench/photo_check.json]

Builds ``--photos`` photos, each one FER2013 PrivateTest face (an even spread of the test
images of every emotion, chosen by ``data.random_state``) enlarged 3x and pasted at a seeded
place on a 240x240 textured canvas, plus matplotlib's Grace Hopper portrait (a real
photograph); runs the predictor as a user would (the MTCNN detector, the default model
unless ``--model``), and writes what it found: faces detected, the predicted emotions'
histogram, and accuracy on the detected FER2013 faces against their labels.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

import ferstudy  # noqa: F401  (before TensorFlow)
from ferstudy import CLASSES
from ferstudy.core import paths
from ferstudy.core.files import load_dataset, write_json
from ferstudy.core.params import load_params
from ferstudy.data.splits import usage_split
from ferstudy.models.classifier import EmotionClassifier
from ferstudy.tools.predict import analyze, best_model

CANVAS, SCALE = 240, 3


def photo(face: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One face enlarged on a textured gray canvas at a random place."""
    canvas = rng.integers(90, 170, (CANVAS, CANVAS), dtype=np.uint8)
    big = np.asarray(Image.fromarray(face).resize((48 * SCALE,) * 2, Image.BICUBIC))
    y, x = rng.integers(0, CANVAS - 48 * SCALE, 2)
    canvas[y : y + 48 * SCALE, x : x + 48 * SCALE] = big
    return Image.fromarray(canvas).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--model", help="model folder (default: predict's own choice)")
    parser.add_argument("--out", default="bench/photo_check.json")
    args = parser.parse_args()
    seed = load_params().data.random_state
    dataset = load_dataset(paths.DATASET_FILE)
    test = usage_split(dataset.usage)["test"]
    rng = np.random.default_rng(seed)
    per_class = -(-args.photos // len(CLASSES))
    by_class = [rng.permutation(test[dataset.labels[test] == c])[:per_class] for c in range(7)]
    rounds = [group[i] for i in range(per_class) for group in by_class if i < len(group)]
    picked = np.array(rounds[: args.photos])  # round robin: every emotion as often as it can
    model = Path(args.model) if args.model else best_model()
    classifier = EmotionClassifier(model)
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for row in picked:
            photo(dataset.images[row], rng).save(folder / f"{row:06d}.jpg", quality=95)
        records = analyze(folder, classifier, detector="mtcnn", batch_size=64)
    hopper_records = analyze(hopper, classifier, detector="mtcnn")
    faces = [r for r in records if r["status"] == "ok"]
    predicted = [r["emotion"] for r in faces]
    truth = [CLASSES[dataset.labels[int(Path(r["file"]).stem)]] for r in faces]
    result = {
        "model": classifier.name,
        "photos": len(picked),
        "photos_with_a_face": len({r["file"] for r in faces}),
        "faces": len(faces),
        "predicted": {c: predicted.count(c) for c in CLASSES},
        "distinct_emotions": len(set(predicted)),
        "accuracy_on_found_faces": round(float(np.mean(np.array(predicted) == truth)), 4)
        if faces
        else None,
        "truth": {c: truth.count(c) for c in CLASSES},
        "grace_hopper": [r["emotion"] for r in hopper_records if r["status"] == "ok"],
        "command": "python scripts/photo_check.py"
        + (f" --model {args.model}" if args.model else ""),
    }
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
