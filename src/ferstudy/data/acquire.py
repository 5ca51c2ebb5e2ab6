"""Stage ``acquire``: read FER2013 from Kaggle, a local zip/folder/CSV or a URL into one file.

The canonical file (``data/fer2013.npz``) holds uint8 images N x 48 x 48, integer labels in
the challenge's order (``ferstudy.CLASSES``), a stable id per image and the challenge usage.

Ordering: images from a zip or folder are sorted by their id, the POSIX path of the file
inside the zip or folder (plain code-point order); images from the challenge CSV keep the
row order, with ids ``csv:<row>`` (1-based data rows). The split stage depends on it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import ipaddress
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.core.files import Dataset, atomic_path, file_sha256
from ferstudy.data.images import FER_SIZE, MAX_IMAGE_PIXELS, decode_fer48

#: Environment variable that overrides ``data.source`` (for offline machines).
SOURCE_ENV = "FER2013_PATH"

#: Folder names accepted for each class (compared lower-case).
CLASS_ALIASES: dict[str, str] = {
    **{c: c for c in CLASSES},
    "anger": "angry",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "afraid": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}
USAGE_PREFIXES = ("Training", "PublicTest", "PrivateTest")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm"}
#: Default cap on the bytes unpacked from an archive (decompression-bomb guard).
MAX_UNPACKED_BYTES = 2 * 1024**3
#: What ``source.sha256`` is for a folder (a Kaggle download is one): ``sha256sum``'s output
#: over the images read, in the documented order, hashed again.
FOLDER_SHA256 = (
    "sha256 of the lines '<sha256 of the file>  <path inside the folder>\\n' of every image "
    "read, sorted by path (LC_ALL=C sha256sum output, hashed)"
)


@dataclass(frozen=True)
class Limits:
    """Guards against hostile input: unpacked archive bytes and pixels per image."""

    max_unpacked_bytes: int = MAX_UNPACKED_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS


@dataclass
class Acquired:
    """A dataset read from a source.

    ``source`` identifies the data without naming this machine: ``kind`` (zip, folder, csv,
    url, kaggle), ``name`` (the file or folder base name, the URL without credentials or
    query, or the Kaggle handle) and ``sha256`` (of the file; of the image manifest for a
    folder, as ``sha256_of`` says).
    """

    dataset: Dataset
    source: dict[str, Any]
    converted: int


# --------------------------------------------------------------------------- sources


def resolve_source(source: str) -> str:
    """The source to read: ``$FER2013_PATH`` if set, else ``data.source`` from params."""
    return os.environ.get(SOURCE_ENV) or source


def acquire(
    source: str,
    *,
    kaggle_dataset: str = "msambare/fer2013",
    sha256: str | None = None,
    download_dir: str | os.PathLike = "data/downloads",
    limits: Limits = Limits(),
) -> Acquired:
    """Read FER2013 from ``source``: ``kaggle``, an http(s) URL, or a local zip/folder/CSV."""
    if source == "kaggle":
        folder = download_kaggle(kaggle_dataset)
        acquired = read_local(folder, limits)
        acquired.source.update(kind="kaggle", name=kaggle_dataset)
        return acquired
    if urllib.parse.urlsplit(source).scheme in ("http", "https"):
        if not sha256:
            raise FerError(f"{source}: a URL source needs its sha256 (set data.sha256)")
        path = download_url(source, sha256, Path(download_dir))
        acquired = read_local(path, limits)
        acquired.source.update(kind="url", name=public_url(source))
        return acquired
    return read_local(Path(source), limits)


def read_local(path: Path, limits: Limits = Limits()) -> Acquired:
    """Read a local zip, folder (``<any>/<class>/<image>``) or challenge CSV (plain or gzip)."""
    if path.is_dir():
        source = {"kind": "folder", "name": path.resolve().name, "sha256_of": FOLDER_SHA256}
        return _from_images(_folder_entries(path, limits), source, str(path), limits)
    if not path.is_file():
        raise FerError(f"{path}: no such file or folder")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    info = {"name": path.name, "sha256": file_sha256(path)}
    if magic.startswith(b"PK"):
        with _open_zip(path) as zf:
            entries = _zip_entries(path, zf, limits)
            return _from_images(entries, {"kind": "zip", **info}, str(path), limits)
    if magic.startswith(b"\x1f\x8b") or path.suffix.lower() == ".csv":
        return _from_csv(path, {"kind": "csv", **info}, limits)
    raise FerError(f"{path}: not a zip, folder or FER2013 CSV")


def public_url(url: str) -> str:
    """The URL as recorded in the summary: without user:password, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def download_kaggle(handle: str) -> Path:
    """Download the Kaggle dataset through kagglehub; a clear error when it cannot."""
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(handle))
    except Exception as err:  # any client, network or auth failure
        raise FerError(
            f"could not download Kaggle dataset {handle} ({type(err).__name__}: {err}); "
            f"on an offline machine point the pipeline at a local copy: "
            f"{SOURCE_ENV}=/path/to/fer2013.zip (a zip, a folder or the challenge CSV) "
            f"or set data.source in params.yaml"
        ) from None


