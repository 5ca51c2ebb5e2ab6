"""``ferstudy predict``: the study's recommended FER algorithm for any photo.

1. Detect every face (MTCNN by default, or OpenCV's Haar cascade; both work offline from
   their packages alone), or, with ``detector=None`` (``--no-detect``), take the whole image
   as one aligned face, as FER2013's crops are.
2. Crop each face with a margin, convert it exactly as training images were (grayscale,
   48x48 area resampling, then the backbone's own input transform) and classify it with a
   trained run. Faces from many images are classified together in batches.

Models are rebuilt from the backbone registry and only their weight arrays are read
(see ``ferstudy.models.store``), so a model folder cannot run code on this machine.

From Python::

    from ferstudy.tools.predict import analyze
    records = analyze("group_photo.jpg", model="models/openface-random")
    records[0]["emotion"], records[0]["probabilities"]["happy"]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from ferstudy import CLASSES
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import atomic_path, read_json
from ferstudy.data.feature_cache import extractor
from ferstudy.data.images import on_white, open_image, to_fer48, to_grayscale
from ferstudy.models.registry import get_backbone
from ferstudy.models.store import available_models, load_model
from ferstudy.models.transfer import image_transform, split_frozen_tail

DETECTORS = ("mtcnn", "haar")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


# --------------------------------------------------------------------------- model


class EmotionClassifier:
    """A trained run as a function: uint8 48x48 faces -> 7 probabilities.

    It computes exactly what the evaluation stage does: the frozen part at the run's
    precision (bf16 when its features were bf16), then the trained tail in fp32.
    """

    def __init__(self, folder: str | Path):
        exact = load_model(folder)
        self.config = exact.config
        # a run id (``<run>/seed<seed>``) for a seed folder, else the folder's name
        path = exact.path
        self.name = f"{path.parent.name}/{path.name}" if path.name.startswith("seed") else path.name
        backbone = get_backbone(exact.config["backbone"])
        transform = image_transform(backbone.preprocess, int(exact.config["input_size"]))
        if exact.config.get("mode") == "finetune":  # one network on the image, all in fp32
            self.tail, self.bf16 = exact.model, False
            self._extract = tf.function(transform, reduce_retracing=True)
            return
        layers = int(exact.config["trainable_layers"])
        self.tail = split_frozen_tail(exact.model, layers).tail
        self.bf16 = exact.config.get("precision") == "bf16"
        frozen_model = load_model(folder, precision="bf16").model if self.bf16 else exact.model
        self._extract = extractor(split_frozen_tail(frozen_model, layers).frozen, transform)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        flat = self._extract(tf.constant(faces)).numpy()
        if self.bf16:
            import ml_dtypes

            flat = flat.view(ml_dtypes.bfloat16).astype(np.float32)
        return self.tail.predict_on_batch(flat)


def validation_accuracy(run_id: str, models_dir: Path = paths.MODELS_DIR) -> float | None:
    """Validation accuracy of the weights a run saved: a fine-tuned run's kept (best) epoch,
    a study run's last epoch; None when the run has no record of it."""
    config = read_json(models_dir / run_id / "config.json")
    if "val_accuracy" in config:
        return float(config["val_accuracy"])
    live = paths.live_dir(run_id) / "metrics.json"
    return float(read_json(live)["val"]["accuracy"]) if live.is_file() else None


def best_model(models_dir: Path = paths.MODELS_DIR) -> Path:
    """The trained run whose saved weights have the highest validation accuracy.

    Each run is read on its own validation set: a study run's stratified validation split
    (its last epoch, the weights it saved), a fine-tuned run's (under ``usage``, PublicTest;
    its best epoch, the weights it kept). Different images, and a best epoch is a maximum
    over epochs: a pick between runs, not a ranking (``metrics/ranking.json`` is that).
    """
    scored = [
        (accuracy, run)
        for run in available_models(models_dir)
        if (accuracy := validation_accuracy(run, models_dir)) is not None
    ]
    if not scored:
        runs = ", ".join(available_models(models_dir)) or "none"
        raise FerError(
            f"no trained model with a validation score in {models_dir} (models: {runs}); "
            f"run the pipeline or pass --model"
        )
    return models_dir / max(scored)[1]


# --------------------------------------------------------------------------- detection


@dataclass
class Face:
    box: list[int] | None  # x, y, width, height in the oriented image; None = whole image
    confidence: float | None
    pixels: np.ndarray  # 48x48 uint8
    probabilities: np.ndarray | None = None


