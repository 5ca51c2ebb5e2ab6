import gzip
import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import LocalServer, png_bytes, write_csv, write_folder, write_zip
from PIL import Image

from ferstudy import CLASSES
from ferstudy.cli import TIMINGS_FILE, main
from ferstudy.core.errors import FerError
from ferstudy.core.files import load_dataset
from ferstudy.data import acquire


def _check(acquired, images, labels):
    ds = acquired.dataset
    assert ds.images.shape == (len(labels), 48, 48) and ds.images.dtype == np.uint8
    # the same multiset of (label, image) pairs, whatever the order
    got = sorted((int(lab), img.tobytes()) for lab, img in zip(ds.labels, ds.images))
    want = sorted((int(lab), img.tobytes()) for lab, img in zip(labels, images))
    assert got == want


def _strings(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _assert_no_machine_path(summary, *paths):
    """No absolute path, nor any of ``paths`` or their folders, anywhere in the summary JSON."""
    text = json.dumps(summary)
    for path in paths:
        assert str(path) not in text and str(Path(path).parent) not in text
    for string in _strings(json.loads(text)):
        assert not os.path.isabs(string) and not string.startswith(("~", "file:")), string


def _folder_manifest_sha256(root: Path) -> str:
    """What ``sha256sum`` over the images, sorted by path, hashed again gives."""
    lines = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n"
        for p in sorted(root.rglob("*.png"), key=lambda p: p.relative_to(root).as_posix())
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def test_zip_source(tiny_zip, tiny_images):
    acquired = acquire.read_local(tiny_zip)
    _check(acquired, *tiny_images)
    assert acquired.source["kind"] == "zip"
    assert acquired.source["name"] == "fer.zip"
    assert acquired.source["sha256"] == hashlib.sha256(tiny_zip.read_bytes()).hexdigest()
    _assert_no_machine_path(acquire.summarize(acquired), tiny_zip)
    ds = acquired.dataset
    assert list(ds.ids) == sorted(ds.ids)  # documented ordering
    assert set(ds.usage) == {"Training", "PublicTest", "PrivateTest"}


def test_folder_source_with_aliases_and_case(tmp_path, tiny_images):
    images, labels = tiny_images
    root = write_folder(tmp_path / "data", images, labels)
    (root / "train" / "angry").rename(root / "train" / "Anger")
    (root / "train" / "sad").rename(root / "train" / "SADNESS")
    (root / "train" / ".DS_Store").write_bytes(b"junk")
    acquired = acquire.read_local(root)
    _check(acquired, images, labels)
    assert acquired.source["kind"] == "folder" and acquired.source["name"] == "data"
    assert acquired.source["sha256"] == _folder_manifest_sha256(root)
    assert "sorted by path" in acquired.source["sha256_of"]
    _assert_no_machine_path(acquire.summarize(acquired), root)


def test_folder_checksum_changes_with_content_and_names(tmp_path, tiny_images):
    root = write_folder(tmp_path / "data", *tiny_images)
    first = acquire.read_local(root).source["sha256"]
    assert acquire.read_local(root).source["sha256"] == first  # deterministic
    image = root / "train" / "happy" / "Training_30.png"
    image.rename(image.with_name("Training_30b.png"))
    renamed = acquire.read_local(root).source["sha256"]
    assert renamed != first
    image.with_name("Training_30b.png").write_bytes(png_bytes(tiny_images[0][0]))
    assert acquire.read_local(root).source["sha256"] not in (first, renamed)


@pytest.mark.parametrize("gz", [False, True])
def test_csv_source(tmp_path, tiny_images, gz):
    path = write_csv(tmp_path / ("fer.csv.gz" if gz else "fer.csv"), *tiny_images, gz=gz)
    acquired = acquire.read_local(path)
    assert acquired.source["name"] == path.name
    assert acquired.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    _assert_no_machine_path(acquire.summarize(acquired), path)
    ds = acquired.dataset
    np.testing.assert_array_equal(ds.images, tiny_images[0])  # CSV keeps row order
    np.testing.assert_array_equal(ds.labels, tiny_images[1])
    assert ds.ids[0] == "csv:1"


def test_non_48x48_and_colour_images_are_converted_and_counted(tmp_path, tiny_images):
    images, labels = tiny_images
    path = write_zip(tmp_path / "a.zip", images, labels)
    with zipfile.ZipFile(path, "a") as zf:
        rgb = Image.fromarray(np.full((96, 96, 3), 200, np.uint8))
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG")
        zf.writestr("train/happy/Training_big.jpg", buf.getvalue())
    acquired = acquire.read_local(path)
    assert acquired.converted == 1
    assert len(acquired.dataset) == len(labels) + 1
    assert acquire.summarize(acquired)["converted_to_48x48_gray"] == 1


def test_exact_duplicates_are_kept_and_counted(tmp_path, tiny_images):
    images, labels = tiny_images
    images = images.copy()
    images[1] = images[0]
    acquired = acquire.read_local(write_zip(tmp_path / "d.zip", images, labels))
    assert len(acquired.dataset) == len(labels)
    assert acquire.summarize(acquired)["exact_duplicate_images"] == 1


def _zip_with(tmp_path, tiny_images, name, data):
    path = write_zip(tmp_path / "bad.zip", *tiny_images)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("train/happy/Training_x.jpg", b"this is not a jpeg", "not a readable image"),
        ("train/happy/notes.txt", b"hello", "not an image file"),
        ("train/bored/Training_x.png", None, "unknown class folder 'bored'"),
        ("README.png", None, "not inside a class folder"),
        ("train/happy/Training_empty.png", b"", "empty file"),
    ],
)
def test_bad_zip_entries(tmp_path, tiny_images, name, data, message):
    if data is None:
        data = png_bytes(tiny_images[0][0])
    with pytest.raises(FerError, match=message):
        acquire.read_local(_zip_with(tmp_path, tiny_images, name, data))


