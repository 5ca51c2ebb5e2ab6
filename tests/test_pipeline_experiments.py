"""Experiments through DVC on the pipeline: `dvc exp run -S`, a queue with two workers, a
second seed. The pipeline here runs ONet's two runs only (pretrained and random, the pretrained
one fine-tuned); every backbone's kind of stage runs in ``test_pipeline_dvc.py``."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from dvc_project import baseline, sh, stages_run

pytestmark = pytest.mark.dvc
RUNS = ["onet-pretrained", "onet-random"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """The pipeline on ``RUNS`` after its first ``dvc repro``: (project, env, repro log)."""
    return baseline(tmp_path_factory.mktemp("dvc"), runs=RUNS)


def test_exp_run_lr_retrains_training_and_later_only(pipeline):
    project, env, _ = pipeline
    log = sh("dvc exp run -S lr=1e-3", project, env)
    assert stages_run(log) == sorted(
        [f"{stage}@{run}-42" for stage in ("train", "evaluate") for run in RUNS]
        + ["metrics", "aggregate", "report"]
    )  # no feature extraction, and the fine-tuned run has its own lr
    diff = sh("dvc metrics diff --json", project, env)
    assert "metrics/headline/onet-random.json" in diff and "test_acc" in diff
    sh("dvc plots diff --json", project, env)


def test_queue_runs_a_grid_with_two_workers(pipeline):
    project, env, _ = pipeline
    env = {**env, "FERSTUDY_THREADS": "1"}  # 2 workers x 1 thread on 2 cores
    for lr in ("0.005", "0.02"):
        sh(f"dvc exp run --queue -S lr={lr} -n lr-{lr.replace('.', '')}", project, env)
    quiet = {
        "cwd": project,
        "env": env,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "timeout": 300,
    }
    # The workers are daemons: keep no pipe of theirs open, or waiting for output never ends.
    subprocess.run(["dvc", "queue", "start", "--jobs", "2"], check=True, **quiet)
    try:
        deadline, most_running = time.time() + 900, 0
        while time.time() < deadline:
            status = sh("dvc queue status", project, env)
            most_running = max(most_running, status.count("Running"))
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(1)
        assert "Success" in status and "Failed" not in status, status
        assert status.count("Success") == 2, status
        assert most_running == 2, "the two workers never ran at the same time"
        names = json.dumps(json.loads(sh("dvc exp show --json", project, env)))
        assert "lr-0005" in names and "lr-002" in names
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], **quiet)


def test_exp_run_with_two_seeds_aggregates_and_shares_pretrained_features(pipeline):
    project, env, _ = pipeline
    sh("git checkout -- . && dvc checkout -q", project, env)  # from the baseline
    log = sh("dvc exp run -S 'seeds=[42,43]'", project, env)
    for stage in (
        "features@onet-random-43",
        "train@onet-pretrained-43",
        "heads@onet-pretrained-43",
        "aggregate",
    ):
        assert f"Running stage '{stage}'" in log
    assert "Running stage 'features@onet-random-42'" not in log  # seed 42 is reused as it was
    # a pretrained backbone's features do not depend on the seed: extracted once (stage
    # pretrained_features, not run again for a new seed), linked by each seed, cached once
    assert "Running stage 'pretrained_features@onet-pretrained'" not in log
    assert "features onet-pretrained/seed43: linked data/features/onet-pretrained/pretrained" in log
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]

    def out_md5(stage: str) -> str:
        return lock[stage]["outs"][0]["md5"]

    assert out_md5("features@onet-pretrained-42") == out_md5("features@onet-pretrained-43")
    assert out_md5("features@onet-random-42") != out_md5("features@onet-random-43")
    for run in ("onet-random", "onet-pretrained"):
        for seed in (42, 43):
            assert (project / "metrics" / "eval" / run / f"seed{seed}.json").is_file()
        agg = json.loads((project / "metrics" / "aggregate" / f"{run}.json").read_text())
        per_seed = [
            json.loads((project / "metrics" / "eval" / run / f"seed{s}.json").read_text())
            for s in (42, 43)
        ]
        accuracies = [e["accuracy"] for e in per_seed]
        assert agg["n"] == 2 and agg["seeds"] == [42, 43]
        assert agg["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
        assert agg["test_accuracy"]["sd"] == pytest.approx(np.std(accuracies, ddof=1))
    pairs = json.loads((project / "metrics" / "comparisons.json").read_text())
    study_pairs = [c for c in pairs.values() if not (c["a"] + c["b"]).count("-finetune")]
    assert len(study_pairs) == 1 and all(c["seeds"] == 2 for c in pairs.values())
    assert (project / "metrics" / "eval" / "onet-pretrained-finetune" / "seed43.json").is_file()
    shown = sh("dvc metrics show", project, env)
    assert "test_acc_hw" in shown and "metrics/headline/onet-pretrained.json" in shown
    report = (project / "reports" / "report.md").read_text()
    assert "Every run over 2 seeds" in report and " ± " in report
