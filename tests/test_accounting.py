"""`ferstudy account`: each stage's seconds beside its floor, worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import params_of

from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.tools import accounting

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {
    "machine": {"cpu": "test CPU", "kind": "test CPU, 2 cores", "cores": 2},
    "floors": {
        "backbones": {
            "onet": {
                "features": {"forward_images_per_second": 50.0},
                "tail": {"floor_ms": {"fp32": 10.0, "bf16": 5.0}},
            }
        },
        "finetune": {"onet-pretrained": {"floor_ms": {"fp32": 20.0, "bf16": 8.0}}},
    },
}
COUNTS = {"train": 100, "val": 20, "test": 30}


def _timing(
    stage: str,
    run: str | None,
    seed: int | None,
    seconds: float,
    machine: str = "test CPU, 2 cores",
    reused: bool = False,
) -> str:
    record = {"stage": stage, "run": run, "seed": seed, "seconds": seconds, "cpu_seconds": seconds}
    return json.dumps({**record, "machine": machine, "cores": 2, "reused": reused})


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths.DATASET_FILE.parent.mkdir()  # git-tracked records only: no features here
    split = {name: {"total": count} for name, count in COUNTS.items()}
    paths.SPLIT_SUMMARY.write_text(json.dumps(split))
    summary = {"per_usage": {"Training": 130, "PublicTest": 10, "PrivateTest": 10}}
    paths.DATASET_SUMMARY.write_text(json.dumps(summary))
    timing = paths.training_time_file(paths.run_id("onet-pretrained-finetune", 42))
    timing.parent.mkdir(parents=True)
    timing.write_text(json.dumps({"epochs_run": 3, "train_seconds": 0.9}))
    Path("bench").mkdir()
    Path("bench/floors.json").write_text(json.dumps(FLOORS))
    Path(".ferstudy").mkdir()
    lines = [
        _timing("acquire", None, None, 7.0),
        _timing("features", "onet-pretrained", 42, 6.0),  # floor 150 / 50 = 3 s
        _timing("features", "onet-pretrained", 43, 1.0, reused=True),  # seed 42's: floor 0
        _timing("features", "onet-random", 42, 4.0),  # stale: the rerun below replaces it
        _timing("train", "onet-pretrained", 42, 0.8),  # 20 epochs x 2 steps x 10 ms = 0.4 s
        _timing("features", "onet-random", 42, 8.56),  # (150 + 64) / 50 = 4.28 s
        _timing("finetune", "onet-pretrained", 42, 0.9),  # 3 epochs x 3 steps x 20 ms = 0.18 s
        _timing("train", "onet-random", 42, 5.0, machine="another CPU"),  # no floor of its own
        json.dumps({"stage": "train", "run": "onet-pretrained", "seed": 43, "seconds": 2.0}),
    ]  # the last: an older line, its machine unknown: no floor
    Path(".ferstudy/timings.jsonl").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings = {"epochs": 20, "batch_size": 64, "bn_calibration_images": 64}
    Path("params.yaml").write_text(yaml.safe_dump({**params, **settings}))
    Path(".ferstudy/reference_run.log").write_text(
        "2026-01-01T00:00:00Z start evaluate@onet-pretrained-42\n"
        "2026-01-01T00:00:20Z end evaluate@onet-pretrained-42\n"
        "2026-01-01T01:00:00Z start evaluate@onet-random-42\n"  # killed: no end
        "\n"
        "2026-01-01T02:00:00Z start evaluate@onet-pretrained-42\n"  # run again: up to date
        "2026-01-01T02:00:05Z end evaluate@onet-pretrained-42\n"
    )
    return params_of(settings)


def test_each_stage_beside_its_floor(project):
    result = accounting.run(
        project,
        Path(".ferstudy/timings.jsonl"),
        [Path("bench/floors.json")],
        Path("bench/reference_run.json"),
        Path(".ferstudy/reference_run.log"),
    )
    rows = {(r["stage"], r["run"], r["seed"]): r for r in result["stages"]}
    assert list(rows) == [
        ("acquire", None, None),
        ("features", "onet-pretrained", 42),
        ("features", "onet-pretrained", 43),
        ("train", "onet-pretrained", 42),
        ("features", "onet-random", 42),
        ("finetune", "onet-pretrained", 42),
        ("train", "onet-random", 42),
        ("train", "onet-pretrained", 43),
    ]
    assert rows[("train", "onet-random", 42)]["floor_seconds"] is None
    assert rows[("train", "onet-pretrained", 43)]["floor_seconds"] is None
    assert rows[("acquire", None, None)]["floor_seconds"] is None
    assert rows[("features", "onet-pretrained", 42)]["floor_seconds"] == 3.0
    assert rows[("features", "onet-pretrained", 42)]["floor_share"] == 0.5
    assert rows[("features", "onet-pretrained", 43)]["floor_seconds"] == 0.0
    assert rows[("train", "onet-pretrained", 42)]["floor_seconds"] == 0.4
    assert rows[("features", "onet-random", 42)]["floor_seconds"] == 4.3  # 4.28, rounded
    assert rows[("features", "onet-random", 42)]["cpu_share"] == 0.5  # 8.56 CPU s on 2 cores
    assert rows[("finetune", "onet-pretrained", 42)]["floor_seconds"] == 0.2  # 0.18
    assert rows[("finetune", "onet-pretrained", 42)]["floor_share"] == 0.2
    assert result["floor_seconds"] == 7.9  # 3 + 0 + 0.4 + 4.28 + 0.18, rounded
    assert result["floored_seconds"] == 17.3 and result["unfloored_seconds"] == 14.0
    assert result["wall_seconds"] == 25.0  # the finished steps, each time they ran
    assert json.loads(Path("bench/reference_run.json").read_text())["floor_seconds"] == 7.9


def test_a_stage_gets_the_floors_of_the_machine_it_ran_on(project):
    """A run that went on over several kinds of machine: each stage is floored by the bench
    of its own machine, and a stage from a machine without a bench gets none."""
    other = {
        "machine": {"cpu": "another CPU", "kind": "another CPU", "cores": 2},
        "floors": {"backbones": {"onet": {"tail": {"floor_ms": {"fp32": 20.0}}}}},
    }
    Path("bench/other.json").write_text(json.dumps(other))
    timings = Path(".ferstudy/timings.jsonl")
    floors = [Path("bench/floors.json"), Path("bench/other.json")]
    result = accounting.run(project, timings, floors, None, None)
    rows = {(r["stage"], r["run"], r["seed"]): r for r in result["stages"]}
    assert rows[("train", "onet-random", 42)]["floor_seconds"] == 0.8  # 40 steps x 20 ms
    assert rows[("train", "onet-pretrained", 42)]["floor_seconds"] == 0.4  # the first bench's
    assert rows[("train", "onet-pretrained", 43)]["floor_seconds"] is None
    assert [m["kind"] for m in result["machines"]] == ["test CPU, 2 cores", "another CPU"]


ACCOUNT = [
    "account",
    "--timings=.ferstudy/timings.jsonl",
    "--floors=bench/floors.json",
    "--log=.ferstudy/reference_run.log",
]


def test_the_command_prints_the_table(project, capsys):
    assert main(ACCOUNT) == 0
    out = capsys.readouterr().out
    assert "| features | onet-random | 42 | 8.56 | 4.3 | 0.5 | 0.5 |" in out
    assert "17.3 s against 7.9 s of floors (2.19x)" in out


def test_a_bad_line_is_named(project, capsys):
    Path(".ferstudy/timings.jsonl").write_text("{not json\n")
    assert main(ACCOUNT) == 2
    assert "timings.jsonl:1: not a JSON line" in capsys.readouterr().err


def test_a_resumed_stage_is_floored_by_the_work_left(project):
    """The share done before a resume comes off the floor (the last record counts); a step
    stopped at the end of a budget is wall time spent."""
    resumed = Path("bench/resumed.jsonl")
    records = [
        {"stage": "features", "run": "onet-random", "seed": 42, "done": 0.5},  # replaced below
        {"stage": "features", "run": "onet-random", "seed": 42, "done": 0.75},
        {"stage": "train", "run": "onet-pretrained", "seed": 42, "epochs": 0},
        {"stage": "finetune", "run": "onet-pretrained", "seed": 42, "epochs": 2},
    ]
    resumed.write_text("".join(json.dumps(r) + "\n" for r in records))
    log = Path(".ferstudy/reference_run.log")
    log.write_text(
        log.read_text()
        + "2026-01-01T03:00:00Z start onet-random-42\n"
        + "2026-01-01T03:00:30Z stop onet-random-42\n"
    )
    timings = Path(".ferstudy/timings.jsonl")
    result = accounting.run(project, timings, [Path("bench/floors.json")], None, log, resumed)
    rows = {(r["stage"], r["run"], r["seed"]): r for r in result["stages"]}
    assert rows[("features", "onet-random", 42)]["floor_seconds"] == 1.1  # 4.28 x 0.25
    assert rows[("features", "onet-random", 42)]["resumed_after"] == {"done": 0.75}
    assert rows[("train", "onet-pretrained", 42)]["floor_seconds"] == 0.4
    # it stopped early after epoch 3: 1 epoch x 3 steps x 20 ms after the 2 checkpointed
    assert rows[("finetune", "onet-pretrained", 42)]["floor_seconds"] == 0.1  # 0.06 (0.18)
    assert "resumed_after" not in rows[("train", "onet-pretrained", 42)]
    assert result["wall_seconds"] == 55.0  # 25 s finished, 30 s stopped
    assert result["steps"][-1] == {
        "step": "onet-random-42",
        "start": "2026-01-01T03:00:00+00:00",
        "seconds": 30.0,
        "stopped": True,
    }
