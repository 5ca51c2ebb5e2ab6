"""The predictor on real faces, every input format and every bad input.

The module's model is a seeded random ONet: its probabilities move with the face (a
random MobileNet at 32x32 gives exactly 1/7 for every image, which would make every
equality below pass vacuously; ``test_model_output_depends_on_the_face`` guards this).
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fer_faces, run_ferstudy, saved_model
from PIL import Image

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.data.images import decode_fer48, to_fer48
from ferstudy.models.classifier import EmotionClassifier, Ensemble
from ferstudy.tools.predict import analyze, crop_with_margin

KEYS = {"file", "status", "face", "box", "face_confidence", "probabilities", "emotion"}


RUN = "onet-random"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("m") / RUN, backbone="onet", size=48)


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


def test_plots_of_inputs_with_one_stem_do_not_overwrite_each_other(tmp_path, classifier):
    faces = fer_faces(3)
    paths = [tmp_path / "a" / "face.png", tmp_path / "b" / "face.png", tmp_path / "a" / "face.jpg"]
    for face, path in zip(faces, paths, strict=True):
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(face).save(path)
    analyze(paths, classifier, detector=None, plot_dir=tmp_path / "plots")
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["face-2.png", "face-3.png", "face.png"]
    used: set[str] = set()  # the command's calls between videos share their names
    for path in paths[:2]:
        analyze(path, classifier, detector=None, plot_dir=tmp_path / "p2", plot_names=used)
    assert sorted(p.name for p in (tmp_path / "p2").iterdir()) == ["face-2.png", "face.png"]


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


def probs(record) -> np.ndarray:
    assert record["status"] == "ok", record
    assert list(record["probabilities"]) == list(CLASSES)
    return np.array(list(record["probabilities"].values()))


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    """Clearly different: far beyond the 1e-6 that equal inputs are allowed."""
    return float(np.abs(a - b).max()) > 1e-3


def test_model_output_depends_on_the_face(classifier):
    faces = fer_faces(3)
    p = classifier(np.stack([faces[2], np.rot90(faces[2]).copy(), 255 - faces[2], faces[0]]))
    for other in p[1:]:
        assert differ(p[0], other), p


# EXIF orientation -> what is stored, for an upright face (display applies the inverse)
STORED = {
    2: np.fliplr,  # mirrored
    3: lambda a: np.rot90(a, 2),  # upside down
    6: lambda a: np.rot90(a, 1),  # camera turned: display needs a 90 degree clockwise turn
    8: lambda a: np.rot90(a, 3),  # display needs a 90 degree counter-clockwise turn
}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied(tmp_path, classifier, orientation):
    face = fer_faces(3)[2]
    stored = np.ascontiguousarray(STORED[orientation](face))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(face).save(tmp_path / "upright.png")
    Image.fromarray(stored).save(tmp_path / "tagged.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "untagged.png")
    upright, tagged, untagged = (
        probs(r)
        for r in analyze(
            [tmp_path / f"{n}.png" for n in ("upright", "tagged", "untagged")],
            classifier,
            detector=None,
        )
    )
    assert np.abs(tagged - upright).max() <= 1e-6  # the tag turns it upright, exactly
    assert differ(untagged, upright)  # control: the same pixels without the tag do not


def test_exif_orientation_of_a_camera_jpeg(tmp_path, classifier):
    """A JPEG as a camera writes it: the decoded pixels, turned as the tag says."""
    face = fer_faces(3)[2]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "camera.jpg"
    Image.fromarray(np.rot90(face, 1).copy()).save(path, exif=exif, quality=90)
    decoded = np.asarray(Image.open(path).convert("L"))  # Pillow does not turn by itself
    (record,) = analyze(path, classifier, detector=None)
    turned, as_stored = classifier(np.stack([np.rot90(decoded, -1).copy(), decoded]))
    assert np.abs(probs(record) - turned).max() <= 1e-6
    assert differ(probs(record), as_stored)


def test_animated_gif_uses_its_first_frame(tmp_path, classifier):
    face = fer_faces(3)[1]
    frames = [Image.fromarray(face), Image.fromarray(255 - face)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as gif:
        assert gif.n_frames == 2
        np.testing.assert_array_equal(np.asarray(gif.convert("L")), face)  # GIF is lossless here
    (record,) = analyze(path, classifier, detector=None)
    first, second = classifier(np.stack([face, 255 - face]))
    assert np.abs(probs(record) - first).max() <= 1e-6
    assert differ(probs(record), second)


def test_gray_rgb_and_opaque_rgba_give_the_same_probabilities(tmp_path, classifier):
    face = fer_faces(4)[3]
    rgb = np.repeat(face[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full_like(face, 255)[..., None]], axis=2)
    for name, pixels in (("gray", face), ("rgb", rgb), ("rgba", rgba)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    assert Image.open(tmp_path / "rgba.png").mode == "RGBA"
    records = analyze(
        [tmp_path / f"{n}.png" for n in ("gray", "rgb", "rgba")] + [face, rgb, rgba],
        classifier,
        detector=None,
    )
    expected = classifier(face[None])[0]
    assert len(records) == 6
    for record in records:
        assert np.abs(probs(record) - expected).max() <= 1e-6, record["file"]
    assert differ(expected, classifier((255 - face)[None])[0])  # the face matters


def _colour_face() -> np.ndarray:
    face = fer_faces(4)[3]
    return np.dstack([face, np.roll(face, 7, axis=1), 255 - face])  # far from gray


def _alpha(shape) -> np.ndarray:
    return np.tile(np.linspace(0, 255, shape[1]).astype(np.uint8), (shape[0], 1))


# name -> (file suffix, Pillow image); each is converted by acquire's decode_fer48
CONVERSIONS = {
    "RGB colour": (".png", lambda: Image.fromarray(_colour_face())),
    "RGB colour 64x64": (".png", lambda: Image.fromarray(_colour_face()).resize((64, 64))),
    "palette": (".png", lambda: Image.fromarray(_colour_face()).convert("P")),
    "CMYK JPEG": (".jpg", lambda: Image.fromarray(_colour_face()).convert("CMYK")),
    "16-bit gray": (
        ".tif",
        lambda: Image.fromarray(fer_faces(4)[3].astype(np.uint16) * 257),
    ),
    "RGBA with transparency": (
        ".png",
        lambda: Image.fromarray(np.dstack([_colour_face(), _alpha((48, 48))])),
    ),
    "LA with transparency": (
        ".png",
        lambda: Image.fromarray(np.dstack([fer_faces(4)[3], _alpha((48, 48))]), mode="LA"),
    ),
}


@pytest.mark.parametrize(
    "case",
    list(CONVERSIONS),
)
def test_file_is_converted_as_training_images_were(tmp_path, classifier, case):
    """A file predicted with --no-detect gets the pixels acquire would have stored for it."""
    suffix, make = CONVERSIONS[case]
    path = tmp_path / f"face{suffix}"
    make().save(path)
    trained_on, _ = decode_fer48(path.read_bytes(), path.name)
    (record,) = analyze(path, classifier, detector=None)
    expected = classifier(trained_on[None])[0]
    assert np.abs(probs(record) - expected).max() <= 1e-6
    assert differ(expected, classifier((255 - trained_on)[None])[0])


def test_arrays_from_python(classifier):
    faces = fer_faces(4)
    records = analyze([faces[0], np.stack([faces[1]] * 3, axis=2)], classifier, detector=None)
    assert [r["file"] for r in records] == ["<array 0>", "<array 1>"]
    (bad,) = analyze(np.zeros((5, 5, 2), np.uint8), classifier, detector=None)
    assert bad["status"] == "error" and "<array 0>: expected H x W" in bad["error"]


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
    assert "inputs: 2, faces: 1, images or frames with no face: 0, failures: 1" in proc.stderr
    assert (tmp_path / "p" / "a.png").is_file()


def test_missing_or_foreign_model_dir_is_one_line(tmp_path, model_dir):
    proc = run_ferstudy("predict", str(tmp_path), "--model", str(model_dir.parent / "nope"))
    assert proc.returncode == 2
    err = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and RUN in err[0]  # says which runs exist


def test_pil_images_batches_and_bgr_arrays_give_the_same_answer(classifier):
    faces = fer_faces(4)
    rgb = np.dstack([faces[0], np.roll(faces[0], 5, axis=1), 255 - faces[0]])
    batch = np.stack([rgb, rgb[:, ::-1]])  # N x H x W x 3: two images
    records = analyze(
        [Image.fromarray(rgb), batch, rgb[..., ::-1].copy()], classifier, detector=None
    )
    assert [r["file"] for r in records] == ["<image 0>", "<array 1>", "<array 2>", "<array 3>"]
    reference = probs(records[0])
    assert np.abs(probs(records[1]) - reference).max() <= 1e-6
    assert differ(probs(records[2]), reference)  # the mirrored image is another image
    # the last array is BGR; read as RGB it is another image, read as BGR the same one
    assert differ(probs(records[3]), reference)
    (as_bgr,) = analyze(rgb[..., ::-1].copy(), classifier, detector=None, channels="bgr")
    assert np.abs(probs(as_bgr) - reference).max() <= 1e-6


def test_given_boxes_replace_detection_and_are_checked(tmp_path, classifier):
    faces = fer_faces(10)
    photo = group_photo([faces[0], faces[5]])
    path = tmp_path / "two.png"
    Image.fromarray(photo).save(path)
    boxes = [(60, 60, 144, 144), (264, 60, 144, 144)]
    records = analyze(path, classifier, boxes=boxes)
    assert [r["box"] for r in records] == [list(b) for b in boxes]
    assert all(r["face_confidence"] is None for r in records)
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    for record, (x, y, w, h) in zip(records, boxes):
        crop = crop_with_margin(gray, [x, y, w, h], 0.1)
        expected = classifier(to_fer48(crop)[None])[0]
        assert np.abs(probs(record) - expected).max() <= 1e-6
    assert differ(probs(records[0]), probs(records[1]))
    (only,) = analyze(path, classifier, boxes=boxes, largest_only=True)
    assert only["box"] == list(boxes[0])  # equal areas: the first
    with pytest.raises(FerError, match=r"two.png: face box \[400, 60, 144, 144\] lies outside"):
        analyze(path, classifier, boxes=[(400, 60, 144, 144)])
    with pytest.raises(FerError, match="one list of boxes per image"):
        analyze([path, path], classifier, boxes=[boxes])
    Image.fromarray(photo).save(tmp_path / "again.png")
    with pytest.raises(FerError, match="holds 2 images; give one list per image"):
        analyze(tmp_path, classifier, boxes=boxes)  # a folder: two.png and again.png
    with pytest.raises(FerError, match=r"a face box is \[x, y, width, height\]"):
        analyze(path, classifier, boxes=(60, 60, 144, 144))  # one box, not a list of boxes


FACES = Path(__file__).parent / "data" / "faces"


def real_faces_photo(sides: list[int], pad: int = 50) -> np.ndarray:
    """Real face photos (tests/data/faces) at the given sizes, side by side on a gray canvas."""
    canvas = np.full((max(sides) + 2 * pad, sum(sides) + pad * (len(sides) + 1), 3), 128, np.uint8)
    x = pad
    for side, name in zip(sides, ("img1.jpg", "img2.jpg", "img3.jpg")):
        face = Image.open(FACES / name).convert("RGB").resize((side, side))
        canvas[pad : pad + side, x : x + side] = np.asarray(face)
        x += side + pad
    return canvas


@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_largest_only_keeps_the_biggest_detected_face(classifier, detector):
    photo = real_faces_photo([100, 200])
    everyone = analyze(photo, classifier, detector=detector)
    assert [r["status"] for r in everyone] == ["ok", "ok"], everyone
    (largest,) = analyze(photo, classifier, detector=detector, largest_only=True)
    biggest = max((r["box"] for r in everyone), key=lambda b: b[2] * b[3])
    assert largest["box"] == biggest and biggest[0] > 150  # the 200-pixel face, on the right


def test_flip_ensemble_averages_each_face_and_its_mirror(model_dir, classifier):
    faces = np.stack(fer_faces(3))
    other = EmotionClassifier(saved_model(model_dir.parent / "other", "onet", 48, seed=1))
    both = Ensemble([classifier, other], flip=True, name="two")
    expected = np.mean(
        [m(f) for m in (classifier, other) for f in (faces, faces[:, :, ::-1].copy())], axis=0
    )
    assert np.abs(both(faces) - expected).max() <= 1e-6
    assert differ(Ensemble([classifier], flip=False, name="one")(faces)[0], expected[0])