class Detector:
    """Face detector over grayscale/RGB arrays: ``mtcnn`` or ``haar``."""

    def __init__(self, name: str, min_confidence: float = 0.9):
        if name not in DETECTORS:
            raise FerError(f"unknown detector '{name}' (known: {', '.join(DETECTORS)})")
        self.name, self.min_confidence = name, min_confidence
        if name == "haar":
            import cv2

            path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
            self._haar = cv2.CascadeClassifier(str(path))
            if self._haar.empty():
                raise FerError(f"{path}: OpenCV's Haar cascade is missing from this install")
        else:
            from mtcnn import MTCNN

            self._mtcnn = MTCNN()

    def __call__(self, rgb: np.ndarray) -> list[tuple[list[int], float | None]]:
        if self.name == "haar":
            import cv2

            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            found = self._haar.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)
            )
            boxes = [([int(v) for v in box], None) for box in found]
        else:
            boxes = [
                ([int(v) for v in d["box"]], round(float(d["confidence"]), 4))
                for d in self._mtcnn.detect_faces(rgb)
                if d["confidence"] >= self.min_confidence
            ]
        return sorted(boxes, key=lambda b: (b[0][0], b[0][1]))


def crop_with_margin(gray: np.ndarray, box: list[int], margin: float) -> np.ndarray:
    """A square crop around ``box`` enlarged by ``margin`` on each side, clipped to the image."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(max(0, cx - side / 2))), int(round(max(0, cy - side / 2)))
    x1 = int(round(min(gray.shape[1], cx + side / 2)))
    y1 = int(round(min(gray.shape[0], cy + side / 2)))
    return gray[y0:y1, x0:x1]


# --------------------------------------------------------------------------- analysis


@dataclass
class _Item:
    source: str
    rgb: np.ndarray | None = None
    faces: list[Face] = field(default_factory=list)
    error: str | None = None


def _load(source: str | Path | np.ndarray, index: int) -> tuple[str, np.ndarray]:
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            raise FerError(f"array {index}: expected uint8 pixels, got {arr.dtype}")
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:  # transparency onto white, as in training
            arr = np.asarray(on_white(Image.fromarray(arr, mode="RGBA")).convert("RGB"))
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise FerError(f"array {index}: expected HxW, HxWx3 or HxWx4, got {source.shape}")
        return f"<array {index}>", arr
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FerError(f"{path}: cannot read ({err.strerror})") from None
    img = open_image(data, str(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float: scaled as training
        return str(path), np.repeat(to_grayscale(img)[..., None], 3, axis=2)
    return str(path), np.asarray(on_white(img).convert("RGB"))


def expand_inputs(inputs: Iterable[str | Path | np.ndarray]) -> Iterator[str | Path | np.ndarray]:
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            yield from sorted(
                p
                for p in Path(item).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield item


def _record(
    item: _Item, face_index: int | None, face: Face | None, probs: np.ndarray | None
) -> dict[str, Any]:
    rec: dict[str, Any] = {"file": item.source}
    if item.error:
        return {**rec, "status": "error", "error": item.error}
    if face is None:
        return {**rec, "status": "no_face"}
    p = {c: round(float(v), 6) for c, v in zip(CLASSES, probs)}
    return {
        **rec,
        "status": "ok",
        "face": face_index,
        "box": face.box,
        "confidence": face.confidence,
        "probabilities": p,
        "emotion": CLASSES[int(np.argmax(probs))],
    }


def analyze(
    inputs: str | Path | np.ndarray | Iterable[str | Path | np.ndarray],
    model: str | Path | EmotionClassifier | None = None,
    *,
    detector: str | None = "mtcnn",
    margin: float = 0.1,
    batch_size: int = 64,
    progress: bool = False,
    plot_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Emotions of every face in images (paths, folders or uint8 arrays).

    Returns one record per face: ``file``, ``status`` (``ok``), ``face`` (index in the
    image), ``box`` ([x, y, w, h], or None without detection), ``confidence`` (detector
    score, None for Haar and without detection), ``probabilities`` (7 emotions) and
    ``emotion`` (the top one); an image with no face gives ``status: no_face`` and an
    unreadable one ``status: error`` with ``error``, and the others go on.
    """
    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    classifier = (
        model
        if isinstance(model, EmotionClassifier)
        else EmotionClassifier(model if model is not None else best_model())
    )
    find = Detector(detector) if detector else None
    sources = list(expand_inputs(inputs))
    records: list[dict[str, Any]] = []
    pending: list[tuple[_Item, int, Face]] = []
    items: list[_Item] = []

    def flush() -> None:
        if not pending:
            return
        probs = classifier(np.stack([face.pixels for _, _, face in pending]))
        for (item, i, face), p in zip(pending, probs):
            records.append(_record(item, i, face, p))
            face.probabilities = p
        pending.clear()

    for index, source in enumerate(tqdm(sources, desc="predict", unit="img", disable=not progress)):
        item = _Item(str(source))
        try:
            item.source, item.rgb = _load(source, index)
            gray = to_grayscale_rgb(item.rgb)
            if find is None:
                item.faces = [Face(None, None, to_fer48(gray))]
            else:
                item.faces = [
                    Face(box, conf, to_fer48(crop_with_margin(gray, box, margin)))
                    for box, conf in find(item.rgb)
                ]
        except FerError as err:
            item.error, item.rgb = str(err), None
        items.append(item)
        if item.error or not item.faces:
            records.append(_record(item, None, None, None))
        for i, face in enumerate(item.faces):
            pending.append((item, i, face))
        if len(pending) >= batch_size:
            flush()
        if plot_dir is None:
            item.rgb = None  # keep memory flat on large folders
    flush()
    if plot_dir is not None:
        for item in items:
            if item.rgb is not None:
                plot_faces(item, Path(plot_dir))
    order = {item.source: k for k, item in enumerate(items)}
    records.sort(key=lambda r: (order[r["file"]], r.get("face") or 0))
    return records


