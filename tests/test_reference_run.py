"""`ferstudy reference-run`: the study in pieces that each land in one commit; a second clone
without the cache skips every landed piece and finishes from the git-tracked results alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import synthetic_images, write_zip
from dvc_project import make_project, sh, stages_run

from ferstudy.core.machine import cpu_kind
from ferstudy.core.params import load_params
from ferstudy.tools import reference_run as R
from ferstudy.tools.accounting import FLOORED

pytestmark = pytest.mark.dvc

RUNS = ["onet-random", "onet-pretrained"]
#: Handmade floors of this machine, so that no bench runs here (``ferstudy bench``: minutes).
FLOORS = {
    "machine": {"kind": cpu_kind(), "cores": 2},
    "floors": {
        "backbones": {
            "onet": {
                "features": {"forward_images_per_second": 1000.0},
                "tail": {"floor_ms": {"fp32": 1.0}},
            }
        }
    },
}

#: Time over floor of every stage, for the forecasts worked by hand.
RATIOS = dict.fromkeys(FLOORED, 2.0)


def test_the_pieces_of_the_study(tmp_path):
    from conftest import params_of

    committed = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    keep = ("heads", "finetune", "export")
    params = params_of({"runs": RUNS, "seeds": [42, 43], **{k: committed[k] for k in keep}})
    got = {p.name: p.stages for p in R.pieces(params)}
    assert list(got) == [
        "onet-random-42",
        "onet-random-43",
        "onet-pretrained",
        "onet-pretrained-finetune-42",
        "onet-pretrained-finetune-43",
        "export",
        "report",
    ]
    assert got["onet-random-43"] == (
        "pretrained_features@onet-random",
        "features@onet-random-43",
        "train@onet-random-43",
        "evaluate@onet-random-43",
    )
    # a pretrained run's seeds share its features: they land together, heads with them
    assert got["onet-pretrained"][0] == "pretrained_features@onet-pretrained"
    assert "heads@onet-pretrained-43" in got["onet-pretrained"]
    assert got["export"] == ("outside", "export@onet-pretrained")
    assert R.parse_budget("140m") == 8400 and R.parse_budget("2h") == 7200
    assert R.parse_budget("90") == 90


def test_each_stages_floor_before_it_ran(tmp_path, monkeypatch):
    """Forecasts come from the split's git-tracked counts and this machine's floors, worked by
    hand."""
    from conftest import params_of

    from ferstudy.core import paths

    monkeypatch.chdir(tmp_path)
    paths.SPLIT_SUMMARY.parent.mkdir()
    totals = {"train": 70, "val": 10, "test": 20}
    paths.SPLIT_SUMMARY.write_text(json.dumps({k: {"total": n} for k, n in totals.items()}))
    params = params_of({"runs": RUNS, "epochs": 2, "batch_size": 64, "bn_calibration_images": 24})
    floors = {
        "backbones": {
            "onet": {
                "features": {"forward_images_per_second": 10.0},
                "tail": {"floor_ms": {"fp32": 100.0}},
            }
        }
    }
    floor = {stage: R.stage_floor(stage, params, floors) for stage in R.pieces(params)[0].stages}
    assert floor == {
        "pretrained_features@onet-random": 0.0,  # a note
        "features@onet-random-42": 12.4,  # (100 images + 24 calibration) / 10 img/s
        "train@onet-random-42": 0.4,  # 2 epochs x 2 steps x 100 ms
        "evaluate@onet-random-42": None,  # no floor measured
    }
    assert R.stage_floor("pretrained_features@onet-pretrained", params, floors) == 10.0
    assert R.stage_floor("features@onet-pretrained-42", params, floors) == 0.0  # linked
    assert R.stage_floor("features@dlib-pretrained-42", params, floors) is None
    piece = R.pieces(params)[0]
    assert R.piece_forecast(piece, params, floors, RATIOS) == pytest.approx(2 * 12.8 + 4 * 30)

    # a seed's feature health that found BatchNormalization keeps the calibration; one that
    # found none (VGG-Face) drops it from every seed's forecast
    health = paths.health_file("onet-random/seed44")
    health.parent.mkdir(parents=True)
    health.write_text(json.dumps({"frozen_batchnorm_layers": 3}))
    assert R.stage_floor("features@onet-random-42", params, floors) == 12.4
    health.write_text(json.dumps({"frozen_batchnorm_layers": 0}))
    assert R.stage_floor("features@onet-random-42", params, floors) == 10.0


def test_time_over_floor_per_stage_from_this_kind_of_machine(tmp_path, monkeypatch):
    """Each stage's ratio comes from its own timings on this kind of machine since its floors
    were measured; a stage not timed yet gets the bench's step over floor where the bench
    timed its step (fine-tuning), else the ratio over all, and none below 1."""
    monkeypatch.chdir(tmp_path)
    kind = "Some CPU, 2 cores"
    assert R.measured_ratios(kind) == dict.fromkeys(FLOORED, R.DEFAULT_RATIO)
    bench = {"finetune": {"onet-pretrained": {"floor_ms": {"fp32": 40.0}, "step_ms": 160.0}}}
    assert R.measured_ratios(kind, bench) == {
        **dict.fromkeys(FLOORED, R.DEFAULT_RATIO),
        "finetune": 4.0,
    }
    floors = R.floors_file(kind)
    floors.parent.mkdir(parents=True)
    floors.write_text(json.dumps({"measured": "2026-01-02T00:00:00+00:00"}))
    after, before = "2026-01-03T00:00:00+00:00", "2026-01-01T00:00:00+00:00"

    def row(stage: str, seconds: float, floor: float | None, machine=kind, finished=after):
        return {"stage": stage, "machine": machine, "seconds": seconds, "floor_seconds": floor,
                "finished": finished}  # fmt: skip

    rows = [
        row("features", 110, 100),
        row("train", 250, 100),
        row("train", 50, 100),
        row("train", 900, 100, finished=before),  # timed under the code before the bench
        row("features", 900, 100, machine="Other CPU, 2 cores"),
        row("finetune", 50, 100),  # faster than its floor: 1
        row("evaluate", 9, None),  # no floor
    ]
    R.ACCOUNT_FILE.write_text(json.dumps({"stages": rows}))
    expected = {"features": 1.1, "train": 1.5, "finetune": 1.0, "pretrained_features": 460 / 400}
    assert R.measured_ratios(kind) == pytest.approx(expected)
    assert R.measured_ratios(kind, bench) == pytest.approx(expected)  # timed here: the timings
    R.ACCOUNT_FILE.write_text(json.dumps({"stages": rows[:-2]}))
    assert R.measured_ratios(kind, bench)["finetune"] == 4.0  # not timed here: the bench's


def test_work_done_here_comes_off_the_forecast(tmp_path, monkeypatch):
    """A killed extraction's rows and a training's last checkpoint, each written by the
    stage's own writer, shorten the forecast of their piece."""
    import numpy as np
    import tensorflow as tf
    from conftest import params_of

    from ferstudy.core import paths
    from ferstudy.data.feature_cache import extract_to_file
    from ferstudy.models import training

    monkeypatch.chdir(tmp_path)
    paths.SPLIT_SUMMARY.parent.mkdir()
    totals = {"train": 70, "val": 10, "test": 20}
    paths.SPLIT_SUMMARY.write_text(json.dumps({k: {"total": n} for k, n in totals.items()}))
    params = params_of({"runs": RUNS, "epochs": 2, "batch_size": 64, "bn_calibration_images": 24})
    floors = {"backbones": {"onet": FLOORS["floors"]["backbones"]["onet"]}}
    piece = R.pieces(params)[0]
    before = R.piece_forecast(piece, params, floors, RATIOS)
    assert [R.done_share(stage, params) for stage in piece.stages] == [0, 0, 0, 0]

    partial = paths.partial_features_dir("onet-random/seed42")
    partial.mkdir(parents=True)
    images = np.zeros((31, 2, 2), np.uint8)
    flat = tf.function(lambda batch: tf.reshape(tf.cast(batch, tf.float32), (-1, 4)))
    extract_to_file(flat, images, partial / "train.npy", 8, "train", fingerprint="fp")
    assert R.done_share("features@onet-random-42", params) == 31 / 124  # of 100 + 24 images

    tail = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(7)])
    optimizer = tf.keras.optimizers.Adam()
    optimizer.build(tail.trainable_variables)
    (tmp_path / "live").mkdir()
    training.Checkpoint("onet-random/seed42", "fp", tail, optimizer, tmp_path / "live", {}).save(1)
    assert R.done_share("train@onet-random-42", params) == 0.5  # epoch 1 of 2

    # floors: 124 images at 1000 img/s, 2 epochs x 2 steps x 1 ms
    left = 2.0 * (0.124 * (1 - 31 / 124) + 0.004 * 0.5)
    assert R.piece_forecast(piece, params, floors, RATIOS) == pytest.approx(left + 4 * 30)
    assert before - R.piece_forecast(piece, params, floors, RATIOS) == pytest.approx(
        2.0 * (0.031 + 0.002)
    )
    stages = ["train@onet-random-42", "evaluate@onet-random-42"]  # the features landed
    assert R.piece_forecast(piece, params, floors, RATIOS, stages) == pytest.approx(0.004 + 60)


