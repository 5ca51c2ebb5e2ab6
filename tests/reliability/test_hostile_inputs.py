"""Hostile and broken inputs: a clear error, nothing written outside the outputs, nothing lost.

Each case is also a row of the README's "input -> what happens" table.
"""

import hashlib
import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import LocalServer, png_bytes, run_ferstudy, saved_model, synthetic_images, write_zip
from PIL import Image

from ferstudy.cli import main
from ferstudy.tools.predict import analyze

NOISE = np.random.default_rng(0).integers(0, 256, (96, 96), dtype=np.uint8)


def huge_png_header(width=20000, height=20000) -> bytes:
    """A PNG that declares width x height pixels but carries almost no data."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _base_zip(path: Path) -> Path:
    return write_zip(path, *synthetic_images(per_class=6))


def zip_with_entry(
    tmp: Path, name: str, data: bytes, *, symlink: bool = False, compress: bool = False
) -> Path:
    path = _base_zip(tmp / "hostile.zip")
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        if compress:
            info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)
    return path


def zip_bomb(tmp: Path) -> Path:
    return zip_with_entry(tmp, "train/happy/Training_bomb.png", b"\0" * 30_000_000, compress=True)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with a finished acquire output that no failure may damage."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("FER2013_PATH", str(_base_zip(tmp_path / "good.zip")))
    (root / "params.yaml").write_text("data:\n  source: kaggle\n  max_unpacked_bytes: 10000000\n")
    assert main(["acquire"]) == 0
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


ACQUIRE_CASES = {
    "zip entry with ../": (
        lambda t, s: zip_with_entry(t, "../../escape/happy/x.png", b"x"),
        "escapes the archive",
    ),
    "zip entry with absolute path": (
        lambda t, s: zip_with_entry(t, "/tmp/happy/x.png", b"x"),
        "escapes the archive",
    ),
    "zip entry that is a symlink": (
        lambda t, s: zip_with_entry(t, "train/happy/l.png", b"/etc/passwd", symlink=True),
        "symbolic link",
    ),
    "zip bomb (30 MB of zeros)": (lambda t, s: zip_bomb(t), "decompression bomb"),
    "20000x20000 PNG in the zip": (
        lambda t, s: zip_with_entry(t, "train/happy/h.png", huge_png_header()),
        "larger than the limit",
    ),
    "truncated image in the zip": (
        lambda t, s: zip_with_entry(t, "train/sad/t.png", png_bytes(NOISE)[:300]),
        "damaged or truncated|not a readable",
    ),
    "zero-byte image in the zip": (
        lambda t, s: zip_with_entry(t, "train/sad/z.png", b""),
        "empty file",
    ),
    "plain http URL": (lambda t, s: "http://example.org/fer2013.zip", "refused plain http"),
    "redirect to another host": (lambda t, s: f"{s.url}/away.zip", "refused redirect"),
    "checksum mismatch": (lambda t, s: f"{s.url}/good.zip", "checksum mismatch"),
    "download cut off half-way": (lambda t, s: f"{s.url}/cut.zip", "cut off|download failed"),
}


@pytest.mark.parametrize("case", list(ACQUIRE_CASES))
def test_acquire_refuses_cleanly_and_keeps_earlier_results(
    project, tmp_path, monkeypatch, capsys, case
):
    good = (tmp_path / "good.zip").read_bytes()
    server = LocalServer(
        {"/good.zip": good, "/cut.zip": good},
        redirects={"/away.zip": "http://localhost:9/x.zip"},
        cut={"/cut.zip"},
    )
    try:
        make, message = ACQUIRE_CASES[case]
        source = make(tmp_path, server)
        monkeypatch.setenv("FER2013_PATH", str(source))
        (project / "params.yaml").write_text(
            f"data:\n  source: kaggle\n  sha256: '{'0' * 64}'\n  max_unpacked_bytes: 10000000\n"
        )
        before = _files(project)
        outside = _files(tmp_path.parent)
        capsys.readouterr()
        assert main(["acquire"]) == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
        assert len(err) == 1 and err[0].startswith("error: ")
        import re

        assert re.search(message, err[0]), err[0]
        after = _files(project)
        after.pop("params.yaml")
        before.pop("params.yaml")
        assert after == before  # earlier result intact, no partial or temporary file
        new_outside = set(_files(tmp_path.parent)) - set(outside)
        assert all(p.startswith(tmp_path.name) or "project" in p for p in new_outside)
    finally:
        server.close()


# ------------------------------------------------------------------ images for the predictor


def _image_bytes(kind: str) -> bytes:
    face = np.asarray(Image.fromarray(synthetic_images(1)[0][3]).resize((96, 96)))
    buf = io.BytesIO()
    if kind == "16-bit PNG":
        Image.fromarray(face.astype(np.uint16) * 257).save(buf, format="PNG")
    elif kind == "CMYK JPEG":
        Image.fromarray(face).convert("CMYK").save(buf, format="JPEG")
    elif kind == "animated GIF":
        frames = [Image.fromarray(face), Image.fromarray(255 - face)]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


IMAGE_CASES = {
    "zero bytes": (lambda: b"", "error", "empty file"),
    "truncated PNG": (
        lambda: png_bytes(NOISE)[: len(png_bytes(NOISE)) // 2],
        "error",
        "truncated|readable",
    ),
    "20000x20000 PNG": (huge_png_header, "error", "larger than the limit"),
    "16-bit PNG": (lambda: _image_bytes("16-bit PNG"), "ok", None),
    "CMYK JPEG": (lambda: _image_bytes("CMYK JPEG"), "ok", None),
    "animated GIF": (lambda: _image_bytes("animated GIF"), "ok", None),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("m") / "mobilenet-random")


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_predict_on_broken_and_unusual_images(tmp_path, model_dir, case):
    make, status, message = IMAGE_CASES[case]
    suffix = {"CMYK JPEG": ".jpg", "animated GIF": ".gif"}.get(case, ".png")
    path = tmp_path / f"input{suffix}"
    path.write_bytes(make())
    (record,) = analyze(path, model_dir, detector=None)
    assert record["status"] == status, record
    if message:
        import re

        assert re.search(message, record["error"])


def test_16bit_image_keeps_its_brightness(tmp_path):
    from ferstudy.data.images import decode_fer48

    face = synthetic_images(1)[0][3]
    buf = io.BytesIO()
    Image.fromarray(face.astype(np.uint16) * 257).save(buf, format="PNG")
    pixels, converted = decode_fer48(buf.getvalue(), "x")
    assert converted and np.abs(pixels.astype(int) - face).max() <= 1


def test_tampered_model_folder_is_refused_by_predict(tmp_path, model_dir):
    import shutil

    folder = tmp_path / "mobilenet-random"
    shutil.copytree(model_dir, folder)
    data = bytearray((folder / "weights.h5").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "weights.h5").write_bytes(bytes(data))
    Image.fromarray(synthetic_images(1)[0][0]).save(tmp_path / "a.png")
    proc = run_ferstudy("predict", str(tmp_path / "a.png"), "--model", str(folder), "--no-detect")
    assert proc.returncode == 2
    assert "does not match its recorded sha256; refused" in proc.stderr


def test_checksum_helper_is_sha256(tmp_path):
    from ferstudy.core.files import file_sha256

    (tmp_path / "x").write_bytes(b"abc")
    assert file_sha256(tmp_path / "x") == hashlib.sha256(b"abc").hexdigest()
