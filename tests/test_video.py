"""Videos: frames sampled at ``fps``, faces batched across frames, memory flat in the length.

Clips are generated here with OpenCV from a real face photo (tests/data/faces) that moves
across the frame, so the detector has a face to find in every frame.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_ferstudy, saved_model
from PIL import Image

from ferstudy.core.errors import FerError
from ferstudy.models.classifier import EmotionClassifier
from ferstudy.tools.predict import analyze, analyze_video

FACE = Path(__file__).parent / "data" / "faces" / "img1.jpg"
RATE = 10  # frames per second of the generated clips


def write_clip(path: Path, frames: int, size: tuple[int, int] = (320, 240)) -> Path:
    """An MJPEG AVI of ``frames`` frames at RATE fps: a 120-pixel face sliding right."""
    face = np.asarray(Image.open(FACE).convert("RGB").resize((120, 120)))[..., ::-1]  # BGR
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), RATE, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        x = 20 + (i * 3) % (size[0] - 160)
        frame[60:180, x : x + 120] = face
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return EmotionClassifier(saved_model(tmp_path_factory.mktemp("m") / "onet", "onet", 48))


@pytest.mark.parametrize(
    ("fps", "expected"),
    [
        (2, list(range(0, 40, 5))),
        (5, list(range(0, 40, 2))),
        (3, [0, 4, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37]),
    ],
)
def test_one_record_per_face_per_sampled_frame(tmp_path, classifier, fps, expected):
    frames = 40
    records = list(analyze_video(write_clip(tmp_path / "c.avi", frames), classifier, fps=fps))
    assert len(records) == frames * fps // RATE
    assert [r["frame"] for r in records] == expected
    assert [r["time"] for r in records] == pytest.approx([f / RATE for f in expected])
    assert {r["status"] for r in records} == {"ok"}
    assert all(r["face_confidence"] > 0.9 and r["box"][2] > 60 for r in records)


def test_video_faces_equal_the_same_frames_as_images(tmp_path, classifier):
    """Batched across frames, each face gets what the frame alone, as an image, gets."""
    clip = write_clip(tmp_path / "c.avi", 20)
    records = list(analyze_video(clip, classifier, fps=RATE, batch_size=7))
    capture = cv2.VideoCapture(str(clip))
    images = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(20)]
    capture.release()
    alone = analyze(images, classifier)
    assert len(records) == len(alone) == 20
    for video, image in zip(records, alone):
        assert video["box"] == image["box"]
        a, b = (np.array(list(r["probabilities"].values())) for r in (video, image))
        assert np.abs(a - b).max() <= 1e-6


def test_frames_without_a_face_keep_their_place(tmp_path, classifier):
    """A face-less frame's record waits for the faces before it: records stay in frame order."""
    clip = write_clip(tmp_path / "c.avi", 30)
    capture = cv2.VideoCapture(str(clip))
    frames = [capture.read()[1] for _ in range(30)]
    capture.release()
    writer = cv2.VideoWriter(
        str(tmp_path / "gaps.avi"), cv2.VideoWriter_fourcc(*"MJPG"), RATE, (320, 240)
    )
    for i, frame in enumerate(frames):
        writer.write(frame if i % 3 else np.full_like(frame, 90))  # frames 0, 3, 6... are empty
    writer.release()
    records = list(analyze_video(tmp_path / "gaps.avi", classifier, fps=RATE, batch_size=4))
    assert [r["frame"] for r in records] == list(range(30))
    assert [r["status"] for r in records] == ["ok" if i % 3 else "no_face" for i in range(30)]


def _peak_bytes(path: Path) -> int:
    """Peak of Python-tracked memory (NumPy arrays included) while the clip is analysed."""
    constant = lambda faces: np.full((len(faces), 7), 1 / 7)  # noqa: E731  (the pipeline only)
    tracemalloc.start()
    count = sum(1 for _ in analyze_video(path, constant, fps=RATE, detector=None))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count > 0
    return peak


def test_memory_does_not_grow_with_the_length_of_the_clip(tmp_path):
    size = (640, 480)  # 0.9 MB a frame: keeping frames would show at once
    short = _peak_bytes(write_clip(tmp_path / "short.avi", 30, size))
    long = _peak_bytes(write_clip(tmp_path / "long.avi", 300, size))
    assert long - short < 5e6, (short, long)


def test_cli_writes_json_lines_for_a_video(tmp_path, classifier):
    clip = write_clip(tmp_path / "clip.avi", 30)
    model = saved_model(tmp_path / "onet", "onet", 48)
    out = tmp_path / "clip.jsonl"
    proc = run_ferstudy(
        "predict", str(clip), "--fps", "2", "--model", str(model), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 5, 10, 15, 20, 25]
    assert "faces: 6" in proc.stderr


def test_a_file_that_is_not_a_video_is_one_line(tmp_path, classifier):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(FerError, match="broken.mp4: cannot be decoded as a video"):
        list(analyze_video(bad, classifier))
    model = saved_model(tmp_path / "onet", "onet", 48)
    proc = run_ferstudy("predict", str(bad), "--model", str(model))
    assert proc.returncode == 2
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4: cannot be decoded as a video" in errors[0]
