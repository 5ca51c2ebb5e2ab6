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

pytestmark = pytest.mark.slow

RUN = "mobilenet-random"
RUN_ID = "mobilenet-random/seed42"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("resume")
    monkeypatch = pytest.MonkeyPatch()
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params.update(runs=["mobilenet-random"], epochs=5, lr=0.01, batch_size=4, precision="fp32")
    params["heads"]["runs"] = ["mobilenet-random"]
    # 64 px: a tail of convolution kernels (2 x 2 map), trained without XLA
    params["backbone"]["mobilenet"] = {"input_size": 64, "fraction": 1.0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER2013_PATH", str(write_zip(tmp_path / "f.zip", *synthetic_images(40))))
    for stage in (["acquire"], ["split"], ["features", RUN, "--seed", "42"]):
        assert main(stage) == 0
    yield tmp_path
    monkeypatch.undo()


@pytest.fixture(scope="module")
def reference(project):
    """The outputs of one uninterrupted training run."""
    proc = _train(project)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    outputs = _outputs(project)
    shutil.rmtree(project / "models")
    shutil.rmtree(project / "metrics")
    return outputs


def _train(project, **kw):
    env = {**os.environ, "FERSTUDY_THREADS": "1", "FERSTUDY_CHECKPOINT_SECONDS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "ferstudy", "train", RUN, "--seed", "42"],
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
    metrics = (project / "metrics/train" / RUN_ID / "metrics.json").read_text()
    curves = {p.name: p.read_text() for p in (project / "metrics/train" / RUN_ID).rglob("*.tsv")}
    return metrics, curves, _weights(project / "models" / RUN_ID / "weights.h5")


def _kill_after_epoch(project, epoch: int = 2) -> int:
    """Start training, SIGKILL it once a checkpoint of ``epoch`` or later exists."""
    proc = _train(project)
    marker = project / ".ferstudy/checkpoints" / RUN_ID / "epoch.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if marker.is_file() and json.loads(marker.read_text())["epoch"] >= epoch:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = json.loads(marker.read_text())["epoch"]
    assert epoch <= killed_at < 5
    assert not (project / "models" / RUN_ID).exists()  # nothing that looks like a finished model
    return killed_at


def _resume_equals(project, reference, killed_at: int) -> None:
    proc = _train(project)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    assert f"resuming {RUN_ID} after epoch {killed_at}" in log
    metrics, curves, weights = _outputs(project)
    assert metrics == reference[0]
    assert curves == reference[1]
    assert weights.keys() == reference[2].keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(value, reference[2][name])
    for suffix in ("", ".tmp", ".old"):  # cleared after success
        assert not (project / ".ferstudy/checkpoints" / f"{RUN_ID}{suffix}").exists()
    shutil.rmtree(project / "models")  # the next test starts from the features alone
    shutil.rmtree(project / "metrics")


def test_sigkill_then_resume_equals_uninterrupted(project, reference):
    _resume_equals(project, reference, _kill_after_epoch(project))


def test_kill_inside_a_checkpoint_write_resumes_from_the_last_whole_one(project, reference):
    """A kill between save's two renames leaves the newest checkpoint under .tmp and the one
    before under .old; a kill while writing leaves a .tmp without its epoch.json."""
    killed_at = _kill_after_epoch(project)
    checkpoints = project / ".ferstudy/checkpoints"
    whole = checkpoints / RUN_ID
    for suffix in (".tmp", ".old"):  # what the kill itself may have left: set the scene anew
        shutil.rmtree(checkpoints / f"{RUN_ID}{suffix}", ignore_errors=True)
    # between the renames: the current one moved to .old, the newest whole under .tmp
    shutil.copytree(whole, checkpoints / f"{RUN_ID}.tmp")
    whole.rename(checkpoints / f"{RUN_ID}.old")
    _resume_equals(project, reference, killed_at)

    killed_at = _kill_after_epoch(project)
    shutil.rmtree(checkpoints / f"{RUN_ID}.tmp", ignore_errors=True)
    partial = checkpoints / f"{RUN_ID}.tmp"  # killed mid-write: half a state, no epoch.json
    partial.mkdir()
    (partial / "state.index").write_bytes((whole / "state.index").read_bytes()[:50])
    _resume_equals(project, reference, killed_at)


def test_a_checkpoint_of_other_settings_is_not_resumed(project, reference):
    _kill_after_epoch(project)
    params_file = project / "params.yaml"
    saved = params_file.read_text()
    params_file.write_text(yaml.safe_dump({**yaml.safe_load(saved), "lr": 0.02}))
    try:
        proc = _train(project)
        log = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, log
        assert "resuming" not in log
        assert "epoch 0 (untrained)" in log
        metrics, _, _ = _outputs(project)
        assert json.loads(metrics)["step"] == 5
        assert metrics != reference[0]  # trained with the new lr from the start
    finally:
        params_file.write_text(saved)
        shutil.rmtree(project / "models", ignore_errors=True)
        shutil.rmtree(project / "metrics", ignore_errors=True)


def test_a_checkpoint_from_another_dataset_file_is_not_resumed(project, reference):
    _kill_after_epoch(project)
    dataset = project / "data" / "fer2013.npz"
    saved = dataset.read_bytes()
    with np.load(dataset) as arrays:  # same images, one more entry: another sha256
        np.savez(dataset, **dict(arrays), note=np.array("changed"))
    try:
        proc = _train(project)
        log = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, log
        assert "resuming" not in log and "epoch 0 (untrained)" in log
    finally:
        dataset.write_bytes(saved)
        shutil.rmtree(project / "models", ignore_errors=True)
        shutil.rmtree(project / "metrics", ignore_errors=True)
