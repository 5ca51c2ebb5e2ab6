"""``ferstudy predict`` and ``ferstudy.analyze``: emotions of the faces in photos and videos.

1. Detect every face (MTCNN by default, or OpenCV's Haar cascade; both work offline from
   their packages alone); or take the boxes you give; or, with ``detector=None``
   (``--no-detect``), take the whole image as one aligned face, as FER2013's crops are.
2. Crop each face with a margin, convert it exactly as training images were (grayscale,
   48x48 area resampling, then the backbone's own input transform) and classify it. Faces
   from many images, or many video frames, are classified together in batches.

The model is the one that ships inside the package (:func:`ferstudy.models.classifier.
load_shipped`, chosen by the ``export`` stage), unless another is named: a model folder of
the pipeline, or ``"best"`` for the trained run with the highest validation accuracy. Models
are rebuilt from the backbone registry and only their weight arrays are read (see
:mod:`ferstudy.models.store`), so a model file cannot run code on this machine.

From Python::

    import ferstudy
    faces = ferstudy.analyze("group_photo.jpg")
    faces[0]["emotion"], faces[0]["probabilities"]["happy"], faces[0]["box"]
    for record in ferstudy.analyze_video("clip.mp4", fps=2): ...
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ferstudy import CLASSES
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import atomic_path, read_json
from ferstudy.data.images import on_white, open_image, to_fer48, to_grayscale
from ferstudy.models.classifier import (
    CARD_FILE,
    EmotionClassifier,
    Ensemble,
    load_shipped,
)
from ferstudy.models.store import available_models

DETECTORS = ("mtcnn", "haar")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

#: One image: a file path, a uint8 array (H x W gray, H x W x 3, H x W x 4) or a PIL image.
ImageInput = str | Path | np.ndarray | Image.Image
#: A face box: x, y, width, height in pixels of the (EXIF-oriented) image.
Box = tuple[int, int, int, int]
Model = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- model


def get_model(model: str | Path | Model | None = None) -> Model:
    """The model to classify with: the shipped one (None), ``"best"`` (the trained run with
    the highest validation accuracy), a model folder (a run's, or a shipped model's with its
    card), or a classifier already loaded."""
    if model is None:
        return _shipped()
    if callable(model):
        return model
    if str(model) == "best":
        return EmotionClassifier(best_model())
    folder = Path(model)
    return load_shipped(folder) if (folder / CARD_FILE).is_file() else EmotionClassifier(folder)


@functools.lru_cache(maxsize=1)
def _shipped() -> Ensemble:
    """The shipped model, loaded once per process: repeated ``analyze`` calls reuse it."""
    return load_shipped()


def describe_model(model: Model) -> str:
    """One line: which model, and its measured accuracy where its card records one."""
    card = getattr(model, "config", {}).get("card")
    if card is not None:
        p = card["scores"]["privatetest"]
        return (
            f"{card['name']} (shipped; FER2013 PrivateTest accuracy {p['accuracy']:.4f}, 95 % CI "
            f"{p['low']:.4f}-{p['high']:.4f}; MODEL_CARD.md)"
        )
    config = getattr(model, "config", {})
    mode = ", fine-tuned" if config.get("mode") == "finetune" else ""
    return f"{model.name} ({config.get('backbone')}, {config.get('init')}{mode})"


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


def checked_box(box: Iterable[float], shape: tuple[int, ...], source: str) -> list[int]:
    """A given face box as ints, refused with one line naming ``source`` unless it lies
    inside the image and has an area."""
    try:
        values = [int(round(float(v))) for v in box]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4:
        raise FerError(f"{source}: a face box is [x, y, width, height] in pixels, got {box!r}")
    height, width = shape[:2]
    x, y, w, h = values
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise FerError(f"{source}: face box {values} lies outside the {width}x{height} image")
    return values


def largest(faces: list[tuple[list[int], float | None]]) -> list[tuple[list[int], float | None]]:
    """The face with the largest box (the first of equals), or none."""
    return [max(faces, key=lambda f: f[0][2] * f[0][3])] if faces else []


class FaceFinder:
    """Faces of one RGB image as 48x48 crops: detected, given as boxes, or the whole image."""

    def __init__(self, detector: str | None, margin: float, largest_only: bool):
        self.detect = Detector(detector) if detector else None
        self.margin, self.largest_only = margin, largest_only

    def __call__(self, rgb: np.ndarray, source: str, boxes: Iterable | None = None) -> list[Face]:
        gray = to_grayscale_rgb(rgb)
        if boxes is not None:
            found = [(checked_box(b, rgb.shape, source), None) for b in boxes]
        elif self.detect is None:
            return [Face(None, None, to_fer48(gray))]
        else:
            found = self.detect(rgb)
        if self.largest_only:
            found = largest(found)
        return [Face(b, c, to_fer48(crop_with_margin(gray, b, self.margin))) for b, c in found]


# --------------------------------------------------------------------------- images


@dataclass
class _Item:
    source: str
    rgb: np.ndarray | None = None
    faces: list[Face] = field(default_factory=list)
    error: str | None = None


def _from_array(arr: np.ndarray, name: str, channels: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise FerError(f"{name}: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise FerError(f"{name}: expected H x W, H x W x 3 or H x W x 4, got {arr.shape}")
    if channels == "bgr":
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    if arr.shape[2] == 4:  # transparency onto white, as in training
        return np.asarray(on_white(Image.fromarray(arr, mode="RGBA")).convert("RGB"))
    return np.ascontiguousarray(arr)


def input_name(source: ImageInput, index: int) -> str:
    """How records name an input: its path, ``<array i>`` or ``<image i>`` (i: its position)."""
    if isinstance(source, np.ndarray):
        return f"<array {index}>"
    if isinstance(source, Image.Image):
        return f"<image {index}>"
    return str(source)


def load_rgb(source: ImageInput, index: int, channels: str = "rgb") -> tuple[str, np.ndarray]:
    """A name for the input and its pixels as an RGB uint8 array.

    Arrays are RGB(A) unless ``channels="bgr"`` (OpenCV's order); files and PIL images carry
    their own mode. Files get their EXIF orientation; transparency goes onto white.
    """
    if channels not in ("rgb", "bgr"):
        raise FerError(f"channels: expected 'rgb' or 'bgr', got {channels!r}")
    name = input_name(source, index)
    if isinstance(source, np.ndarray):
        return name, _from_array(source, name, channels)
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as err:
            raise FerError(f"{name}: cannot read ({err.strerror})") from None
        img = open_image(data, name)
    try:
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit, float: scaled as training
            return name, np.repeat(to_grayscale(img)[..., None], 3, axis=2)
        return name, np.asarray(on_white(img).convert("RGB"))
    except (OSError, ValueError) as err:  # truncated data, or a mode Pillow cannot convert
        raise FerError(f"{name}: cannot be read as an image ({err})") from None


def expand_inputs(inputs: Iterable[ImageInput]) -> Iterator[ImageInput]:
    """Files as given, folders expanded to their image files (sorted, recursive), a 4-D
    array split into its images."""
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            yield from sorted(
                p
                for p in Path(item).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif isinstance(item, np.ndarray) and item.ndim == 4:
            yield from item
        else:
            yield item


def face_record(face_index: int, face: Face, probs: np.ndarray) -> dict[str, Any]:
    """What one face gives: box, detector confidence, the 7 probabilities and the emotion."""
    return {
        "status": "ok",
        "face": face_index,
        "box": face.box,
        "face_confidence": face.confidence,
        "probabilities": {c: round(float(v), 6) for c, v in zip(CLASSES, probs)},
        "emotion": CLASSES[int(np.argmax(probs))],
    }


class Batcher:
    """Faces gathered from many images or frames and classified ``batch_size`` at a time.

    Records leave in the order their images or frames were added: one per face, with the
    context it was added with, or the context alone (``no_face``, or an ``error`` the context
    carries) for an image or frame without faces.
    """

    def __init__(self, model: Model, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.pending: list[tuple[dict[str, Any], int, Face | None]] = []
        self.faces = 0

    def add(self, context: dict[str, Any], faces: list[Face]) -> list[dict[str, Any]]:
        if faces:
            self.pending.extend((context, i, face) for i, face in enumerate(faces))
        else:
            self.pending.append(({"status": "no_face", **context}, 0, None))
        self.faces += len(faces)
        return self.flush() if self.faces >= self.batch_size else []

    def flush(self) -> list[dict[str, Any]]:
        found = [face.pixels for _, _, face in self.pending if face is not None]
        probs = iter(self.model(np.stack(found)) if found else [])
        out = []
        for context, i, face in self.pending:
            if face is None:
                out.append(context)
                continue
            face.probabilities = next(probs)
            out.append({**context, **face_record(i, face, face.probabilities)})
        self.pending, self.faces = [], 0
        return out


def _per_input_boxes(boxes, count: int, single: bool) -> list:
    if boxes is None:
        return [None] * count
    if single:
        if count != 1:
            raise FerError(f"boxes: the input holds {count} images; give one list per image")
        return [boxes]
    boxes = list(boxes)
    if len(boxes) != count:
        raise FerError(f"boxes: expected one list of boxes per image ({count}), got {len(boxes)}")
    return boxes


def analyze(
    inputs: ImageInput | Iterable[ImageInput],
    model: str | Path | Model | None = None,
    *,
    detector: str | None = "mtcnn",
    boxes: Iterable[Box] | Iterable[Iterable[Box] | None] | None = None,
    largest_only: bool = False,
    channels: str = "rgb",
    margin: float = 0.1,
    batch_size: int = 64,
    progress: bool = False,
    plot_dir: str | Path | None = None,
    plot_names: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Emotions of every face in images: paths, folders, uint8 arrays (one image, or N images
    as an N x H x W x C array), PIL images, or a list of them.

    Returns one record per face: ``file`` (the path, or ``<array i>``/``<image i>``),
    ``status`` (``ok``), ``face`` (index in the image), ``box`` ([x, y, w, h]; None without
    detection), ``face_confidence`` (the detector's score; None for Haar, given boxes and no
    detection), ``probabilities`` (the 7 emotions) and ``emotion`` (the top one). An image
    with no face gives ``status: no_face``, an unreadable one ``status: error`` with
    ``error``, and the others go on.

    ``boxes``: your own face boxes instead of detection (for one image, its boxes; for a list,
    one list per image once folders and batches are expanded, None to detect).
    ``largest_only``: keep the largest face of each image. ``channels="bgr"``: arrays in
    OpenCV's channel order. ``detector=None``: each whole image is one aligned face crop.
    ``plot_dir``: a figure per image, ``<stem>.png``, or ``<stem>-2.png``... when a stem is in
    ``plot_names`` (the stems already plotted, shared across calls; updated).
    """
    single = isinstance(inputs, (str, Path, Image.Image)) or (
        isinstance(inputs, np.ndarray) and inputs.ndim < 4
    )
    sources = list(expand_inputs([inputs] if single else inputs))
    given = _per_input_boxes(boxes, len(sources), single)
    classifier = get_model(model)
    finder = FaceFinder(detector, margin, largest_only)
    batcher = Batcher(classifier, batch_size)
    records: list[dict[str, Any]] = []
    items: list[_Item] = []
    for index, source in enumerate(tqdm(sources, desc="predict", unit="img", disable=not progress)):
        item = _Item(input_name(source, index))
        try:
            item.rgb = load_rgb(source, index, channels)[1]
            item.faces = finder(item.rgb, item.source, given[index])
        except FerError as err:
            if given[index] is not None and item.rgb is not None:
                raise  # a box the caller gave that does not fit the image
            item.error, item.rgb = str(err), None
        items.append(item)
        context = {"file": item.source}
        if item.error:
            context.update(status="error", error=item.error)
        records.extend(batcher.add(context, item.faces))
        if plot_dir is None:
            item.rgb = None  # keep memory flat on large folders
    records.extend(batcher.flush())
    if plot_dir is not None:
        used = set() if plot_names is None else plot_names
        for item in items:
            if item.rgb is not None:
                plot_faces(item, Path(plot_dir), _unique_stem(Path(item.source).stem, used))
    return records


def _unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... when ``used`` already holds it; adds the name."""
    name, count = stem, 1
    while name in used:
        count += 1
        name = f"{stem}-{count}"
    used.add(name)
    return name


# --------------------------------------------------------------------------- video


def sampled_frames(
    path: str | Path, fps: float, progress: bool = False
) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, time in s, RGB frame)`` of a video, ``fps`` frames per second of video
    (every frame when the video has fewer), decoded one at a time through OpenCV."""
    import cv2

    if fps <= 0:
        raise FerError(f"--fps: expected a number > 0, got {fps}")
    capture = cv2.VideoCapture(str(path))
    try:
        rate = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
        if not rate or rate <= 0:
            raise FerError(f"{path}: cannot be decoded as a video (OpenCV found no frame rate)")
        total = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) or None
        decoded, last_slot = 0, -1
        with tqdm(total=total, desc="video", unit="frame", disable=not progress) as bar:
            while capture.grab():  # every frame is read; only sampled ones are decoded
                index, decoded = decoded, decoded + 1
                bar.update(1)
                slot = int(index * fps / rate + 1e-9)
                if slot > last_slot:
                    ok, frame = capture.retrieve()
                    if not ok:
                        raise FerError(f"{path}: frame {index} cannot be decoded")
                    last_slot = slot
                    yield index, round(index / rate, 3), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if not decoded:
            raise FerError(f"{path}: cannot be decoded as a video (no frame could be read)")
    finally:
        capture.release()


