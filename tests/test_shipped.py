"""The model that ships in the package works straight after install: offline, with no pipeline
run, from the checkout, from a built wheel, and fetched with ``dvc get``/``dvc artifacts get``.

Each test runs the command line in a fresh interpreter from an empty folder (no ``models/``),
with an empty weights cache and every proxy pointed at a closed port, so nothing can come from
the pipeline's outputs or the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import shipped_folder

from ferstudy.core.files import read_json
from ferstudy.models.classifier import CARD_FILE, SHIPPED_DIR, read_card

ROOT = Path(__file__).resolve().parents[1]
PHOTO = Path(__file__).parent / "data" / "photos" / "img41.jpg"
DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port
needs_export = pytest.mark.skipif(
    not (SHIPPED_DIR / CARD_FILE).is_file(),
    reason="no model exported into the package yet (dvc repro export)",
)


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FER_MODEL_PATH", "PYTHONPATH")}
    env.update(
        FERSTUDY_HOME=str(tmp_path / "empty-home"),
        HTTP_PROXY=DEAD,
        HTTPS_PROXY=DEAD,
        http_proxy=DEAD,
        https_proxy=DEAD,
        PIP_NO_INDEX="1",
        **extra,
    )
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def faces_of(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines()]
    assert records and all(r["status"] == "ok" for r in records), records
    return records


@needs_export
def test_the_shipped_model_is_the_one_the_pipeline_measured():
    card = read_card(SHIPPED_DIR)
    assert card["scores"] == read_json(ROOT / "metrics" / "export.json")
    assert card["scores"]["privatetest"]["images"] == 3589  # every PrivateTest image


@needs_export
def test_predict_works_offline_without_any_pipeline_output(tmp_path):
    work = tmp_path / "somewhere"
    work.mkdir()
    proc = run(
        [sys.executable, "-m", "ferstudy", "predict", str(PHOTO)], work, offline_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    (face,) = faces_of(proc.stdout)
    assert face["emotion"] in face["probabilities"] and face["face_confidence"] > 0.9
    assert "(shipped;" in proc.stderr and not (work / "models").exists()


def test_the_built_wheel_carries_the_model(tmp_path):
    """Packaging, with a model the test makes in the export stage's layout: the wheel carries
    it, and analyze() installed from the wheel alone finds and uses it."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(source / "src" / "ferstudy" / "shipped", ignore_errors=True)
    shipped_folder(source / "src" / "ferstudy" / "shipped")
    card = read_card(source / "src" / "ferstudy" / "shipped")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", "dist"],
        source,
        os.environ.copy(),
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = (source / "dist").glob("ferstudy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for member in card["members"]:
        assert f"ferstudy/shipped/{member['folder']}/weights.h5" in names
    assert f"ferstudy/shipped/{CARD_FILE}" in names and "ferstudy/shipped/MODEL_CARD.md" in names

    target = tmp_path / "site"
    install = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        tmp_path,
        offline_env(tmp_path),
    )
    assert install.returncode == 0, install.stderr
    shutil.rmtree(source)  # nothing left to fall back on but the installed copy
    env = offline_env(tmp_path, PYTHONPATH=str(target))
    code = (
        "import json, ferstudy; from ferstudy.models.classifier import SHIPPED_DIR; "
        f"print(json.dumps([ferstudy.__file__, str(SHIPPED_DIR), "
        f"ferstudy.analyze({str(PHOTO)!r}, largest_only=True)]))"
    )
    proc = run([sys.executable, "-c", code], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, shipped, records = json.loads(proc.stdout.splitlines()[-1])
    assert Path(module).is_relative_to(target) and Path(shipped).is_relative_to(target)
    (face,) = records
    assert face["status"] == "ok" and len(face["probabilities"]) == 7


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@needs_export
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git repository")
def test_dvc_get_and_artifacts_get_fetch_the_model_from_a_clone(tmp_path):
    clone = tmp_path / "clone"
    _git("clone", "--quiet", str(ROOT), str(clone), cwd=tmp_path)
    dvc = [sys.executable, "-m", "dvc"]
    env = offline_env(tmp_path)
    got = run([*dvc, "get", str(clone), "src/ferstudy/shipped", "-o", "got"], tmp_path, env)
    assert got.returncode == 0, got.stderr
    # a registered version, as GTO writes it (`gto register fer-emotion`)
    _git(
        "-c", "user.name=ci", "-c", "user.email=ci@localhost", "tag", "-a",
        "fer-emotion@v0.1.0", "-m", "Registering artifact fer-emotion version v0.1.0", cwd=clone,
    )  # fmt: skip
    art = run([*dvc, "artifacts", "get", str(clone), "fer-emotion", "-o", "art"], tmp_path, env)
    assert art.returncode == 0, art.stderr
    committed = clone / "src" / "ferstudy" / "shipped"
    for folder in (tmp_path / "got", tmp_path / "art"):
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        assert files == sorted(
            p.relative_to(committed) for p in committed.rglob("*") if p.is_file()
        )
        assert all((folder / f).read_bytes() == (committed / f).read_bytes() for f in files)
        read_card(folder)  # every member matches its card
