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
floor of the stages already timed on this kind of machine (``DEFAULT_RATIO`` before the
first).

Every finished step's start and end go to ``bench/reference_run/steps.log`` and every stage's
time to ``bench/reference_run/timings.jsonl``, both committed with their piece, so the
accounting (``ferstudy account``) covers the whole run across machines.
"""

from __future__ import annotations

import datetime
import math
import re
import shutil
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
from ferstudy.tools.accounting import finetune_images

#: Where the run keeps its committed record: floors per machine, stage timings, step log.
RECORD_DIR = Path("bench/reference_run")
STEPS_LOG = RECORD_DIR / "steps.log"
TIMINGS = RECORD_DIR / "timings.jsonl"
ACCOUNT_FILE = Path("bench/reference_run.json")
#: The stages that make the dataset and its split, rebuilt first on every machine.
DATA_STAGES = ("acquire", "split")
#: Time over floor assumed before any piece has finished here (earlier runs: about 2).
DEFAULT_RATIO = 2.0
#: Seconds a stage costs beyond its floor's share: process start, TensorFlow's import, DVC.
STAGE_OVERHEAD = 30.0


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


def _counts(params: Params, backbone: str) -> dict[str, int]:
    """Images of each subset a backbone's runs use: its ``fraction`` of the split's (from the
    split's git-tracked summary)."""
    split = read_json(paths.SPLIT_SUMMARY)
    fraction = params.backbone_settings(backbone).fraction
    return {name: math.ceil(subset["total"] * fraction) for name, subset in split.items()}


def stage_floor(stage: str, params: Params, floors: dict[str, Any]) -> float | None:
    """Seconds of a stage's floor on the machine ``floors`` was measured on, before it ran;
    None where the bench measured none, or the split's summary is not there to count images."""
    name, _, key = stage.partition("@")
    if not paths.SPLIT_SUMMARY.is_file():
        return None
    if name == "finetune":
        run = key.rsplit("-", 1)[0]
        if run not in floors.get("finetune", {}):
            return None
        images = finetune_images(params)  # every epoch, before any early stop
        steps = params.finetune.epochs * math.ceil(images / params.finetune.batch_size)
        return steps * floors["finetune"][run]["floor_ms"]["fp32"] / 1000
    if name not in ("pretrained_features", "features", "train"):
        return None
    run = key if name == "pretrained_features" else key.rsplit("-", 1)[0]
    backbone, init = paths.parse_run_name(run)
    measured = floors.get("backbones", {}).get(backbone)
    if measured is None:
        return None
    counts = _counts(params, backbone)
    if name == "train":
        steps = params.epochs * math.ceil(counts["train"] / params.batch_size)
        return steps * measured["tail"]["floor_ms"]["fp32"] / 1000
    if (name == "pretrained_features") != (init == "pretrained"):
        return 0.0  # a random run's note, or a pretrained seed's link
    images = sum(counts.values())
    if init == "random" and params.frozen_bn == "recalibrated":
        images += params.bn_calibration_images
    return images / measured["features"]["forward_images_per_second"]


def measured_ratio(kind: str) -> float:
    """Seconds over floor of the stages with a floor timed on ``kind`` of machine since its
    floors were measured (the committed accounting), at least 1; ``DEFAULT_RATIO`` before
    any. Stages timed before a new bench of the same kind ran under other code."""
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
    if not timed:
        return DEFAULT_RATIO
    return max(sum(r["seconds"] for r in timed) / sum(r["floor_seconds"] for r in timed), 1.0)


def piece_forecast(piece: Piece, params: Params, floors: dict[str, Any], ratio: float) -> float:
    """Seconds a piece should take here: its floors times ``ratio``, plus each stage's fixed
    overhead."""
    total = 0.0
    for stage in piece.stages:
        floor = stage_floor(stage, params, floors) or 0.0
        total += floor * ratio + STAGE_OVERHEAD
    return total


# --------------------------------------------------------------------------- DVC and git


def _sh(args: list[str], check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise FerError(f"{' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout + done.stderr


def pending_stages(chosen: list[Piece]) -> dict[str, list[str]]:
    """For each piece, its stages that ``dvc repro --allow-missing`` would run: none once
    landed, and every git-tracked output (``cache: false``) of a landed piece is there
    (``--allow-missing`` alone would accept one missing).

    One DVC index answers for every piece: ``dvc.lock`` is parsed once, where a
    ``dvc repro --dry`` per piece parses it again for every target.
    """
    from dvc.repo import Repo

    with Repo() as repo, repo.lock:
        graph = repo.index.graph
        by_name = {stage.addressing: stage for stage in repo.index.stages}

        def runs(name: str) -> bool:
            stage = by_name[name]
            if any(not out.use_cache and not out.exists for out in stage.outs):
                return True
            return stage.changed(allow_missing=True, upstream=list(graph.successors(stage)))

        return {piece.name: [name for name in piece.stages if runs(name)] for piece in chosen}


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


def reference_run(
    params: Params,
    budget: float,
    bench: Callable[[Path], None],
    account: Callable[[], None],
    dry: bool = False,
    only: list[str] | None = None,
) -> list[str]:
    """Run the pending pieces that fit in ``budget`` seconds, committing each as it lands;
    returns the names of the pieces landed. ``bench(path)`` measures this machine's floors,
    ``account()`` writes the accounting. ``dry``: only say what is left and its forecast
    (from this machine's floors if measured, else none). ``only``: the names of the pieces
    to consider (default: all)."""
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
    ratio = measured_ratio(cpu_kind())
    forecast = {p.name: piece_forecast(p, params, floors, ratio) for p in todo}
    known = "" if floors else " (no floors measured on this kind of machine yet)"
    print(
        f"{len(todo)} pieces to run, forecast {sum(forecast.values()) / 3600:.1f} h here{known}:",
        flush=True,
    )
    for p in todo:
        print(f"  {p.name}: {forecast[p.name] / 60:.0f} min", flush=True)
    landed: list[str] = []
    for piece in list(todo):
        left = budget - (time.monotonic() - start)
        needed = piece_forecast(piece, params, floors, ratio)
        blocked = [p.name for p in pending if p is not piece and _before(p, piece)]
        if dry or needed > left or blocked:
            why = f"after {', '.join(blocked)}" if blocked else f"{needed / 60:.0f} min"
            print(f"not started: {piece.name} ({why}; {left / 60:.0f} min left)", flush=True)
            continue
        lines = _timing_lines()
        _stamp("start", piece.name)
        begun = time.monotonic()
        missing = ["--allow-missing"] if piece.from_git else []
        if subprocess.run(["dvc", "repro", *missing, *piece.stages]).returncode != 0:
            raise FerError(f"piece {piece.name} failed (dvc repro {' '.join(piece.stages)})")
        seconds = time.monotonic() - begun
        _stamp("end", piece.name)
        _append_timings(lines)
        account()
        commit(
            f"reference run: {piece.name} landed ({seconds / 60:.1f} min, forecast "
            f"{needed / 60:.1f} min) on {cpu_kind()}"
        )
        todo.remove(piece)
        pending.remove(piece)
        landed.append(piece.name)
        ratio = measured_ratio(cpu_kind())  # the accounting now holds this piece too
    left = sum(piece_forecast(p, params, floors, ratio) for p in todo)
    print(
        f"landed: {', '.join(landed) or 'none'}; {len(todo)} pieces left, {left / 3600:.1f} h",
        flush=True,
    )
    return landed


def _before(first: Piece, then: Piece) -> bool:
    """``first`` must land before ``then``: the fine-tuned seeds before the export (it
    chooses among them), everything before the report."""
    if then.name == "report":
        return True
    return then.name == "export" and first.stages[0].startswith("finetune@")
