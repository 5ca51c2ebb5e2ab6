"""The feature cache: what the ``features`` and ``flipped`` stages write, and how the stages
after them read it.

``data/features/<run>/seed<seed>/`` holds ``train.npy``, ``val.npy``, ``test.npy`` (one row per
image, float32, or bfloat16 stored as uint16 bits), ``labels.npz`` (labels and dataset rows per
subset), ``backbone.weights.h5`` (the backbone exactly as used) and ``meta.json``;
``data/features_flipped/<run>/seed<seed>/train.npy`` the mirrored training images' rows.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.core.files import SPLITS, read_json, write_json
from ferstudy.core.runtime import checkpoint_seconds
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.transfer import (
    FrozenTail,
    build_classifier,
    flatten_boundary,
    split_frozen_tail,
)

META = "meta.json"
LABELS = "labels.npz"
BACKBONE_WEIGHTS = "backbone.weights.h5"
HEALTH = "health.json"


def extractor(frozen: tf.keras.Model, transform) -> tf.types.experimental.GenericFunction:
    """Compiled uint8 image batch -> flat feature batch (stored dtype: float32 or bf16 bits)."""

    @tf.function(reduce_retracing=True)
    def extract(images: tf.Tensor) -> tf.Tensor:
        flat = flatten_boundary(frozen(transform(images), training=False))
        if flat.dtype == tf.bfloat16:
            return tf.bitcast(flat, tf.uint16)
        return tf.cast(flat, tf.float32)

    return extract


def extract_to_file(
    extract,
    images: np.ndarray,
    path: Path,
    batch_size: int,
    desc: str,
    *,
    fingerprint: str | None = None,
) -> float:
    """Run ``extract`` over ``images`` in batches into a .npy file; return images per second
    (of the rows computed by this call).

    With ``fingerprint`` (a digest of everything that decides the rows: the frozen weights,
    the images, the code), the rows written so far are recorded in ``<path>.progress.json`` at
    most every ``FERSTUDY_CHECKPOINT_SECONDS``; a later call with the same fingerprint
    continues after them, on the same batch boundaries, so a killed extraction loses at most
    that much work.
    """
    first = extract(tf.constant(images[:1])).numpy()
    shape = (len(images), first.shape[1])
    progress = path.with_name(path.name + ".progress.json")
    done = _rows_done(path, progress, fingerprint, first.dtype, shape)
    if not done:  # a record of another file must never vouch for this one's zeros
        progress.unlink(missing_ok=True)
    out = np.lib.format.open_memmap(
        path, mode="r+" if done else "w+", dtype=first.dtype, shape=shape
    )
    data = tf.data.Dataset.from_tensor_slices(images[done:]).batch(batch_size).prefetch(2)
    interval = checkpoint_seconds()
    start = last = time.perf_counter()
    offset = done
    with tqdm(total=len(images), initial=done, desc=desc, unit="img", mininterval=5.0) as bar:
        for batch in data:
            result = extract(batch).numpy()
            out[offset : offset + len(result)] = result
            offset += len(result)
            bar.update(len(result))
            if fingerprint and time.perf_counter() - last >= interval:
                out.flush()  # the rows first, then the record that they are there
                write_json(progress, {"fingerprint": fingerprint, "rows": offset})
                last = time.perf_counter()
    out.flush()
    del out
    if fingerprint:
        write_json(progress, {"fingerprint": fingerprint, "rows": offset})
    return (len(images) - done) / max(time.perf_counter() - start, 1e-9)


def _rows_done(
    path: Path, progress: Path, fingerprint: str | None, dtype: np.dtype, shape: tuple
) -> int:
    """Rows of ``path`` already computed under ``fingerprint`` (0 without a matching record)."""
    if not fingerprint or not path.is_file():
        return 0
    try:
        record = read_json(progress)
        stored = np.load(path, mmap_mode="r", allow_pickle=False)
    except (FerError, ValueError, OSError):
        return 0
    rows = record.get("rows")
    if record.get("fingerprint") != fingerprint or (stored.dtype, stored.shape) != (dtype, shape):
        return 0
    return rows if isinstance(rows, int) and 0 <= rows <= shape[0] else 0


def weights_sha256(model: tf.keras.Model) -> str:
    """SHA-256 of every weight of ``model``, in order (BatchNormalization statistics included)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


class CachedFeatures:
    """Read access to one run's cached features (memory-mapped, decoded to float32)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_json(self.folder / META)
        with np.load(self.folder / LABELS, allow_pickle=False) as npz:
            self.labels = {n: npz[f"{n}_labels"] for n in SPLITS}
            self.rows = {n: npz[f"{n}_rows"] for n in SPLITS}

    def array(self, name: str) -> np.ndarray:
        """The raw stored array of a subset (memory-mapped)."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        if self.meta["dtype"] == "bfloat16":
            return stored.view(ml_dtypes.bfloat16).astype(np.float32)
        return np.asarray(stored, dtype=np.float32)


FLIPPED_DIR = Path("data/features_flipped")
FLIPPED_TRAIN = "train.npy"


def flipped_dir(run_id: str) -> Path:
    return FLIPPED_DIR / run_id


def mirror(images: np.ndarray) -> np.ndarray:
    """``(n, H, W)`` images mirrored left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


def load_flipped(run_id: str, cache: CachedFeatures) -> np.ndarray:
    """The flipped training features of a run, decoded like its cached ones (checked to
    belong to the same cached features)."""
    folder = flipped_dir(run_id)
    meta = read_json(folder / META)
    if meta["of"] != cache.meta:
        raise FerError(f"{folder}: computed from other features than {cache.folder}; rerun it")
    return cache.decode(np.load(folder / FLIPPED_TRAIN, mmap_mode="r", allow_pickle=False))


def predict_features(
    tail: tf.keras.Model, cache: CachedFeatures, subset: str, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities of a subset from its cached features."""
    stored = cache.array(subset)
    out = [
        tail.predict_on_batch(cache.decode(stored[i : i + batch_size]))
        for i in range(0, len(stored), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def rebuild_classifier(cache: CachedFeatures, seed: int) -> tuple[tf.keras.Model, FrozenTail]:
    """The classifier whose frozen part computed the cached features, and its cut: the
    backbone with the weights the features stage saved, a head initialised from ``seed``, cut
    where the features were taken (refused when the cut does not match them)."""
    meta = cache.meta
    entry = get_backbone(meta["backbone"])
    backbone = build_backbone(
        entry.name, entry.architecture_init, meta["input_size"], seed, meta.get("descriptor")
    )
    backbone.load_weights(str(cache.folder / BACKBONE_WEIGHTS))
    tf.keras.utils.set_random_seed(seed)
    classifier = build_classifier(backbone)
    cut = split_frozen_tail(classifier, meta["trainable_layers"])
    if cut.feature_size != meta["feature_size"]:
        raise FerError(
            f"{cache.folder}: features do not match the cut of {entry.name}-{meta['init']}; "
            "rerun features"
        )
    return classifier, cut
