"""The whole pipeline through DVC itself, on a tiny generated dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from dvc_project import sh

from ferstudy.reporting.markdown import SPEED_HEADING

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.dvc


def test_repro_runs_every_stage_of_the_matrix(pipeline):
    project, env, log = pipeline
    for stage in (
        "acquire",
        "split",
        "features@openface-random-42",
        "features@mobilenet-random-42",
        "train@openface-random-42",
        "train@mobilenet-random-42",
        "features@onet-pretrained-42",
        "train@onet-random-42",
        "evaluate@openface-random-42",
        "evaluate@onet-pretrained-42",
        "heads@onet-pretrained-42",
        "finetune@onet-pretrained-42",
        "evaluate_finetune@onet-pretrained-42",
        "outside",
        "export@onet-pretrained",
        "metrics",
        "aggregate",
        "report",
    ):
        assert f"Running stage '{stage}'" in log
    for run in ("openface-random", "mobilenet-random", "onet-pretrained", "onet-random"):
        assert (project / "models" / run / "seed42" / "weights.h5").is_file()
        study = json.loads((project / "metrics" / "study" / run / "seed42.json").read_text())
        assert list(study["MCR"]["accuracy"]) == ["1-2", "3-3"]  # window 2 over 3 epochs
        aggregate = json.loads((project / "metrics" / "aggregate" / f"{run}.json").read_text())
        assert aggregate["n"] == 1 and aggregate["test_accuracy"]["half_width"] is None
    assert (project / "reports" / "report.html").is_file()
    assert "![" in (project / "reports" / "report.md").read_text()
    tuned = "onet-pretrained-finetune"
    config = json.loads((project / "models" / tuned / "seed42" / "config.json").read_text())
    assert config["mode"] == "finetune" and config["epochs_run"] <= 3
    study = json.loads((project / "metrics" / "study" / tuned / "seed42.json").read_text())
    assert study["epochs"] == config["epochs_run"]
    assert tuned not in json.loads((project / "metrics" / "fidelity.json").read_text())["runs"]
    ranking = json.loads((project / "metrics" / "ranking.json").read_text())
    assert tuned in [row["name"] for row in ranking["rows"]]
    with np.load(project / "metrics" / "outside" / "fer" / "test_probabilities.npz") as fer:
        assert fer["probabilities"].shape == (len(fer["rows"]), 7)
    report = (project / "reports" / "report.md").read_text()
    assert tuned in report and "## Ranking on FER2013's PrivateTest" in report
    assert (project / "plots" / "figures" / "curves_finetune.png").is_file()


PREDICT_VS_EVALUATE = """
import json, numpy as np, ferstudy
from ferstudy.core import paths
from ferstudy.core.files import load_dataset
from ferstudy.models.classifier import EmotionClassifier
images = load_dataset(paths.DATASET_FILE).images
out = {}
for run in ("openface-random", "mobilenet-random"):
    evaluated = np.load(f"metrics/eval/{run}/seed42/test_probabilities.npz")
    classifier = EmotionClassifier(paths.model_dir(f"{run}/seed42"))
    predicted = classifier(images[evaluated["rows"]])
    expected = evaluated["probabilities"].tolist()
    out[run] = [classifier.config["precision"], expected, predicted.tolist()]