#: A stage that records its SIGINT in ``slow.txt`` and exits; else it sleeps 120 s.
RECORDS_SIGINT = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *a: (open('slow.txt', 'w').write('stopped'), "
    "sys.exit(130)))\n"
    "time.sleep(120)\n"
)


def stop_project(folder: Path, monkeypatch, stages: dict, files: dict[str, str]) -> None:
    """A bare git + DVC project of ``stages`` and ``files`` in ``folder``, made the working
    directory: for the stop tests, which call ``_repro`` directly."""
    sh("git init -q && dvc init -q && dvc config core.analytics false", folder, {**os.environ})
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    monkeypatch.chdir(folder)


def test_a_piece_past_its_deadline_is_stopped_and_keeps_its_finished_stages(tmp_path, monkeypatch):
    """The stage under DVC gets SIGINT at the deadline (DVC itself does not: it would drop a
    stage it has not yet written to ``dvc.lock``); the stage before it stays there."""
    import time

    quick = "open('quick.txt', 'w').write('done')"
    stages = {
        "quick": {"cmd": f'python -c "{quick}"', "outs": ["quick.txt"]},
        "slow": {"cmd": "python slow.py", "deps": ["quick.txt"], "outs": ["never.txt"]},
    }
    stop_project(tmp_path, monkeypatch, stages, {"slow.py": RECORDS_SIGINT})
    begun = time.monotonic()
    assert R._repro(R.Piece("test", ("quick", "slow")), deadline=begun + 20) is False
    assert time.monotonic() - begun < 60
    assert (tmp_path / "slow.txt").read_text() == "stopped"  # the stage itself got SIGINT
    locked = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert list(locked) == ["quick"]