# --------------------------------------------------------------------------- URL download


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to the same host and never from https down to http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new.hostname != old.hostname or (old.scheme == "https" and new.scheme != "https"):
            raise FerError(f"{req.full_url}: refused redirect to another host or scheme ({newurl})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def download_url(url: str, sha256: str, download_dir: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``download_dir`` and verify its sha256.

    Only https is accepted (plain http only from a loopback host, for local mirrors and
    tests). The file is streamed to a temporary name and renamed only after its checksum
    matches, so an interrupted or corrupt download is never used; a rerun starts it again.
    A file already downloaded with the right checksum is reused.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise FerError(f"{url}: refused plain http; use an https URL")
    sha256 = sha256.lower()
    target = download_dir / f"fer2013-{sha256[:16]}{Path(parts.path).suffix or '.bin'}"
    if target.is_file() and file_sha256(target) == sha256:
        return target
    opener = urllib.request.build_opener(_SameHostRedirects)
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp, opener.open(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            received = 0
            with open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
            if expected is not None and received != int(expected):
                raise FerError(f"{url}: download cut off ({received} of {expected} bytes)")
            if digest.hexdigest() != sha256:
                raise FerError(
                    f"{url}: checksum mismatch (expected sha256 {sha256}, got {digest.hexdigest()})"
                )
    except FerError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise FerError(f"{url}: download failed ({err})") from None
    return target


# --------------------------------------------------------------------------- image sources


@dataclass(frozen=True)
class _Entry:
    id: str  # POSIX path inside the zip/folder
    label: int
    read: Callable[[], bytes]


def _class_of(entry_id: str, where: Path) -> int | None:
    """Label of an image path ``<any>/<class>/<image>``; None for files that are skipped."""
    parts = PurePosixPath(entry_id).parts
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files, macOS resource forks
    if len(parts) < 2:
        raise FerError(f"{where}: '{entry_id}' is not inside a class folder (<class>/<image>)")
    folder = parts[-2].lower()
    if folder not in CLASS_ALIASES:
        raise FerError(
            f"{where}: unknown class folder '{parts[-2]}' (expected one of {', '.join(CLASSES)})"
        )
    return CLASSES.index(CLASS_ALIASES[folder])


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise FerError(f"{path}: corrupt or truncated zip ({err})") from None


def _zip_entries(path: Path, zf: zipfile.ZipFile, limits: Limits) -> Iterator[_Entry]:
    infos = [i for i in zf.infolist() if not i.is_dir()]
    total = 0
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name)
        if name.startswith(("/", "\\")) or ".." in pure.parts or ":" in pure.parts[0]:
            raise FerError(f"{path}: entry '{name}' escapes the archive folder; refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise FerError(f"{path}: entry '{name}' is a symbolic link; refused")
        total += info.file_size
        if total > limits.max_unpacked_bytes:
            raise FerError(
                f"{path}: unpacks to more than {limits.max_unpacked_bytes} bytes; refused "
                f"(decompression bomb guard)"
            )
    for info in sorted(infos, key=lambda i: i.filename):
        label = _class_of(info.filename, path)
        if label is not None:
            yield _Entry(info.filename, label, _zip_reader(path, zf, info))


def _zip_reader(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with zf.open(info) as fh:
                data = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as err:
            raise FerError(f"{path}: corrupt entry '{info.filename}' ({err})") from None
        if len(data) > info.file_size:
            raise FerError(f"{path}: entry '{info.filename}' is larger than its header says")
        return data

    return read


def _folder_entries(folder: Path, limits: Limits) -> Iterator[_Entry]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            if path.is_symlink():
                raise FerError(f"{path}: symbolic link inside the dataset folder; refused")
            files.append(path.relative_to(folder).as_posix())
    total = 0
    for rel in sorted(files):
        label = _class_of(rel, folder)
        if label is None:
            continue
        total += (folder / rel).stat().st_size
        if total > limits.max_unpacked_bytes:
            raise FerError(f"{folder}: more than {limits.max_unpacked_bytes} bytes of images")
        yield _Entry(rel, label, (folder / rel).read_bytes)


def _usage_of(entry_id: str) -> str:
    stem = PurePosixPath(entry_id).name
    return next((u for u in USAGE_PREFIXES if stem.startswith(u + "_")), "")


def _from_images(
    entries: Iterator[_Entry], source: dict[str, Any], where: str, limits: Limits
) -> Acquired:
    """Decode every entry; a source without a file checksum gets the manifest's (FOLDER_SHA256)."""
    ids, labels, usage, images = [], [], [], []
    converted = 0
    manifest = hashlib.sha256()
    for entry in tqdm(entries, desc="decode", unit="img", mininterval=2.0):
        if PurePosixPath(entry.id).suffix.lower() not in IMAGE_SUFFIXES:
            raise FerError(f"{where}: '{entry.id}' is not an image file")
        data = entry.read()
        manifest.update(f"{hashlib.sha256(data).hexdigest()}  {entry.id}\n".encode())
        pixels, was_converted = decode_fer48(
            data, f"{where}: {entry.id}", max_pixels=limits.max_image_pixels
        )
        converted += was_converted
        ids.append(entry.id)
        labels.append(entry.label)
        usage.append(_usage_of(entry.id))
        images.append(pixels)
    if not images:
        raise FerError(f"{where}: no images found (expected <any>/<class>/<image> files)")
    dataset = Dataset(np.stack(images), np.array(labels, np.int64), np.array(ids), np.array(usage))
    source.setdefault("sha256", manifest.hexdigest())
    return Acquired(_require_all_classes(dataset, where), source, converted)


def _from_csv(path: Path, source: dict[str, Any], limits: Limits) -> Acquired:
    opener = gzip.open if _is_gzip(path) else open
    ids, labels, usage, images = [], [], [], []
    try:
        with opener(path, "rt", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            if "emotion" not in fields or "pixels" not in fields:
                raise FerError(f"{path}: not a FER2013 CSV (need columns emotion,pixels[,Usage])")
            reader.fieldnames = fields
            for row_number, row in enumerate(
                tqdm(reader, desc="parse", unit="row", mininterval=2.0), 1
            ):
                where = f"{path}: row {row_number}"
                if None in row or any(row.get(f) is None for f in fields):
                    raise FerError(f"{where}: wrong number of columns")
                try:
                    label = int(row["emotion"])
                except ValueError:
                    raise FerError(f"{where}: label '{row['emotion']}' is not an integer") from None
                if not 0 <= label < len(CLASSES):
                    raise FerError(f"{where}: label {label} outside 0..{len(CLASSES) - 1}")
                try:
                    pixels = np.array(row["pixels"].split(), dtype=np.int64)
                except ValueError:
                    raise FerError(f"{where}: pixels are not integers") from None
                if pixels.size != FER_SIZE * FER_SIZE:
                    raise FerError(f"{where}: {pixels.size} pixels, expected {FER_SIZE * FER_SIZE}")
                if pixels.min() < 0 or pixels.max() > 255:
                    raise FerError(f"{where}: pixel values outside 0..255")
                ids.append(f"csv:{row_number}")
                labels.append(label)
                usage.append((row.get("Usage") or "").strip())
                images.append(pixels.astype(np.uint8).reshape(FER_SIZE, FER_SIZE))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise FerError(f"{path}: unreadable CSV ({err})") from None
    if not images:
        raise FerError(f"{path}: no data rows")
    dataset = Dataset(np.stack(images), np.array(labels, np.int64), np.array(ids), np.array(usage))
    return Acquired(_require_all_classes(dataset, str(path)), source, 0)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _require_all_classes(dataset: Dataset, where: str) -> Dataset:
    counts = np.bincount(dataset.labels, minlength=len(CLASSES))
    empty = [CLASSES[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise FerError(f"{where}: no images for class {', '.join(empty)}")
    return dataset


# --------------------------------------------------------------------------- summary + stage


def summarize(acquired: Acquired) -> dict[str, Any]:
    """Per-class and per-usage counts, conversions and exact duplicates of a dataset."""
    ds = acquired.dataset
    flat = ds.images.reshape(len(ds), -1)
    digests = Counter(hashlib.sha1(row.tobytes()).hexdigest() for row in flat)
    return {
        "source": acquired.source,
        "total": len(ds),
        "per_class": {c: int(n) for c, n in zip(CLASSES, np.bincount(ds.labels, minlength=7))},
        "per_usage": dict(sorted(Counter(str(u) for u in ds.usage).items())),
        "converted_to_48x48_gray": acquired.converted,
        "exact_duplicate_images": int(sum(n - 1 for n in digests.values())),
        "classes": list(CLASSES),
        "ordering": "zip/folder: sorted by path inside the source; CSV: row order",
    }