def analyze_video(
    path: str | Path,
    model: str | Path | Model | None = None,
    *,
    fps: float = 1.0,
    detector: str | None = "mtcnn",
    largest_only: bool = False,
    margin: float = 0.1,
    batch_size: int = 64,
    progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Records of the faces in a video, ``fps`` sampled frames per second, as a generator.

    Each record is an :func:`analyze` record with ``frame`` (index in the video) and ``time``
    (seconds); a sampled frame without a face gives ``status: no_face``. Faces of many
    frames are classified together, and no frame is kept after its faces are cropped, so
    memory does not grow with the video's length.
    """
    path = Path(path)
    if not path.is_file():
        raise FerError(f"{path}: no such file")
    classifier = get_model(model)
    finder = FaceFinder(detector, margin, largest_only)
    batcher = Batcher(classifier, batch_size)
    for index, seconds, rgb in sampled_frames(path, fps, progress):
        context = {"file": str(path), "frame": index, "time": seconds}
        yield from batcher.add(context, finder(rgb, f"{path} frame {index}"))
    yield from batcher.flush()


def to_grayscale_rgb(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 array, as Pillow's ``convert("L")`` computes it."""
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def plot_faces(item: _Item, out_dir: Path, stem: str) -> Path:
    """The image with faces boxed and labelled, beside the 7 probabilities of each face, as
    ``out_dir/<stem>.png``."""
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
    out = out_dir / f"{stem}.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def _records(
    paths_in: list[str], model: Model, options: dict[str, Any], fps: float
) -> Iterator[dict[str, Any]]:
    """Records of every path in the order given: runs of images together, each video apart."""
    video_options = {k: v for k, v in options.items() if k not in ("plot_dir", "plot_names")}
    images: list[str] = []
    for path in [*paths_in, None]:
        if path is not None and Path(path).suffix.lower() not in VIDEO_SUFFIXES:
            images.append(path)
            continue
        if images:
            yield from analyze(images, model, progress=True, **options)
            images = []
        if path is not None:
            yield from analyze_video(path, model, fps=fps, progress=True, **video_options)