def test_a_stage_that_execs_after_the_signal_is_stopped_too(tmp_path, monkeypatch):
    """A SIGINT that lands before the stage's program runs under the same pid (between fork
    and exec, or in a shell that traps it and then execs) does not let the stage run on."""
    import time

    stages = {"slow": {"cmd": "sh stage.sh", "outs": ["never.txt"]}}
    files = {
        "slow.py": RECORDS_SIGINT,
        "stage.sh": "trap : INT\nsleep 60\nexec python slow.py\n",
    }
    stop_project(tmp_path, monkeypatch, stages, files)
    begun = time.monotonic()
    assert R._repro(R.Piece("test", ("slow",)), deadline=begun + 10) is False
    assert time.monotonic() - begun < 60
    assert (tmp_path / "slow.txt").read_text() == "stopped"


def test_a_run_started_with_sigint_ignored_still_stops_its_stage(tmp_path, monkeypatch):
    """A script's background job (``nohup ferstudy reference-run ... &``) starts with SIGINT
    ignored; DVC and the stage would inherit that, and a Python stage would not stop."""
    import signal
    import time

    stops_on_ctrl_c = (
        "import time\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    open('slow.txt', 'w').write('stopped')\n"
        "    raise SystemExit(130)\n"
    )
    stages = {"slow": {"cmd": "python slow.py", "outs": ["never.txt"]}}
    stop_project(tmp_path, monkeypatch, stages, {"slow.py": stops_on_ctrl_c})
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        begun = time.monotonic()
        assert R._repro(R.Piece("test", ("slow",)), deadline=begun + 10) is False
        assert time.monotonic() - begun < 40
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # this process's, restored
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert (tmp_path / "slow.txt").read_text() == "stopped"