print(json.dumps(out))
"""


def test_predictor_reproduces_the_evaluation_at_each_precision(pipeline):
    project, env, _ = pipeline
    (project / "check.py").write_text(PREDICT_VS_EVALUATE)
    out = json.loads(sh(f"{sys.executable} check.py 2>/dev/null", project, env).splitlines()[-1])
    (project / "check.py").unlink()
    assert {run: precision for run, (precision, _, _) in out.items()} == {
        "openface-random": "fp32",
        "mobilenet-random": "bf16",
    }
    for _, evaluated, predicted in out.values():
        assert np.allclose(evaluated, predicted, atol=1e-3)


def test_metrics_show_and_plots(pipeline):
    project, env, _ = pipeline
    shown = json.loads(sh("dvc metrics show --json", project, env))
    text = json.dumps(shown)
    for run in ("openface-random", "mobilenet-random"):  # one headline file per run
        assert f"metrics/headline/{run}.json" in text
    assert "test_acc" in text and "metrics/eval/" not in text  # per-seed files: not declared
    seed = json.loads(
        sh("dvc metrics show --json metrics/eval/mobilenet-random/seed42.json", project, env)
    )
    assert "accuracy" in json.dumps(seed)  # any output still reads with a target
    out = sh("dvc plots show --json", project, env)
    names = json.dumps(json.loads(out))
    assert "plots/curves/accuracy/openface-random.csv" in names
    assert "predictions.csv" in names and "figures" in names


def test_metrics_and_plots_on_a_fresh_clone(pipeline, tmp_path):
    project, env, _ = pipeline
    sh(f"git clone -q {project} {tmp_path / 'clone'}", tmp_path, env)
    clone = tmp_path / "clone"
    shown = sh("dvc metrics show --json", clone, env)
    assert "metrics/headline/openface-random.json" in shown and "test_acc" in shown
    plots = sh("dvc plots diff --json HEAD", clone, env)
    assert "predictions.csv" in plots and "plots/curves/loss/openface-random.csv" in plots
    assert "examples.png" not in sh("git ls-files", clone, env)  # no dataset pixels in git


def test_nothing_changed_runs_nothing(pipeline):
    project, env, _ = pipeline
    log = sh("dvc repro", project, env)
    assert "Running stage" not in log
    assert "didn't change" in log or "up to date" in log


def test_a_fresh_clone_pulls_a_finished_run_from_a_remote_and_reruns_nothing(pipeline, tmp_path):
    """A shared cache (a local folder standing in for S3, GCS, Azure or SSH): push from here,
    clone elsewhere, pull, and `dvc repro` has nothing to do."""
    project, env, _ = pipeline
    remote = tmp_path / "remote"
    sh(f"dvc remote add -d shared {remote}", project, env)
    try:
        sh("dvc push -q", project, env)
        sh("git add .dvc/config && git commit -qm 'shared cache'", project, env)
        clone = tmp_path / "clone"
        sh(f"git clone -q {project} {clone}", tmp_path, env)
        sh("dvc pull -q", clone, env)
        assert (clone / "models/onet-pretrained/seed42/weights.h5").is_file()
        assert (clone / "data/features/openface-random/seed42/train.npy").is_file()
        assert "Running stage" not in sh("dvc repro", clone, env)
        assert json.loads(sh("dvc status --json", clone, env).strip().splitlines()[-1]) == {}
    finally:
        sh("git reset -q --hard HEAD~1 2>/dev/null || true", project, env)
        sh("dvc remote remove shared 2>/dev/null || true", project, env)


def _results(project: Path) -> dict[str, bytes]:
    """Every result file that must be byte-identical on a rerun (timings excluded)."""
    files = [
        p
        for d in ("metrics/train", "metrics/study", "metrics/eval", "metrics/aggregate")
        for p in sorted((project / d).rglob("*"))
        if p.is_file()
    ]
    files += [
        project / "metrics" / name
        for name in (
            "study_tables.csv",
            "study_tables.md",
            "comparisons.json",
            "aggregate.md",
            "ranking.json",
            "export.json",
        )
    ]
    out = {str(p.relative_to(project)): p.read_bytes() for p in files}
    report = (project / "reports/report.md").read_text()
    # timings differ from run to run: all that depends on them is in the speed appendix
    out["report.md (before the speed appendix)"] = report.split(SPEED_HEADING)[0].encode()
    return out


def test_forced_rerun_gives_identical_results(pipeline):
    project, env, _ = pipeline
    before = _results(project)
    assert len(before) > 15
    log = sh("dvc repro -f", project, env)
    assert "Running stage 'train@openface-random-42'" in log
    after = _results(project)
    assert before.keys() == after.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert not changed


FEATURES_CHANGE = {  # params change -> (features out of date?, training itself out of date?)
    "seeds": (lambda p: p.update(seeds=[7]), True, True),  # new stages: ...-7
    "precision": (lambda p: p.update(precision="fp32"), True, False),
    "frozen_bn": (lambda p: p.update(frozen_bn="inference"), True, False),
    "input_size": (lambda p: p["backbone"]["mobilenet"].update(input_size=40), True, False),
    "fraction": (lambda p: p["backbone"]["mobilenet"].update(fraction=0.5), True, False),
    "lr": (lambda p: p.update(lr=0.5), False, True),
    "epochs": (lambda p: p.update(epochs=4), False, True),
}


@pytest.mark.parametrize("change", list(FEATURES_CHANGE))
def test_which_params_send_features_out_of_date(pipeline, change):
    """`dvc status` after a params change: feature extraction only for what changes features,
    training only for what training reads (`dvc status` judges each stage by its own deps; a
    features change reaches training through the features folder once it is rerun)."""
    project, env, _ = pipeline
    assert "Running stage" not in sh("dvc repro --dry", project, env)  # a clean baseline
    edit, features_change, training_change = FEATURES_CHANGE[change]
    saved = (project / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        stale = json.loads(sh("dvc status --json", project, env).strip().splitlines()[-1])
    finally:
        (project / "params.yaml").write_text(saved)
    seed = params["seeds"][0]
    features = {s for s in stale if s.startswith("features@")}
    assert (f"train@mobilenet-random-{seed}" in stale) == training_change
    if features_change:
        assert f"features@mobilenet-random-{seed}" in features
    else:
        assert not features
    assert "acquire" not in stale and "split" not in stale


PORT_EDITS = {  # a source file -> the backbones whose stages it puts out of date
    "src/ferstudy/models/onet.py": {"onet"},
    "src/ferstudy/models/openface.py": {"openface"},
    "src/ferstudy/models/mobilenet.py": {"mobilenet"},
    "src/ferstudy/models/weights_files.py": {"openface", "mobilenet"},  # their shared helper
}


@pytest.mark.parametrize("source", list(PORT_EDITS))
def test_a_change_to_one_port_puts_only_its_backbones_stages_out_of_date(pipeline, source):
    """Every per-run stage declares its backbone's port files (``ports/<run>``) and not the
    other ports: an edit to one port leaves every other backbone's finished runs up to date."""
    project, env, _ = pipeline
    assert "Running stage" not in sh("dvc repro --dry", project, env)  # a clean baseline
    path = project / source
    saved = path.read_text()
    path.write_text(saved + "\n# an edit\n")
    try:
        stale = json.loads(sh("dvc status --json", project, env).strip().splitlines()[-1])
    finally:
        path.write_text(saved)
    backbones = {name.split("@")[1].split("-")[0] for name in stale}
    assert backbones == PORT_EDITS[source], sorted(stale)
    assert all("@" in name for name in stale), sorted(stale)  # no cross-run stage


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = [
    "Findings",
    "Results of every run",
    "Differences that are real",
    "Ranking on FER2013's PrivateTest",
    "Pretrained against random, and the training curves",
    "Classical heads on the cached features",
    "Test F1 per emotion",
    "Appendix A: every pair of runs",
    "Appendix B: feature health",
    "Appendix C: fidelity and protocol variants",
    "Appendix D: the study's Tables 2-5 beside this project's",
    "Appendix E: speed",
]


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed")
def test_report_renders_in_chromium(pipeline, tmp_path):
    project = pipeline[0]
    html = tmp_path / "report.html"
    shutil.copy(project / "reports/report.html", html)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                BROWSER,
                *flags,
                f"--user-data-dir={profile}",
                "--dump-dom",
                "--enable-logging=stderr",
                f"file://{html}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr
    for section in SECTIONS:
        assert (
            f">{section.replace(chr(39), '&#x27;')}</h2>" in dom.stdout
            or f">{section}</h2>" in dom.stdout
        ), section
    assert dom.stdout.count("<img") >= 6 and dom.stdout.count("<table") >= 6
    png = html.with_suffix(".png")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/screenshot_report.sh"), str(html), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert png.stat().st_size > 50_000