def run(
    paths_in: list[str],
    model: str | None,
    *,
    detector: str | None,
    out: str | None,
    plot_dir: str | None,
    batch_size: int,
    margin: float,
    largest_only: bool,
    fps: float,
) -> int:
    """The ``predict`` command: JSON lines out (streamed), a summary line, exit 1 when a file
    failed."""
    start = time.perf_counter()
    missing = [p for p in paths_in if not Path(p).exists()]
    if missing:
        raise FerError(f"{missing[0]}: no such file or folder")
    classifier = get_model(model)
    print(f"model: {describe_model(classifier)}", file=sys.stderr)
    options = {
        "detector": detector,
        "largest_only": largest_only,
        "margin": margin,
        "batch_size": batch_size,
        "plot_dir": plot_dir,
        "plot_names": set(),  # one set for every call, so that no plot overwrites another
    }
    counts = {"ok": 0, "no_face": 0, "error": 0}
    sources: set[str] = set()
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(stack.enter_context(atomic_path(out)), "w")) if out else None
        for record in _records(paths_in, classifier, options, fps):
            print(json.dumps(record), file=fh or sys.stdout)
            counts[record["status"]] += 1
            sources.add(record["file"])
    seconds = time.perf_counter() - start
    print(
        f"inputs: {len(sources)}, faces: {counts['ok']}, images or frames with no face: "
        f"{counts['no_face']}, failures: {counts['error']}, {seconds:.1f} s",
        file=sys.stderr,
    )
    return 1 if counts["error"] else 0