def test_truncated_image(tmp_path, tiny_images):
    good = png_bytes(tiny_images[0][0])
    path = _zip_with(tmp_path, tiny_images, "train/fear/Training_t.png", good[: len(good) // 2])
    with pytest.raises(FerError, match="Training_t.png"):
        acquire.read_local(path)


def test_corrupt_and_truncated_zip(tmp_path, tiny_zip):
    data = tiny_zip.read_bytes()
    truncated = tmp_path / "trunc.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FerError, match="corrupt or truncated zip"):
        acquire.read_local(truncated)
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(FerError, match="corrupt"):
        acquire.read_local(corrupt)


def test_class_with_no_images(tmp_path, tiny_images):
    images, labels = tiny_images
    keep = labels != CLASSES.index("disgust")
    with pytest.raises(FerError, match="no images for class disgust"):
        acquire.read_local(write_zip(tmp_path / "x.zip", images[keep], labels[keep]))


def test_empty_sources(tmp_path):
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    with pytest.raises(FerError, match="corrupt|no images"):
        acquire.read_local(empty_zip)
    (tmp_path / "folder").mkdir()
    with pytest.raises(FerError, match="no images found"):
        acquire.read_local(tmp_path / "folder")
    csv_path = tmp_path / "e.csv"
    csv_path.write_text("emotion,pixels,Usage\n")
    with pytest.raises(FerError, match="no data rows"):
        acquire.read_local(csv_path)
    with pytest.raises(FerError, match="no such file"):
        acquire.read_local(tmp_path / "missing.zip")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3," + " ".join(["1"] * 100) + ",Training", "row 1: 100 pixels, expected 2304"),
        ("7," + " ".join(["1"] * 2304) + ",Training", "row 1: label 7 outside 0..6"),
        ("-1," + " ".join(["1"] * 2304) + ",Training", "label -1 outside"),
        ("2," + " ".join(["300"] * 2304) + ",Training", "pixel values outside 0..255"),
    ],
)
def test_bad_csv_rows(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text("emotion,pixels,Usage\n" + row + "\n")
    with pytest.raises(FerError, match=message):
        acquire.read_local(path)


def test_not_a_dataset(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00\x01binary")
    with pytest.raises(FerError, match="not a zip, folder or FER2013 CSV"):
        acquire.read_local(path)


# ------------------------------------------------------------------ downloads, no network


@pytest.fixture
def server(tiny_zip, tmp_path, tiny_images):
    csv_gz = write_csv(tmp_path / "f.csv.gz", *tiny_images, gz=True).read_bytes()
    srv = LocalServer(
        {"/fer.zip": tiny_zip.read_bytes(), "/fer.csv.gz": csv_gz},
        redirects={"/moved.zip": "/fer.zip", "/away.zip": "http://localhost:9/fer.zip"},
        cut={"/fer.csv.gz"},
    )
    yield srv
    srv.close()


def test_url_source_with_checksum(server, tiny_zip, tiny_images, tmp_path):
    sha = hashlib.sha256(tiny_zip.read_bytes()).hexdigest()
    acquired = acquire.acquire(f"{server.url}/fer.zip", sha256=sha, download_dir=tmp_path / "dl")
    _check(acquired, *tiny_images)
    assert acquired.source["kind"] == "url"
    assert acquired.source["name"] == f"{server.url}/fer.zip"
    assert acquired.source["sha256"] == sha
    _assert_no_machine_path(acquire.summarize(acquired), tmp_path / "dl")
    # a same-host redirect is followed
    acquire.acquire(f"{server.url}/moved.zip", sha256=sha, download_dir=tmp_path / "dl2")


def test_url_checksum_mismatch_leaves_no_file(server, tmp_path):
    with pytest.raises(FerError, match="checksum mismatch"):
        acquire.acquire(f"{server.url}/fer.zip", sha256="0" * 64, download_dir=tmp_path / "dl")
    assert not any((tmp_path / "dl").iterdir())


def test_url_needs_checksum_and_https(server, tmp_path):
    with pytest.raises(FerError, match="needs its sha256"):
        acquire.acquire(f"{server.url}/fer.zip", download_dir=tmp_path)
    with pytest.raises(FerError, match="refused plain http"):
        acquire.download_url("http://example.org/fer.zip", "0" * 64, tmp_path)


def test_url_redirect_to_other_host_is_refused(server, tmp_path):
    with pytest.raises(FerError, match="refused redirect"):
        acquire.download_url(f"{server.url}/away.zip", "0" * 64, tmp_path / "dl")


def test_url_download_cut_off_is_not_used(server, tmp_path):
    with pytest.raises(FerError, match="cut off|download failed"):
        acquire.download_url(f"{server.url}/fer.csv.gz", "0" * 64, tmp_path / "dl")
    assert not any((tmp_path / "dl").iterdir())


def test_kaggle_client_replaced_at_the_boundary(monkeypatch, tmp_path, tiny_images):
    import kagglehub

    folder = write_folder(tmp_path / "kaggle_cache", *tiny_images)
    calls = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda h: calls.append(h) or str(folder))
    acquired = acquire.acquire("kaggle", kaggle_dataset="msambare/fer2013")
    assert calls == ["msambare/fer2013"]
    assert acquired.source["kind"] == "kaggle"
    assert acquired.source["name"] == "msambare/fer2013"
    assert acquired.source["sha256"] == _folder_manifest_sha256(folder)
    _assert_no_machine_path(acquire.summarize(acquired), folder)
    _check(acquired, *tiny_images)


def test_url_credentials_and_query_are_not_recorded():
    url = "https://user:secret@example.org:8443/data/fer.zip?token=abc#x"
    assert acquire.public_url(url) == "https://example.org:8443/data/fer.zip"


def test_kaggle_offline_error_says_how_to_use_a_local_copy(monkeypatch):
    import kagglehub

    def offline(handle):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(FerError, match="FER2013_PATH=/path/to/fer2013.zip"):
        acquire.acquire("kaggle")


# ------------------------------------------------------------------ the stage command


def test_cli_writes_outputs_and_env_overrides_params(tmp_path, tiny_zip, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("data:\n  source: kaggle\n")
    monkeypatch.setenv("FER2013_PATH", str(tiny_zip))
    assert main(["acquire"]) == 0
    ds = load_dataset("data/fer2013.npz")
    assert len(ds) == 70
    summary = json.loads(Path("data/fer2013_summary.json").read_text())
    assert summary["source"] == {
        "kind": "zip",
        "name": "fer.zip",
        "sha256": hashlib.sha256(tiny_zip.read_bytes()).hexdigest(),
    }
    _assert_no_machine_path(summary, tiny_zip, tmp_path)
    first = Path("data/fer2013.npz").read_bytes()
    assert main(["acquire"]) == 0
    assert Path("data/fer2013.npz").read_bytes() == first  # deterministic bytes
    timings = [json.loads(line) for line in TIMINGS_FILE.read_text().splitlines()]
    assert [(t["stage"], t["run"], t["seed"]) for t in timings] == [("acquire", None, None)] * 2
    assert all(0 <= t["seconds"] <= t["process_seconds"] for t in timings)
    assert all(t["cpu_seconds"] > 0 for t in timings)


def test_cli_bad_input_is_one_line_and_leaves_no_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    Path("params.yaml").write_text(f"data:\n  source: {bad}\n")
    monkeypatch.delenv("FER2013_PATH", raising=False)
    assert main(["acquire"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.zip" in err[0]
    assert not Path("data/fer2013.npz").exists()
    assert not list(Path(".").rglob("*.tmp"))
    assert not TIMINGS_FILE.exists()  # only finished stages are timed


def test_gzip_detection_does_not_depend_on_name(tmp_path, tiny_images):
    path = write_csv(tmp_path / "fer.data", *tiny_images, gz=True)
    with gzip.open(path) as fh:
        assert fh.read(7) == b"emotion"
    assert len(acquire.read_local(path).dataset) == 70


def test_stage_timing_counts_its_worker_processes_cpu(tmp_path, monkeypatch):
    """A stage's CPU seconds include its live worker processes' (dlib's), not only its own."""
    import argparse
    import subprocess
    import sys

    import psutil

    from ferstudy.cli import log_timing

    monkeypatch.chdir(tmp_path)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
    worker = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while sum(psutil.Process(worker.pid).cpu_times()[:2]) < 0.95:
            assert time.monotonic() < deadline, "the worker did not burn its CPU second"
            time.sleep(0.05)
        own = sum(psutil.Process().cpu_times()[:4])  # its own and its ended children's
        log_timing(argparse.Namespace(command="features"), 1.0)
    finally:
        worker.kill()
        worker.wait()
    record = json.loads(TIMINGS_FILE.read_text())
    assert record["cpu_seconds"] - own >= 0.9
