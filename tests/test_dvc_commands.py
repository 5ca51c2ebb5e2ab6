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

from ferstudy.analysis.headline import headline
from ferstudy.core import paths

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
    runs = {Path(line.split()[0]).stem for line in lines[1:]}
    assert runs == {p.stem for p in (ROOT / paths.HEADLINE_DIR).glob("*.json")}


def test_headline_files_repeat_the_aggregate_and_speed_files():
    for file in sorted((ROOT / paths.HEADLINE_DIR).glob("*.json")):
        run = file.stem
        aggregate = json.loads((ROOT / paths.aggregate_file(run)).read_text())
        seeds = aggregate["seeds"]
        speeds = [
            json.loads((ROOT / paths.speed_file(paths.run_id(run, s))).read_text()) for s in seeds
        ]
        written = json.loads(file.read_text())
        assert written == headline(aggregate, speeds)
        assert written["test_acc"] == round(aggregate["test_accuracy"]["mean"], 4)
        assert written["seeds"] == len(seeds)


def test_plots_open_with_the_training_curves(tmp_path):
    _dvc("plots", "show", "--out", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    curves = page.find("plots/curves/accuracy/")
    confusion = page.find("confusion ")
    figures = page.find("plots_figures_")
    assert -1 < curves < confusion < figures, (curves, confusion, figures)
    assert '"epoch"' in page and "categorical cross-entropy" in page  # axis titles
