"""The committed results are the pipeline's own: ``dvc.lock`` records only stages of
``dvc.yaml``, every git-tracked file in the output folders is an output of one of them, and the
README's "Results at a glance" and headline agree with ``metrics/aggregate`` and
``metrics/export.json`` as the pipeline wrote them, so a rerun that changes a result cannot
leave the README behind, nor a renamed stage leave its old results beside the new ones."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml
from dvc.repo import Repo

from ferstudy.core.files import read_json

ROOT = Path(__file__).resolve().parents[1]
AGGREGATE = ROOT / "metrics" / "aggregate"
EXPORT = ROOT / "metrics" / "export.json"
RUN_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
#: The folders whose git-tracked files only the pipeline's stages write.
OUTPUT_FOLDERS = ("data", "metrics", "models", "plots", "reports")


@pytest.fixture(scope="module")
def stages() -> list:
    """Every stage instance of ``dvc.yaml``, its ``matrix`` entries expanded."""
    with Repo(str(ROOT)) as repo:
        return list(repo.index.stages)


def test_dvc_lock_records_only_the_stages_of_dvc_yaml(stages):
    locked = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    assert sorted(set(locked) - {stage.addressing for stage in stages}) == []


def test_every_committed_file_in_an_output_folder_is_a_stage_s_output(stages):
    outputs = [PurePosixPath(str(out.def_path)) for stage in stages for out in stage.outs]
    listed = subprocess.run(
        ["git", "ls-files", *OUTPUT_FOLDERS], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    orphans = [
        name
        for name in listed
        if not name.endswith(".gitignore")
        and not any(
            PurePosixPath(name) == out or out in PurePosixPath(name).parents for out in outputs
        )
    ]
    assert orphans == [], "committed results that no stage of dvc.yaml writes"


def glance_rows(readme: str) -> dict[str, list[str]]:
    """The cells of each row of the README's "Results at a glance" table, by its first word."""
    section = readme.split("## Results at a glance", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        name = RUN_NAME.match(cells[0])
        if name:
            rows[name.group(0)] = cells
    return rows


def interval(stats: dict) -> str:
    return f"{stats['mean']:.4f} ± {stats['half_width']:.4f}"


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_run_s_row_in_the_readme_is_the_committed_aggregate(readme):
    rows = glance_rows(readme)
    runs = sorted(p.stem for p in AGGREGATE.glob("*.json"))
    assert runs, "no committed aggregate"
    for run in runs:
        assert run in rows, f"{run}: no row in the README's Results at a glance"
        aggregate = read_json(AGGREGATE / f"{run}.json")
        cells = " | ".join(rows[run][1:])
        for metric in ("test_accuracy", "privatetest_accuracy"):
            assert interval(aggregate[metric]) in cells, (run, metric, cells)


def test_the_readme_s_headline_is_the_shipped_model_s_committed_score(readme):
    export = read_json(EXPORT)
    private = export["privatetest"]
    shipped = glance_rows(readme)["shipped"]
    numbers = (f"{private['accuracy']:.4f}", f"{private['low']:.4f}", f"{private['high']:.4f}")
    intro = readme.split("## ", 1)[0]
    for text in (" ".join(shipped), intro):
        for number in numbers:
            assert number in text, (number, text[:200])
    assert f"{export['fer_privatetest']['accuracy']:.4f}" in intro
    gain = export["minus_fer"]
    assert f"+{100 * gain['difference']:.1f} points" in intro
    assert f"+{100 * gain['low']:.1f} to +{100 * gain['high']:.1f}" in intro