def to_grayscale_rgb(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 array, as Pillow's ``convert("L")`` computes it."""
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def plot_faces(item: _Item, out_dir: Path) -> Path:
    """The image with faces boxed and labelled, beside the 7 probabilities of each face."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = [f for f in item.faces if f.probabilities is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    axes[0].imshow(item.rgb)
    axes[0].axis("off")
    width = 0.8 / max(1, len(faces))
    for i, face in enumerate(faces):
        label = f"{i}: {CLASSES[int(np.argmax(face.probabilities))]}"
        if face.box is not None:
            x, y, w, h = face.box
            axes[0].add_patch(plt.Rectangle((x, y), w, h, fill=False, color=f"C{i}", lw=2))
            axes[0].text(
                x,
                y - 3,
                label,
                color="white",
                fontsize=9,
                bbox={"facecolor": f"C{i}", "alpha": 0.8, "pad": 1},
            )
        axes[1].bar(
            np.arange(len(CLASSES)) + i * width,
            face.probabilities,
            width,
            color=f"C{i}",
            label=label,
        )
    axes[1].set_xticks(np.arange(len(CLASSES)) + 0.4 - width / 2, CLASSES, rotation=30)
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("probability")
    if faces:
        axes[1].legend(fontsize=8)
    axes[0].set_title(Path(item.source).name, fontsize=9)
    out = out_dir / f"{Path(item.source).stem}.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def run(
    paths: list[str],
    model: str | None,
    detector: str | None,
    out: str | None,
    plot_dir: str | None,
    batch_size: int,
    margin: float,
) -> int:
    """The ``predict`` command: JSON lines out, a summary line, exit 1 when a file failed."""
    start = time.perf_counter()
    classifier = EmotionClassifier(model if model else best_model())
    config = classifier.config
    mode = ", fine-tuned" if config.get("mode") == "finetune" else ""
    how = (
        "given"
        if model
        else "the highest validation accuracy of the trained runs, each on its own "
        f"validation set: {validation_accuracy(classifier.name):.4f}"
    )
    print(
        f"model: {classifier.name} ({config['backbone']}, {config['init']}{mode}; {how})",
        file=sys.stderr,
    )
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FerError(f"{missing[0]}: no such file or folder")
    records = analyze(
        paths,
        classifier,
        detector=detector,
        margin=margin,
        batch_size=batch_size,
        progress=True,
        plot_dir=plot_dir,
    )
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if out:
        with atomic_path(out) as tmp:
            tmp.write_text(lines)
    else:
        print(lines, end="")
    files = list(dict.fromkeys(r["file"] for r in records))
    failed = len({r["file"] for r in records if r["status"] == "error"})
    no_face = len({r["file"] for r in records if r["status"] == "no_face"})
    faces = sum(r["status"] == "ok" for r in records)
    seconds = time.perf_counter() - start
    print(
        f"images read: {len(files) - failed}, faces found: {faces}, images with no face: "
        f"{no_face}, failures: {failed}, {seconds / max(1, len(files)):.3f} s per image",
        file=sys.stderr,
    )
    return 1 if failed else 0
