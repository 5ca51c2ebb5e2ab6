"""Training killed with SIGKILL mid-run resumes after its last finished epoch, same result."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import synthetic_images, write_zip

from ferstudy.cli import main

RUN = "mobilenet-random"


@pytest.fixture
def project(tmp_path, monkeypatch):
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params.update(
        runs=["mobilenet-random"], epochs=5, lr=0.01, batch_size=4, precision="fp32"
    )
    params["backbone"]["mobilenet"] = {"input_size": 32, "fraction": 1.0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER2013_PATH", str(write_zip(tmp_path / "f.zip", *synthetic_images(150))))
    for stage in (["acquire"], ["split"], ["features", RUN]):
        assert main(stage) == 0
    return tmp_path


def _train(project, **kw):
    env = {**os.environ, "FERSTUDY_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ferstudy", "train", RUN],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _weights(path):
    with h5py.File(path) as f:
        out = {}
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None
        )
        return out


def _outputs(project):
    metrics = (project / "metrics/train" / RUN / "metrics.json").read_text()
    curves = {p.name: p.read_text() for p in (project / "metrics/train" / RUN).rglob("*.tsv")}
    return metrics, curves, _weights(project / "models" / RUN / "weights.h5")


def test_sigkill_then_resume_equals_uninterrupted(project):
    proc = _train(project)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    reference = _outputs(project)
    shutil.rmtree(project / "models")
    shutil.rmtree(project / "metrics")

    proc = _train(project)
    marker = project / ".ferstudy/checkpoints" / RUN / "epoch.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if marker.is_file() and json.loads(marker.read_text())["epoch"] >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = json.loads(marker.read_text())["epoch"]
    assert 2 <= killed_at < 5
    assert not (project / "models" / RUN).exists()  # nothing that looks like a finished model

    proc = _train(project)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    assert f"resuming {RUN} after epoch {killed_at}" in log
    metrics, curves, weights = _outputs(project)
    assert metrics == reference[0]
    assert curves == reference[1]
    assert weights.keys() == reference[2].keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(value, reference[2][name])
    assert not (project / ".ferstudy/checkpoints" / RUN).exists()  # cleared after success
