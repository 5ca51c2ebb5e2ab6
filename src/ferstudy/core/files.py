"""Atomic file output and the project's data files (canonical dataset, split indices)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy import CLASSES
from ferstudy.core.errors import FerError


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The permission bits a file or folder created the ordinary way gets (the process's umask).
FILE_MODE, FOLDER_MODE = (0o666 & ~_process_umask(), 0o777 & ~_process_umask())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception the temporary file or folder is removed and ``target`` is untouched,
    so a failed or killed run never leaves something that looks like a finished output.
    The result has the ordinary permissions (``FILE_MODE``, ``FOLDER_MODE``), not the
    owner-only ones of a temporary file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            tmp.chmod(FOLDER_MODE)
            if target.exists():
                shutil.rmtree(target)
        else:
            tmp.chmod(FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(data: Any) -> str:
    """SHA-256 of ``data`` as canonical JSON (sorted keys): a fingerprint of settings."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically (byte-identical on rerun)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts with the same keys) as a CSV file with a header, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(rows[0]) if rows else ["table"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a one-line error when it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FerError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise FerError(f"{path}: not valid JSON ({err})") from None


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz`` atomically (no pickled objects)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array to ``.npy`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


@dataclass(frozen=True)
class Dataset:
    """The canonical FER2013 file: N 48x48 uint8 images with labels in CLASSES order."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, index into CLASSES
    ids: np.ndarray  # (N,) str, stable id of each image (source path or CSV row)
    usage: np.ndarray  # (N,) str, the challenge usage (Training/PublicTest/PrivateTest) or ""

    def __len__(self) -> int:
        return len(self.labels)


def save_dataset(path: str | os.PathLike, dataset: Dataset) -> None:
    """Write the canonical dataset file."""
    save_npz(
        path,
        images=dataset.images.astype(np.uint8),
        labels=dataset.labels.astype(np.int64),
        ids=dataset.ids.astype(str),
        usage=dataset.usage.astype(str),
        classes=np.array(CLASSES),
    )


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read the canonical dataset file written by ``acquire``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if tuple(npz["classes"]) != CLASSES:
                raise FerError(f"{path}: class order {tuple(npz['classes'])} is not {CLASSES}")
            return Dataset(npz["images"], npz["labels"], npz["ids"], npz["usage"])
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run the acquire stage first") from None


def _column(path: str | os.PathLike, name: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[name]
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run the acquire stage first") from None


def load_usage(path: str | os.PathLike) -> np.ndarray:
    """Only the challenge usage column of the dataset file (no pixels read)."""
    return _column(path, "usage")


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Only the label column of the dataset file (no pixels read)."""
    return _column(path, "labels")


SPLITS: tuple[str, ...] = ("train", "val", "test")


def load_split(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the split index file: dataset row indices for train, val and test."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in SPLITS}
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run the split stage first") from None