def test_a_landed_piece_is_skipped_by_a_clone_without_the_cache(tmp_path, monkeypatch):
    project, env = make_project(tmp_path, runs=RUNS, seeds=[42])
    floors = project / R.floors_file(cpu_kind())
    floors.parent.mkdir(parents=True)
    floors.write_text(json.dumps(FLOORS))
    sh("git add -A && git commit -qm floors", project, env)

    first = tmp_path / "first"
    sh(f"git clone -q {project} {first}", tmp_path, env)
    pieces = "onet-random-42 onet-pretrained onet-pretrained-finetune-42"
    log = sh(f"ferstudy reference-run {pieces} --budget 2h", first, env)
    assert f"landed: {pieces.replace(' ', ', ')}" in log
    subjects = sh("git log --format=%s", first, env).splitlines()
    for piece in pieces.split():
        assert any(s.startswith(f"reference run: {piece} landed") for s in subjects), subjects
    assert sh("git status --porcelain", first, env).strip() == ""  # each piece committed
    timed = (first / R.TIMINGS).read_text().splitlines()
    assert {json.loads(line)["stage"] for line in timed} >= {"features", "train", "finetune"}

    # --drop-features: a landed piece's feature arrays leave the work tree and the cache,
    # except a file that an output still there holds too; the piece stays landed
    lock = yaml.safe_load((first / "dvc.lock").read_text())["stages"]

    def cached(oid: str) -> Path:
        return first / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]

    def files(stage: str) -> dict[str, str]:
        out = next(o for o in lock[stage]["outs"] if o["path"].startswith("data/features/"))
        manifest = json.loads(cached(out["md5"]).read_text())
        return {entry["relpath"]: entry["md5"] for entry in manifest}

    random, pretrained = files("features@onet-random-42"), files("features@onet-pretrained-42")
    assert random["labels.npz"] == pretrained["labels.npz"]  # one file in two outputs
    monkeypatch.chdir(first)
    params = load_params(Path("params.yaml"))
    assert R.drop_features(list(R.pieces(params)[0].stages)) > 1000  # onet-random-42's
    features = first / "data" / "features"
    assert not (features / "onet-random" / "seed42").exists()
    assert not cached(random["train.npy"]).exists()
    assert cached(pretrained["labels.npz"]).exists()  # onet-pretrained's features hold it
    log = sh("ferstudy reference-run onet-pretrained --drop-features --budget 1m", first, env)
    assert "GB freed" in log and "0 pieces to run" in log, log[-2000:]
    assert {path.name for path in features.rglob("*") if path.is_file()} <= {".gitignore"}
    assert not cached(pretrained["train.npy"]).exists()
    assert cached(lock["acquire"]["outs"][0]["md5"]).exists()  # the dataset stays
    assert "0 pieces to run" in sh(f"ferstudy reference-run {pieces} --dry", first, env)

    second = tmp_path / "second"  # another machine: the commits, and no DVC cache
    sh(f"git clone -q {first} {second}", tmp_path, env)
    assert not (second / ".dvc" / "cache").exists()
    log = sh("ferstudy reference-run --budget 2h", second, env)
    assert "landed: export, report" in log
    ran = set(stages_run(log))
    assert ran <= {"acquire", "split", "outside", "export@onet-pretrained"} | {
        "metrics",
        "aggregate",
        "report",
    }, ran  # nothing of the landed pieces: the report reads their git-tracked results
    assert "Running stage" not in sh("dvc repro --allow-missing --dry", second, env)
    summary = json.loads((second / "metrics" / "summary.json").read_text())
    assert summary  # the cross-run stages ran from the git-tracked results

    # a changed dep sends the landed pieces of that backbone back to the list
    port = second / "src" / "ferstudy" / "models" / "onet.py"
    port.write_text(port.read_text() + "\n# an edit\n")
    dry = sh("ferstudy reference-run --dry", second, env)
    assert "onet-random-42:" in dry and "onet-pretrained:" in dry
    assert "uncommitted changes to the pipeline's inputs" in sh(
        "ferstudy reference-run 2>&1 || true", second, env
    )
    port.write_text(port.read_text().removesuffix("\n# an edit\n"))

    # a git-tracked result gone: its piece has not landed, whatever --allow-missing says
    result = second / "metrics" / "eval" / "onet-random" / "seed42.json"
    result.unlink()
    dry = sh("ferstudy reference-run --dry", second, env)
    assert "onet-random-42:" in dry and "onet-pretrained:" not in dry, dry
    # ... and its stages whose outputs this clone lacks run again: all of them, forecast too
    monkeypatch.chdir(second)
    pending = R.pending_stages(R.pieces(load_params(Path("params.yaml"))))
    assert pending["onet-pretrained"] == []
    assert pending["onet-random-42"] == [
        "pretrained_features@onet-random",
        "features@onet-random-42",
        "train@onet-random-42",
        "evaluate@onet-random-42",
    ]
    sh("git checkout -- metrics", second, env)

    # on a new machine, another dataset cannot stand in for the one the landed pieces used
    third = tmp_path / "third"
    sh(f"git clone -q {second} {third}", tmp_path, env)
    other = write_zip(tmp_path / "other.zip", *synthetic_images(per_class=12, seed=9))
    refused = sh("ferstudy reference-run 2>&1 || true", third, {**env, "FER2013_PATH": str(other)})
    assert "differ from the committed hashes" in refused, refused[-2000:]


