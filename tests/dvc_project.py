"""A copy of this repository's pipeline in a fresh git + DVC repo, for the tests that run it
through the dvc command line (each test module builds its own, so that they run in parallel)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import fer_model_file, synthetic_images, write_zip

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd: str, cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def stages_run(log: str) -> list[str]:
    """The stages a ``dvc repro`` or ``dvc exp run`` log says it ran, sorted."""
    lines = log.splitlines()
    return sorted(line.split("'")[1] for line in lines if line.startswith("Running stage"))


def make_project(tmp: Path, **overrides) -> tuple[Path, dict]:
    """A copy of this repository's pipeline with tiny params, in a fresh git + DVC repo."""
    project = tmp / "project"
    project.mkdir()
    for name in (".gitignore", "dvc.yaml", "reference", "src", "ports"):  # ports: links into src
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, symlinks=True)
        else:
            shutil.copy(src, project / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(
        runs=["openface-random", "mobilenet-random", "onet-pretrained", "onet-random"],
        seeds=[42],
        epochs=3,
        lr=0.01,
        batch_size=16,
        window=2,
        precision="bf16",  # OpenFace has no bf16 kernels and stays fp32: both paths run
        features_batch_size=32,
    )
    # 64 px: MobileNet's tail convolves over a 2 x 2 map and trains without XLA, the other tails
    # with it (``compile_tail``): both paths run
    params["backbone"]["mobilenet"] = {"input_size": 64, "fraction": 1.0}
    # one fine-tuned run, cheaply: 3 epochs (early stopping after 2 without a gain)
    params["finetune"].update(runs=["onet-pretrained"], epochs=3, warmup_epochs=1, patience=2)
    params.update(overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    zip_path = write_zip(tmp / "fer.zip", *synthetic_images(per_class=12))
    env = {
        **os.environ,
        "FER2013_PATH": str(zip_path),
        "FERSTUDY_THREADS": "2",
        "FER_MODEL_PATH": str(fer_model_file()),
    }
    sh("git init -q && git config user.email t@t && git config user.name t", project, env)
    sh(
        "dvc init -q && dvc config core.analytics false && dvc config core.check_update false",
        project,
        env,
    )
    sh("git add -A && git commit -qm pipeline", project, env)
    return project, env


def baseline(tmp: Path, **overrides) -> tuple[Path, dict, str]:
    """A project (``make_project``'s overrides) after its first ``dvc repro``, committed:
    (project, env, repro log)."""
    project, env = make_project(tmp, **overrides)
    log = sh("dvc repro", project, env)
    sh("git add -A && git commit -qm baseline", project, env)
    return project, env, log
