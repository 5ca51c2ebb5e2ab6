"""The commands the user named stay readable on the committed results: ``dvc metrics show``
fits a screen, the headline files hold what the aggregate says, and ``dvc plots show`` opens
with the training curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferstudy.analysis.headline import headline, summary
from ferstudy.core import paths
from ferstudy.core.params import load_params

ROOT = Path(__file__).resolve().parents[1]
DVC = {**os.environ, "COLUMNS": "160", "DVC_NO_ANALYTICS": "1"}

pytestmark = pytest.mark.dvc


def _dvc(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=DVC,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_metrics_show_fits_a_screen():
    lines = _dvc("metrics", "show").rstrip("\n").splitlines()
    assert len(lines) <= 40, f"{len(lines)} rows"
    assert max(map(len, lines)) <= 200, f"{max(map(len, lines))} columns"
    header = lines[0].split()
    for key in ("test_acc", "test_acc_hw", "macro_f1", "private_acc", "img_per_s"):
        assert key in header
    files = {line.split()[0] for line in lines[1:]}
    assert str(paths.SUMMARY_FILE) in files
    runs = {Path(file).stem for file in files - {str(paths.SUMMARY_FILE)}}
    assert runs == {p.stem for p in (ROOT / paths.HEADLINE_DIR).glob("*.json")}


#: The recommended flags of ``dvc exp show`` (README, docs/experiments.md).
EXP_SHOW = ("--only-changed", "--drop", ".*/|Created", "--keep", "(mean|best)_acc")


def test_exp_show_fits_160_columns_with_the_recommended_flags(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("\nlr: 0.0001 ", "\nlr: 0.001 ", 1))
    shown = _dvc("exp", "show", "--no-pager", *EXP_SHOW, cwd=clone)
    lines = shown.rstrip("\n").splitlines()
    assert "…" not in shown and max(map(len, lines)) <= 160 and len(lines) <= 40, shown
    header = lines[1].split()
    assert header == ["Experiment", "best_acc", "mean_acc", "lr"], header
    summary = json.loads((ROOT / paths.SUMMARY_FILE).read_text())
    workspace = next(line.split() for line in lines if line.split()[:1] == ["workspace"])
    assert float(workspace[1]) == summary["best_acc"] and workspace[3] == "0.001"


def test_summary_repeats_the_headline_files():
    headlines = {
        file.stem: json.loads(file.read_text())
        for file in (ROOT / paths.HEADLINE_DIR).glob("*.json")
    }
    written = json.loads((ROOT / paths.SUMMARY_FILE).read_text())
    assert written == summary(headlines, load_params(ROOT / "params.yaml").runs)
    assert written["best_acc"] == max(h["test_acc"] for h in headlines.values())


def _committed(path: Path, commit: str) -> dict:
    """A committed JSON file as it was at ``commit``."""
    relative = path.relative_to(ROOT).as_posix()
    shown = subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=ROOT, capture_output=True)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_headline_files_repeat_the_aggregate_and_speed_files():
    """Each headline file repeats the aggregate and speed files it was computed from: those
    committed with it (a run landed since, by `ferstudy reference-run`, has newer speed files
    until the cross-run stages run again)."""
    for file in sorted((ROOT / paths.HEADLINE_DIR).glob("*.json")):
        run = file.stem
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", str(file)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        aggregate = _committed(ROOT / paths.aggregate_file(run), commit)
        assert aggregate == json.loads((ROOT / paths.aggregate_file(run)).read_text())
        seeds = aggregate["seeds"]
        speeds = [_committed(ROOT / paths.speed_file(paths.run_id(run, s)), commit) for s in seeds]
        written = json.loads(file.read_text())
        assert written == headline(aggregate, speeds)
        assert written["test_acc"] == round(aggregate["test_accuracy"]["mean"], 4)


def test_plots_open_with_the_training_curves(tmp_path):
    _dvc("plots", "show", "--out", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    curves = page.find("plots/curves/accuracy/")
    confusion = page.find("confusion ")
    figures = page.find("plots_figures_")
    assert -1 < curves < confusion < figures, (curves, confusion, figures)
    assert '"epoch"' in page and "categorical cross-entropy" in page  # axis titles