def test_a_piece_longer_than_the_budget_goes_on_at_the_next_start(tmp_path, monkeypatch):
    """``--partial``: a piece that cannot fit is started, stopped at the end of the budget,
    and finished by the next start on the same machine, which records what was done."""
    project, env = make_project(tmp_path, runs=["onet-random"], seeds=[42], epochs=300)
    settings = yaml.safe_load((project / "params.yaml").read_text())
    for section in ("finetune", "export", "heads"):  # one piece of a study run
        settings[section]["runs"] = []
    (project / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    slow = json.loads(json.dumps(FLOORS))
    slow["floors"]["backbones"]["onet"]["features"]["forward_images_per_second"] = 0.01
    floors = project / R.floors_file(cpu_kind())
    floors.parent.mkdir(parents=True)
    floors.write_text(json.dumps(slow))  # a forecast of hours: no budget here fits it
    sh("git add -A && git commit -qm floors && dvc repro acquire split", project, env)
    monkeypatch.chdir(project)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    params = load_params(Path("params.yaml"))

    def start(budget: float, partial: bool) -> list[str]:
        return R.reference_run(
            params,
            budget,
            bench=lambda path: pytest.fail("no bench: the floors are there"),
            account=lambda: None,
            only=["onet-random-42"],
            partial=partial,
            partial_minimum=0,
        )

    assert start(3600, partial=False) == []  # does not fit, and is not started
    assert not R.STEPS_LOG.exists()
    assert start(45, partial=True) == []  # 300 epochs: stopped before their end
    events = [line.split()[1:] for line in R.STEPS_LOG.read_text().splitlines()]
    assert events == [["start", "onet-random-42"], ["stop", "onet-random-42"]]
    subject = sh("git log -1 --format=%s", project, env)
    assert subject.startswith("reference run: onet-random-42 stopped part-way"), subject
    assert sh("git status --porcelain", project, env).strip() == ""  # the stop is committed
    stopped = R.pending_stages(R.pieces(params))["onet-random-42"]
    unlanded = tuple(R.git_tracked_outputs(stopped))
    assert any(name.startswith("train@") for name in stopped) and unlanded, stopped
    committed = sh("git show --name-only --format= HEAD", project, env).split()
    assert not [path for path in committed if path.startswith(unlanded)], committed
    assert start(3600, partial=True) == ["onet-random-42"]
    events = [line.split()[1:] for line in R.STEPS_LOG.read_text().splitlines()]
    assert events[2:] == [["start", "onet-random-42"], ["end", "onet-random-42"]]
    subject = sh("git log -1 --format=%s", project, env)
    assert subject.startswith("reference run: onet-random-42 landed"), subject
    assert sh("git status --porcelain", project, env).strip() == ""
    resumed = [json.loads(line) for line in R.RESUMED.read_text().splitlines()]
    floored = ["pretrained_features", "features", "train"]
    assert [r["stage"] for r in resumed[:3]] == floored
    assert [r.get("done", r.get("epochs")) for r in resumed[:3]] == [0, 0, 0]
    again = [r["stage"] for r in resumed[3:]]
    assert again and again == floored[-len(again) :]  # what the stop left to run
    assert R.pending_stages(R.pieces(params))["onet-random-42"] == []
