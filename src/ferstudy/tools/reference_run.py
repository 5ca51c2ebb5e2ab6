"""``ferstudy reference-run``: the whole study on all of FER2013, in pieces that each land.

A *piece* is the DVC stages that must finish on one machine, together, for their results to
stand alone in git:

- a random run's seed: ``pretrained_features@<run>`` (a note), ``features``, ``train`` and
  ``evaluate@<run>-<seed>`` (and ``flipped``/``heads`` when the run is in ``heads.runs``);
- a pretrained run, all its seeds at once: its features are computed once and linked by every
  seed, so a seed landed on another machine would send the others out of date;
- a fine-tuned seed: ``finetune@<run>-<seed>`` and ``evaluate_finetune@<run>-<seed>`` (the
  model is git-tracked, so the export may come later);
- the export (with ``outside``, the `fer` baseline it compares against), then the cross-run
  stages (``metrics``, ``aggregate``, ``report``).

Each piece ends in one commit of ``dvc.lock`` and the git-tracked outputs, so a stopped
machine loses at most the piece in progress. A later start on a new machine with an empty
cache rebuilds the dataset and its split (the same hashes, or it stops), skips every landed
piece (``dvc repro --allow-missing`` would run none of its stages) and goes on. A piece
starts only when its forecast fits in what is left of ``--budget``: its stages' floors on this
machine (``ferstudy bench``, run first on a new kind of machine) times the ratio of time to
floor of the same stages already timed on this kind of machine (of all stages before the first
of its kind, ``DEFAULT_RATIO`` before any).

A piece longer than any budget (VGG-Face's random seeds on 2 AVX2 cores) goes on across
starts on the same machine with ``--partial``: once nothing else fits, the first pending piece
starts anyway and is stopped when the budget ends, and the stop is committed; its finished
stages, a killed extraction's rows and a training's last checkpoint stay on this machine, the
next start forecasts only the work left and goes on from there (a new machine starts the
piece over).

Every step's start and end (or stop) go to ``bench/reference_run/steps.log``, every stage's
time to ``bench/reference_run/timings.jsonl`` and what was done of a stage before its last
start to ``bench/reference_run/resumed.jsonl``, all committed with their piece, so the
accounting (``ferstudy account``) covers the whole run across machines.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import read_json, write_json
from ferstudy.core.machine import cpu_kind
from ferstudy.core.params import Params
from ferstudy.tools import accounting
from ferstudy.tools.accounting import (
    FLOORED,
    calibration_images,
    finetune_floor,
    subset_counts,
)

#: Where the run keeps its committed record: floors per machine, stage timings, step log.
RECORD_DIR = Path("bench/reference_run")
STEPS_LOG = RECORD_DIR / "steps.log"
TIMINGS = RECORD_DIR / "timings.jsonl"
ACCOUNT_FILE = Path("bench/reference_run.json")
RESUMED = RECORD_DIR / "resumed.jsonl"
#: Where the training stages checkpoint (``ferstudy.models.training.CHECKPOINTS``, which loads
#: TensorFlow; a test checks that they agree).
CHECKPOINTS = Path(".ferstudy/checkpoints")
#: The stages that make the dataset and its split, rebuilt first on every machine.
DATA_STAGES = ("acquire", "split")
#: Time over floor assumed before any piece has finished here (earlier runs: about 2).
DEFAULT_RATIO = 2.0
#: Seconds a stage costs beyond its floor's share: process start, TensorFlow's import, DVC.
STAGE_OVERHEAD = 30.0
#: ``--partial`` starts a piece that cannot finish only with at least this much budget left.
PARTIAL_MINIMUM = 600.0
#: Seconds between checkpoints of a piece that will be stopped (``FERSTUDY_CHECKPOINT_SECONDS``
#: unless set): a stopped extraction loses at most this much (a training checkpoints at the
#: end of an epoch, and at most 5 % of its time).
PARTIAL_CHECKPOINT_SECONDS = "60"
#: Seconds a stopped piece gets to end on SIGINT (past its budget) before it is killed.
STOP_GRACE = 120.0


@dataclass(frozen=True)
class Piece:
    """Stages that land together, in one commit. ``from_git``: the piece reads only
    git-tracked results of earlier pieces, whose cached outputs a new machine lacks, so
    ``dvc repro --allow-missing`` runs it; the others rebuild whatever upstream output is
    missing (a random run's note)."""

    name: str
    stages: tuple[str, ...]
    from_git: bool = False


def pieces(params: Params) -> list[Piece]:
    """Every piece of the study under ``params``, in the order they run."""
    out = []
    for run in params.runs:
        _, init = paths.parse_run_name(run)
        chain = ("features", "train", "evaluate")
        if run in params.heads.runs:
            chain += ("flipped", "heads")
        seeds = [[s] for s in params.seeds] if init == "random" else [params.seeds]
        for group in seeds:
            stages = [f"pretrained_features@{run}"]
            stages += [f"{stage}@{run}-{seed}" for seed in group for stage in chain]
            name = f"{run}-{group[0]}" if init == "random" else run
            out.append(Piece(name, tuple(stages)))
    for run in params.finetune.runs:
        for seed in params.seeds:
            stages = (f"finetune@{run}-{seed}", f"evaluate_finetune@{run}-{seed}")
            out.append(Piece(f"{paths.finetune_run(run)}-{seed}", stages))
    exports = tuple(f"export@{run}" for run in params.export.runs)
    out.append(Piece("export", ("outside", *exports), from_git=True))
    out.append(Piece("report", ("metrics", "aggregate", "report"), from_git=True))
    return out


def parse_budget(text: str) -> float:
    """``140m``, ``2h``, ``90s`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hms]?)\s*", text)
    if not match:
        raise FerError(f"budget '{text}': give a number of seconds, or e.g. 140m or 2h")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]


# --------------------------------------------------------------------------- forecasts


def stage_floor(stage: str, params: Params, floors: dict[str, Any]) -> float | None:
    """Seconds of a stage's floor on the machine ``floors`` was measured on, before it ran;
    None where the bench measured none, or the split's summary is not there to count images."""
    name = stage.partition("@")[0]
    if not paths.SPLIT_SUMMARY.is_file() or name not in FLOORED:
        return None
    _, run, seed = _stage_key(stage)
    if name == "finetune":
        if run not in floors.get("finetune", {}):
            return None
        return finetune_floor(run, params.finetune.epochs, params, floors)  # no early stop
    linked = name == "features" and paths.parse_run_name(run)[1] == "pretrained"
    record = {"stage": name, "run": run, "seed": seed, "reused": linked}
    return accounting.stage_floor(record, floors, params)


def _stage_key(stage: str) -> tuple[str, str, int | None]:
    """``features@<run>-<seed>`` -> (stage, run, seed); ``pretrained_features@<run>`` -> no
    seed."""
    name, _, key = stage.partition("@")
    if name == "pretrained_features":
        return name, key, None
    run, _, seed = key.rpartition("-")
    return name, run, int(seed)


def _recorded(path: Path, key: str) -> int:
    """An integer a progress record holds (0 where it is missing or unreadable)."""
    with contextlib.suppress(FerError, OSError):
        value = read_json(path).get(key)
        return value if isinstance(value, int) else 0
    return 0


def _progress_rows(folder: Path) -> int:
    """Rows of a killed extraction's partial files that their progress records vouch for."""
    return sum(_recorded(record, "rows") for record in folder.glob("*.npy.progress.json"))


def _checkpoint_epoch(run_id: str) -> int:
    """The last checkpointed epoch of a training on this machine (0 without one)."""
    folder = CHECKPOINTS / run_id
    suffixes = ("", ".tmp", ".old")  # a kill between a checkpoint's renames leaves the others
    return max(
        _recorded(folder.with_name(folder.name + s) / "epoch.json", "epoch") for s in suffixes
    )


def done_share(stage: str, params: Params) -> float:
    """Share of a stage's floor already done by its files on this machine: a killed
    extraction's rows, a training's last checkpointed epoch; 0 for any other stage. The
    files' fingerprints are not checked (that takes TensorFlow): a stage whose settings
    changed since starts over, and its share read high."""
    if stage.partition("@")[0] not in FLOORED:
        return 0.0
    name, run, seed = _stage_key(stage)
    if name in ("features", "pretrained_features"):
        part = "pretrained" if seed is None else f"seed{seed}"
        rows = _progress_rows(paths.partial_features_dir(f"{run}/{part}"))
        if not rows or not paths.SPLIT_SUMMARY.is_file():
            return 0.0
        backbone, _ = paths.parse_run_name(run)
        images = sum(subset_counts(params, backbone).values()) + calibration_images(run, params)
        return min(rows / images, 1.0)
    epochs = params.finetune.epochs if name == "finetune" else params.epochs
    return min(done_epochs(stage) / epochs, 1.0)


def done_epochs(stage: str) -> int:
    """Epochs of a ``train`` or ``finetune`` stage checkpointed on this machine."""
    name, run, seed = _stage_key(stage)
    tuned = paths.finetune_run(run) if name == "finetune" else run
    return _checkpoint_epoch(paths.run_id(tuned, seed))


def bench_ratios(floors: dict[str, Any]) -> dict[str, float]:
    """Per stage whose whole step the bench timed beside its floor (``finetune``: the
    fine-tuning step with its augmentation), that step over the floor, at least 1."""
    timed = [f for f in floors.get("finetune", {}).values() if f.get("step_ms")]
    if not timed:
        return {}
    step = sum(f["step_ms"] for f in timed) / sum(f["floor_ms"]["fp32"] for f in timed)
    return {"finetune": max(step, 1.0)}


def measured_ratios(kind: str, floors: dict[str, Any] | None = None) -> dict[str, float]:
    """Per stage with a floor (``features``, ``train``, ...): seconds over floor of those timed
    on ``kind`` of machine since its floors were measured (the committed accounting), at
    least 1. A stage not timed there yet gets the bench's step over floor where ``floors``
    holds one (:func:`bench_ratios`), else the ratio over all the stages timed, and every
    stage ``DEFAULT_RATIO`` before any. Stages timed before a new bench of the same kind ran
    under other code."""
    rows = read_json(ACCOUNT_FILE)["stages"] if ACCOUNT_FILE.is_file() else []
    path = floors_file(kind)
    since = (read_json(path).get("measured") if path.is_file() else None) or ""
    timed = [
        r
        for r in rows
        if r.get("machine") == kind
        and r.get("floor_seconds")
        and (r.get("finished") or "") >= since
    ]

    def ratio(of: list[dict[str, Any]]) -> float:
        return max(sum(r["seconds"] for r in of) / sum(r["floor_seconds"] for r in of), 1.0)

    overall = ratio(timed) if timed else DEFAULT_RATIO
    untimed = bench_ratios(floors or {})
    by_stage = {name: [r for r in timed if r["stage"] == name] for name in FLOORED}
    return {name: ratio(of) if of else untimed.get(name, overall) for name, of in by_stage.items()}


def piece_forecast(
    piece: Piece,
    params: Params,
    floors: dict[str, Any],
    ratios: dict[str, float],
    stages: list[str] | None = None,
) -> float:
    """Seconds a piece should take here: the floors of its ``stages`` still to run (default:
    all), less the share of each already done on this machine, each times its stage's ratio
    (:func:`measured_ratios`), plus each stage's fixed overhead."""
    total = 0.0
    for stage in piece.stages if stages is None else stages:
        floor = stage_floor(stage, params, floors) or 0.0
        ratio = ratios.get(stage.partition("@")[0], DEFAULT_RATIO)
        total += floor * (1 - done_share(stage, params)) * ratio + STAGE_OVERHEAD
    return total


# --------------------------------------------------------------------------- DVC and git


def _sh(args: list[str], check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise FerError(f"{' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout + done.stderr


def pending_stages(chosen: list[Piece]) -> dict[str, list[str]]:
    """For each piece, the stages ``dvc repro`` of it would run here: none once landed (no
    stage that ``--allow-missing`` would run, and every git-tracked output, ``cache: false``,
    there: ``--allow-missing`` alone would accept one missing); else those out of date or
    missing their outputs here (a piece other than the export and the report runs without
    ``--allow-missing``).

    One DVC index answers for every piece: ``dvc.lock`` is parsed once, where a
    ``dvc repro --dry`` per piece parses it again for every target.
    """
    from dvc.repo import Repo

    with Repo() as repo, repo.lock:
        graph = repo.index.graph
        by_name = {stage.addressing: stage for stage in repo.index.stages}

        def landed(name: str) -> bool:
            stage = by_name[name]
            if any(not out.use_cache and not out.exists for out in stage.outs):
                return False
            return not stage.changed(allow_missing=True, upstream=list(graph.successors(stage)))

        pending = {}
        for piece in chosen:
            if all(landed(name) for name in piece.stages):
                pending[piece.name] = []
                continue
            pending[piece.name] = [
                name
                for name in piece.stages
                if not landed(name) or (not piece.from_git and by_name[name].changed())
            ]
        return pending


def _stamp(event: str, name: str) -> None:
    STEPS_LOG.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(STEPS_LOG, "a") as fh:
        fh.write(f"{now} {event} {name}\n")


#: What the pipeline writes into git: a piece killed part-way leaves changes only here.
OUTPUTS = ("dvc.lock", "metrics/", "plots/", "reports/", "models/", "data/", "bench/",
           "src/ferstudy/shipped/")  # fmt: skip


def changed_inputs() -> list[str]:
    """Changed or untracked paths of the work tree that no stage writes (code, params)."""
    lines = _sh(["git", "status", "--porcelain", "--untracked-files=all"]).splitlines()
    changed = [line[3:].split(" -> ")[-1] for line in lines if line.strip()]
    return [path for path in changed if not path.startswith(OUTPUTS)]


def git_tracked_outputs(stages: list[str]) -> list[str]:
    """The git-tracked outputs (``cache: false``) of some stages."""
    from dvc.repo import Repo

    with Repo() as repo:
        by_name = {stage.addressing: stage for stage in repo.index.stages}
        return [str(out.def_path) for name in stages for out in by_name[name].outs
                if not out.use_cache]  # fmt: skip


def restore_outputs(outputs: list[str]) -> None:
    """Put git-tracked outputs back as ``HEAD`` has them: a stopped stage's half-written files
    (a training log at its last epoch, a removed result) are not what ``dvc.lock`` records."""
    if not outputs:
        return
    committed = _sh(["git", "ls-tree", "-r", "--name-only", "HEAD", "--", *outputs]).split()
    if committed:
        _sh(["git", "checkout", "HEAD", "--", *committed])
    _sh(["git", "clean", "-fdq", "--", *outputs])


#: Where the feature stages write: the largest outputs, and no later piece reads them.
FEATURE_OUTPUTS = ("data/features/", "data/features_flipped/")


def drop_features(stages: list[str]) -> int:
    """Remove the feature arrays that some landed stages wrote, from the work tree and the
    DVC cache, except files that another output of the pipeline holds too; returns the bytes
    freed. A landed piece needs them no more (``dvc repro --allow-missing`` skips it
    without them), but a plain ``dvc repro`` or ``dvc exp run`` extracts them again."""
    from dvc.repo import Repo

    def objects(out: Any) -> set[str]:
        """The cache objects of an output: itself, and a directory's files where this cache
        holds its manifest."""
        info = out.hash_info
        if not info or not info.value:
            return set()
        found = {info.value}
        if info.isdir:
            with contextlib.suppress(Exception):  # the manifest is not in this cache
                found |= {file_info.value for _, _, file_info in out.get_obj()}
        return found

    with Repo() as repo, repo.lock:
        dropped, kept = [], set()
        for stage in repo.index.stages:
            for out in stage.outs:
                if stage.addressing in stages and str(out.def_path).startswith(FEATURE_OUTPUTS):
                    dropped.append(out)
                elif out.use_cache:
                    kept |= objects(out)
        gone = set().union(*(objects(out) for out in dropped)) - kept
        freed = sum(_remove(Path(repo.cache.local.oid_to_path(oid))) for oid in gone)
        for out in dropped:  # after the cache: a file hardlinked there frees its bytes here
            folder = Path(out.fs_path)
            freed += sum(_remove(path) for path in folder.rglob("*") if not path.is_dir())
            shutil.rmtree(folder, ignore_errors=True)
    return freed


def _remove(path: Path) -> int:
    """Remove a file; returns the bytes freed (none while another hard link to it remains)."""
    with contextlib.suppress(FileNotFoundError):
        stat = path.stat()
        path.unlink()
        return stat.st_size if stat.st_nlink == 1 else 0
    return 0


def commit(message: str) -> None:
    """Commit every change of the work tree: the piece's lock entries and git-tracked outputs
    (the run starts with no change to the pipeline's inputs)."""
    _sh(["git", "add", "-A"])
    if _sh(["git", "status", "--porcelain"]).strip():
        _sh(["git", "commit", "-q", "-m", message])


def _data_outputs(lock_text: str) -> dict[str, str | None]:
    """The hash of every output of the data stages (acquire, split) in a ``dvc.lock`` text."""
    stages = (yaml.safe_load(lock_text or "") or {}).get("stages", {})
    return {
        out["path"]: out.get("md5")
        for name in DATA_STAGES
        for out in stages.get(name, {}).get("outs", [])
    }


def rebuild_data() -> None:
    """The dataset and its split, rebuilt (or checked out from the cache): every output the
    committed ``dvc.lock`` records must come out with the same hash, or the run stops."""
    committed = subprocess.run(["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True)
    before = _data_outputs(committed.stdout if committed.returncode == 0 else "")
    _sh(["dvc", "repro", *DATA_STAGES])
    after = _data_outputs(Path("dvc.lock").read_text())
    differ = [path for path, md5 in before.items() if after.get(path) != md5]
    if differ:
        raise FerError(f"rebuilt, {', '.join(differ)} differ from the committed hashes")
    if _sh(["git", "status", "--porcelain", "dvc.lock"]).strip():
        commit("reference run: the dataset and its split")


def floors_file(kind: str) -> Path:
    """Where the floors of one kind of machine are kept."""
    return RECORD_DIR / f"floors-{re.sub(r'[^a-z0-9]+', '-', kind.lower()).strip('-')}.json"


def all_floors() -> list[Path]:
    """The floors of every kind of machine the run has met."""
    return sorted(RECORD_DIR.glob("floors-*.json"))


def stamp_measured(path: Path) -> None:
    """Record in a floors file when it was measured: the forecast's ratio of time to floor
    counts only the stages timed after it."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(path, {**read_json(path), "measured": now})


def machine_floors(bench: Callable[[Path], None]) -> dict[str, Any]:
    """This machine's floors, measured by ``bench(path)`` (``ferstudy bench``, minutes) and
    committed the first time the run meets this kind of machine."""
    kind = cpu_kind()
    path = floors_file(kind)
    if not path.is_file():
        _stamp("start", "bench")
        bench(path)
        _stamp("end", "bench")
        stamp_measured(path)
        commit(f"reference run: floors of this machine ({kind})")
    return read_json(path)["floors"]


def _append_timings(since: int) -> None:
    """Copy the stage timings logged since line ``since`` into the committed record."""
    from ferstudy.cli import TIMINGS_FILE

    lines = TIMINGS_FILE.read_text().splitlines()[since:] if TIMINGS_FILE.is_file() else []
    if lines:
        with open(TIMINGS, "a") as fh:
            fh.write("\n".join(lines) + "\n")


def _timing_lines() -> int:
    from ferstudy.cli import TIMINGS_FILE

    return len(TIMINGS_FILE.read_text().splitlines()) if TIMINGS_FILE.is_file() else 0


def _record_resumed(piece: Piece, stages: list[str], params: Params) -> None:
    """Log the share of each floored stage's work done before this start, 0 included (the
    accounting takes the last one off the stage's floor: a resumed stage's time covers the
    rest only)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    RESUMED.parent.mkdir(parents=True, exist_ok=True)
    with open(RESUMED, "a") as fh:
        for stage in stages:
            if stage.partition("@")[0] not in FLOORED:
                continue
            name, run, seed = _stage_key(stage)
            line = {"stage": name, "run": run, "seed": seed}
            if name in ("train", "finetune"):  # fine-tuning may stop early: count epochs
                line["epochs"] = done_epochs(stage)
            else:
                line["done"] = round(done_share(stage, params), 4)
            fh.write(json.dumps({**line, "piece": piece.name, "at": now}) + "\n")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a ``dvc repro``: SIGINT to the stage under it (its children), never to DVC itself,
    which would give up a finished stage before writing it to ``dvc.lock``; once to each
    process, checked each second, so that a stage DVC starts meanwhile stops too, until DVC
    exits; SIGKILL to all of them after ``STOP_GRACE``."""
    import psutil

    def under() -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(proc.pid).children(recursive=True)
        return []

    def program(child: psutil.Process) -> tuple[int, tuple[str, ...]]:
        """A process and what it runs: a pid signalled between fork and exec (or a shell that
        traps SIGINT, then execs) runs the stage under the same pid, unsignalled."""
        with contextlib.suppress(psutil.Error):
            return child.pid, tuple(child.cmdline())
        return child.pid, ()

    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    # once per program: a second SIGINT would cut a stage's own clean exit short
    signalled: set[tuple[int, tuple[str, ...]]] = set()
    try:
        end = time.monotonic() + STOP_GRACE
        while proc.poll() is None and time.monotonic() < end:
            for child in under():
                running = program(child)
                if running not in signalled:
                    signalled.add(running)
                    with contextlib.suppress(psutil.Error):
                        child.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        if proc.poll() is None:
            for child in under():
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            proc.wait()
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)


def _repro(piece: Piece, deadline: float | None) -> bool:
    """``dvc repro`` of a piece's stages; True when it finished. With ``deadline`` (a
    ``time.monotonic()``), the stage running then is stopped (:func:`_stop`) and False comes
    back: it keeps its checkpoint, the stages finished stay in ``dvc.lock`` and the cache. A
    SIGTERM stops it the same way, as a Ctrl-C does. DVC and the stage start with SIGINT
    handled even where this process ignores it (a script's background job, ``nohup cmd &``):
    an ignored SIGINT is inherited, and the stage would not stop."""
    missing = ["--allow-missing"] if piece.from_git else []
    env = dict(os.environ)
    if deadline is not None:
        env.setdefault("FERSTUDY_CHECKPOINT_SECONDS", PARTIAL_CHECKPOINT_SECONDS)
    handlers = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        proc = subprocess.Popen(["dvc", "repro", *missing, *piece.stages], env=env)
        try:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return False
        except KeyboardInterrupt:
            _stop(proc)
            raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if code != 0:
        raise FerError(f"piece {piece.name} failed (dvc repro {' '.join(piece.stages)})")
    return True


def reference_run(
    params: Params,
    budget: float,
    bench: Callable[[Path], None],
    account: Callable[[], None],
    dry: bool = False,
    only: list[str] | None = None,
    partial: bool = False,
    partial_minimum: float = PARTIAL_MINIMUM,
    drop_landed_features: bool = False,
) -> list[str]:
    """Run the pending pieces that fit in ``budget`` seconds, committing each as it lands;
    returns the names of the pieces landed. ``bench(path)`` measures this machine's floors,
    ``account()`` writes the accounting. ``dry``: only say what is left and its forecast
    (from this machine's floors if measured, else none). ``only``: the names of the pieces
    to consider (default: all). ``partial``: then start the first piece left that nothing
    blocks, if at least ``partial_minimum`` seconds are left, and stop it when the budget
    ends. ``drop_landed_features``: remove the feature arrays of every landed piece
    (:func:`drop_features`), at the start and after each landing."""
    start = time.monotonic()
    if shutil.which("dvc") is None:
        raise FerError("dvc is not on PATH")
    if not dry:
        if changed_inputs():  # a killed piece's own outputs are carried into its commit
            raise FerError(
                f"uncommitted changes to the pipeline's inputs ({', '.join(changed_inputs())}): "
                "commit or stash them first"
            )
        # directory outputs hardlinked into the cache, not copied (a local setting)
        _sh(["dvc", "config", "--local", "cache.type", "hardlink,copy"])
        rebuild_data()
        floors = machine_floors(bench)
    else:
        path = floors_file(cpu_kind())
        floors = read_json(path)["floors"] if path.is_file() else {}
    chosen = pieces(params)
    unknown = set(only or ()) - {p.name for p in chosen}
    if unknown:
        known = ", ".join(p.name for p in chosen)
        raise FerError(f"no piece named {', '.join(sorted(unknown))} (pieces: {known})")
    named = [p for p in chosen if only is None or p.name in only]
    to_run = pending_stages(chosen)
    pending = [p for p in chosen if to_run[p.name]]
    todo = [p for p in pending if p in named]
    ratios = measured_ratios(cpu_kind(), floors)

    def forecast(piece: Piece) -> float:
        return piece_forecast(piece, params, floors, ratios, to_run[piece.name])

    def drop(done: list[Piece]) -> None:
        """Drop the features of landed pieces, but not a stage that a piece left shares (a
        random run's note)."""
        from dvc.exceptions import DvcException

        if not drop_landed_features or dry or not done:
            return
        left = {stage for p in chosen if to_run[p.name] and p not in done for stage in p.stages}
        stages = [stage for p in done for stage in p.stages if stage not in left]
        try:
            freed = drop_features(stages)
        except (OSError, DvcException) as err:  # the run goes on: its pieces have landed
            print(f"warning: the landed pieces' features stay ({err})", flush=True)
            return
        if freed:
            print(f"features of landed pieces dropped: {freed / 1e9:.1f} GB freed", flush=True)

    def blockers(piece: Piece) -> list[str]:
        return [p.name for p in pending if p is not piece and _before(p, piece)]

    drop([p for p in chosen if not to_run[p.name]])
    known = "" if floors else " (no floors measured on this kind of machine yet)"
    total = sum(forecast(p) for p in todo)
    print(f"{len(todo)} pieces to run, forecast {total / 3600:.1f} h here{known}:", flush=True)
    for p in todo:
        done = [s for s in p.stages if _begun(s, to_run[p.name], params, floors)]
        begun = f" (begun here: {', '.join(done)})" if done else ""
        print(f"  {p.name}: {forecast(p) / 60:.0f} min{begun}", flush=True)

    def run(piece: Piece, deadline: float | None) -> bool:
        lines = _timing_lines()
        _record_resumed(piece, to_run[piece.name], params)
        _stamp("start", piece.name)
        begun = time.monotonic()
        needed = forecast(piece)
        finished = False
        try:
            finished = _repro(piece, deadline)
        finally:  # a Ctrl-C too: the finished stages' timings are not logged again
            _stamp("end" if finished else "stop", piece.name)
            _append_timings(lines)
        if not finished:
            to_run.update(pending_stages([piece]))
            finished = not to_run[piece.name]  # stopped after its last stage
        if not finished:
            done = [s for s in piece.stages if s not in to_run[piece.name]]
            restore_outputs(git_tracked_outputs(to_run[piece.name]))
            commit(
                f"reference run: {piece.name} stopped part-way ({', '.join(done) or 'no stage'} "
                f"done) on {cpu_kind()}"
            )
            print(
                f"stopped: {piece.name} at the end of the budget; its finished stages and "
                "checkpoints stay here, and the next start on this machine goes on from them",
                flush=True,
            )
            return False
        account()
        commit(
            f"reference run: {piece.name} landed ({(time.monotonic() - begun) / 60:.1f} min, "
            f"forecast {needed / 60:.1f} min) on {cpu_kind()}"
        )
        to_run[piece.name] = []
        drop([piece])
        return True

    landed: list[str] = []
    for piece in list(todo):
        left = budget - (time.monotonic() - start)
        needed, blocked = forecast(piece), blockers(piece)
        if dry or needed > left or blocked:
            why = f"after {', '.join(blocked)}" if blocked else f"{needed / 60:.0f} min"
            print(f"not started: {piece.name} ({why}; {left / 60:.0f} min left)", flush=True)
            continue
        run(piece, None)
        todo.remove(piece)
        pending.remove(piece)
        landed.append(piece.name)
        ratios = measured_ratios(cpu_kind(), floors)  # the accounting now holds this piece too
    left = budget - (time.monotonic() - start)
    free = [p for p in todo if not blockers(p)]
    if partial and not dry and free and left >= partial_minimum:
        piece = free[0]
        print(f"partly: {piece.name} for the {left / 60:.0f} min left", flush=True)
        if run(piece, start + budget):
            todo.remove(piece)
            landed.append(piece.name)
    left = sum(forecast(p) for p in todo)
    print(
        f"landed: {', '.join(landed) or 'none'}; {len(todo)} pieces left, {left / 3600:.1f} h",
        flush=True,
    )
    return landed


def _begun(stage: str, pending: list[str], params: Params, floors: dict[str, Any]) -> bool:
    """Whether work of a stage with a floor is already done here: finished, or resumable."""
    if stage not in pending:
        return bool(stage_floor(stage, params, floors))
    return done_share(stage, params) > 0


def _before(first: Piece, then: Piece) -> bool:
    """``first`` must land before ``then``: the fine-tuned seeds before the export (it
    chooses among them), everything before the report."""
    if then.name == "report":
        return True
    return then.name == "export" and first.stages[0].startswith("finetune@")
