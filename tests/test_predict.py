"""The predictor on real faces, every input format and every bad input."""

import io
import json

import numpy as np
import pytest
from conftest import fer_faces, run_ferstudy, saved_model
from PIL import Image

from ferstudy import CLASSES
from ferstudy.predict import EmotionClassifier, analyze

KEYS = {"file", "status", "face", "box", "confidence", "probabilities", "emotion"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("m") / "mobilenet-random")


@pytest.fixture(scope="module")
def classifier(model_dir):
    return EmotionClassifier(model_dir)


def group_photo(faces, scale=3, gap=60):
    """Real FER2013 faces, enlarged, side by side on a larger RGB canvas."""
    side = 48 * scale
    canvas = np.full((side + 2 * gap, len(faces) * (side + gap) + gap, 3), 120, np.uint8)
    for i, face in enumerate(faces):
        big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC))
        x = gap + i * (side + gap)
        canvas[gap : gap + side, x : x + side] = big[..., None]
    return canvas


@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_photo_with_several_faces(tmp_path, classifier, detector):
    faces = fer_faces(40)
    photo = group_photo([faces[i] for i in (0, 5, 9)])
    path = tmp_path / "group.jpg"
    Image.fromarray(photo).save(path, quality=95)
    records = analyze(path, classifier, detector=detector, plot_dir=tmp_path / "plots")
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) >= 2, records
    for r in ok:
        assert set(r) == KEYS
        x, y, w, h = r["box"]
        assert x >= 0 and y >= 0 and x + w <= photo.shape[1] and y + h <= photo.shape[0]
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert list(r["probabilities"]) == list(CLASSES)
        assert r["emotion"] == max(r["probabilities"], key=r["probabilities"].get)
    assert [r["face"] for r in ok] == list(range(len(ok)))
    assert (tmp_path / "plots" / "group.png").stat().st_size > 10_000


def test_no_detect_equals_classifier_on_the_crop(tmp_path, classifier):
    face = fer_faces(3)[1]
    Image.fromarray(face).save(tmp_path / "crop.png")
    (record,) = analyze(tmp_path / "crop.png", classifier, detector=None)
    assert record["box"] is None and record["status"] == "ok"
    expected = classifier(face[None])[0]
    assert list(record["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP"])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_formats_and_modes(tmp_path, classifier, fmt, mode):
    face = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    img = Image.fromarray(face).convert(mode)
    if fmt in ("JPEG", "BMP") and mode == "RGBA":
        img = img.convert("RGB")
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt)
    (record,) = analyze(path, classifier, detector=None)
    assert record["status"] == "ok"


def test_exif_orientation_is_applied(tmp_path, classifier):
    face = fer_faces(3)[2]
    upright = tmp_path / "upright.png"
    Image.fromarray(face).save(upright)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display needs a 90 degree clockwise turn
    Image.fromarray(np.rot90(face, k=1)).save(rotated, exif=exif, quality=100, subsampling=0)
    a, b = analyze([upright, rotated], classifier, detector=None)
    pa, pb = (
        np.array(list(a["probabilities"].values())),
        np.array(list(b["probabilities"].values())),
    )
    assert np.abs(pa - pb).max() < 0.05  # same face up to JPEG loss


def test_arrays_from_python(classifier):
    faces = fer_faces(4)
    records = analyze([faces[0], np.stack([faces[1]] * 3, axis=2)], classifier, detector=None)
    assert [r["file"] for r in records] == ["<array 0>", "<array 1>"]
    (bad,) = analyze(np.zeros((5, 5, 2), np.uint8), classifier, detector=None)
    assert bad["status"] == "error" and "expected HxW" in bad["error"]


def test_bad_inputs_get_their_own_records(tmp_path, classifier):
    (tmp_path / "notes.jpg").write_text("not an image")
    good = io.BytesIO()
    Image.fromarray(fer_faces(2)[0]).save(good, format="PNG")
    (tmp_path / "cut.png").write_bytes(good.getvalue()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((200, 200), 127, np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(fer_faces(2)[0]).resize((144, 144)).save(tmp_path / "face.png")
    records = analyze(tmp_path, classifier, detector="haar")
    by_file = {r["file"].rsplit("/", 1)[-1]: r for r in records}
    assert (
        by_file["notes.jpg"]["status"] == "error" and "notes.jpg" in by_file["notes.jpg"]["error"]
    )
    assert by_file["cut.png"]["status"] == "error"
    assert by_file["empty.png"]["status"] == "error"
    assert by_file["blank.png"]["status"] == "no_face"
    assert len(records) >= 5


def test_cli_jsonl_summary_and_exit_code(tmp_path, model_dir):
    Image.fromarray(fer_faces(2)[0]).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("junk")
    out = tmp_path / "r.jsonl"
    proc = run_ferstudy(
        "predict",
        str(tmp_path / "a.png"),
        str(tmp_path / "b.jpg"),
        "--model",
        str(model_dir),
        "--no-detect",
        "--out",
        str(out),
        "--plot",
        str(tmp_path / "p"),
    )
    assert proc.returncode == 1  # one file failed
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["ok", "error"]
    assert "images read: 1, faces found: 1, images with no face: 0, failures: 1" in proc.stderr
    assert (tmp_path / "p" / "a.png").is_file()


def test_missing_or_foreign_model_dir_is_one_line(tmp_path, model_dir):
    proc = run_ferstudy("predict", str(tmp_path), "--model", str(model_dir.parent / "nope"))
    assert proc.returncode == 2
    err = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "mobilenet-random" in err[0]  # says which runs exist
