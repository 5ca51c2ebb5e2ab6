"""``ferstudy account``: a reference run's time, stage by stage, against the floors that
``ferstudy bench`` measured on the same machine in the same run.

Reads the stage timing log (``.ferstudy/timings.jsonl``, one line per finished stage), the
bench's floors (``bench/floors.json``), and git-tracked records only: the split's summary
(image counts), each run's feature health (whether it has BatchNormalization to recalibrate)
and params (epochs, batch size). A floor is the least time the stage's work can take on that
machine:

- ``features`` and ``pretrained_features``: its forward passes (every image of its subsets,
  and the BN calibration images) at the forward pass's own images/s; a pretrained seed that
  links its run's pretrained features, and a random run's ``pretrained_features`` (a note),
  have a floor of 0;
- ``train``: its training steps (``epochs`` x steps an epoch) at the tail's floor step (the
  matmuls of its shapes plus the optimizer's update, fp32); its evaluations count as overhead;
- ``finetune``: its training steps (the epochs it ran x steps an epoch) at the fine-tuning
  floor step (the whole network's matmuls plus the optimizer's update, fp32);
- every other stage has no floor measured; its time is listed apart.

A stage killed and resumed logs only its last attempt; where ``ferstudy reference-run``
resumed it, its floor is the share of its work left at that start (``--resumed``: the share
done before, from the extraction's rows or the training's checkpointed epoch). The script's
log (``--log``) has the wall time of every step, a step stopped at the end of a budget
included.

No TensorFlow: this reads JSON.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
from pathlib import Path
from typing import Any

from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import read_json, write_json
from ferstudy.core.params import Params
from ferstudy.data.splits import USAGE_SPLIT

#: The stages whose floor ``ferstudy bench`` measures.
FLOORED = ("pretrained_features", "features", "train", "finetune")


def read_timings(path: Path) -> list[dict[str, Any]]:
    """The timing log's records, the last one of each (stage, run, seed), in finish order."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise FerError(f"{path}: cannot read the timing log ({err.strerror})") from None
    latest: dict[tuple, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise FerError(f"{path}:{number}: not a JSON line") from None
        key = (record["stage"], record.get("run"), record.get("seed"))
        latest.pop(key, None)  # a rerun moves to the end
        latest[key] = record
    return list(latest.values())


def read_steps(path: Path) -> list[dict[str, Any]]:
    """Every finished step of ``ferstudy reference-run``'s log, a step run again after an
    interruption as often as it ran (each is wall time spent; a step killed before its end is
    left out): name, start, seconds."""
    starts: dict[str, datetime.datetime] = {}
    steps: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stamp, event, name = line.split(" ", 2)
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if event == "start":
            starts[name] = when
        elif event in ("end", "stop") and name in starts:
            begun = starts.pop(name)
            seconds = (when - begun).total_seconds()
            step = {"step": name, "start": begun.isoformat(), "seconds": seconds}
            steps.append({**step, "stopped": True} if event == "stop" else step)
    return steps


def read_resumed(path: Path) -> dict[tuple, dict[str, Any]]:
    """What was done of each stage before its last start (``ferstudy reference-run``'s
    record: ``done``, a share of the images, or ``epochs``), by (stage, run, seed)."""
    records: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[(record["stage"], record["run"], record["seed"])] = record
    return records


def stage_floor(
    record: dict[str, Any],
    floors: dict[str, Any],
    params: Params,
    resumed: dict[str, Any] | None = None,
) -> float | None:
    """Seconds of the stage's floor (module docstring), for the work left after ``resumed``
    (the share of images, or the epochs, done before its last start), from git-tracked
    records only (the split's summary, feature health, a training-time file), so that it
    holds on a machine without the features; None where none is measured or a record is
    missing."""
    resumed = resumed or {}
    stage, run = record["stage"], record.get("run")
    if stage not in FLOORED:
        return None
    try:
        if stage == "finetune":
            if run not in floors.get("finetune", {}):
                return None
            tuned = paths.run_id(paths.finetune_run(run), record["seed"])
            epochs = read_json(paths.training_time_file(tuned))["epochs_run"]
            return finetune_floor(run, epochs - resumed.get("epochs", 0), params, floors)
        backbone, init = paths.parse_run_name(run)
        measured = floors.get("backbones", {}).get(backbone)
        if measured is None:
            return None
        counts = subset_counts(params, backbone)
    except FerError:
        return None
    if stage in ("features", "pretrained_features"):
        if record.get("reused") or (stage == "pretrained_features" and init == "random"):
            return 0.0  # a pretrained seed's link, or a random run's note
        images = sum(counts.values()) + calibration_images(run, params)
        left = 1 - resumed.get("done", 0.0)
        return images * left / measured["features"]["forward_images_per_second"]
    steps = (params.epochs - resumed.get("epochs", 0)) * math.ceil(
        counts["train"] / params.batch_size
    )
    return steps * measured["tail"]["floor_ms"]["fp32"] / 1000


def subset_counts(params: Params, backbone: str) -> dict[str, int]:
    """Images of each subset a backbone's runs use: its ``fraction`` of the split's (from the
    split's git-tracked summary)."""
    split = read_json(paths.SPLIT_SUMMARY)
    fraction = params.backbone_settings(backbone).fraction
    return {name: math.ceil(subset["total"] * fraction) for name, subset in split.items()}


def calibration_images(run: str, params: Params) -> int:
    """Images a run's features stage recalibrates BatchNormalization on (on every start):
    ``bn_calibration_images`` for a random run under ``frozen_bn: recalibrated``, unless a
    seed's git-tracked feature health already found no frozen BatchNormalization in it."""
    _, init = paths.parse_run_name(run)
    if init != "random" or params.frozen_bn != "recalibrated":
        return 0
    for health in sorted(paths.health_file(paths.run_id(run, 0)).parent.glob("seed*.json")):
        with contextlib.suppress(FerError, OSError):
            if read_json(health).get("frozen_batchnorm_layers") == 0:
                return 0
    return params.bn_calibration_images


def finetune_floor(run: str, epochs: int, params: Params, floors: dict[str, Any]) -> float:
    """Seconds of ``epochs`` of fine-tuning ``run`` at the bench's fp32 floor a step."""
    steps = epochs * math.ceil(finetune_images(params) / params.finetune.batch_size)
    return steps * floors["finetune"][run]["floor_ms"]["fp32"] / 1000


def finetune_images(params: Params) -> int:
    """Training images of a fine-tuning run under ``finetune.split``, from the git-tracked
    summaries of the dataset and its split (a fresh clone has them)."""
    if params.finetune.split == "usage":
        return read_json(paths.DATASET_SUMMARY)["per_usage"][USAGE_SPLIT["train"]]
    return read_json(paths.SPLIT_SUMMARY)["train"]["total"]


def account(
    timings: list[dict[str, Any]],
    benches: list[dict[str, Any]],
    params: Params,
    resumed: dict[tuple, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every stage's seconds beside its floor, and the totals. A stage gets the floor of the
    bench measured on the kind of machine it ran on (``machine["kind"]``), if any, for the
    work left after what ``resumed`` says was done before its last start."""
    by_kind = {b["machine"]["kind"]: b["floors"] for b in benches if b["machine"].get("kind")}
    rows = []
    for record in timings:
        floors = by_kind.get(record.get("machine"))
        key = (record["stage"], record.get("run"), record.get("seed"))
        done = {k: v for k, v in (resumed or {}).get(key, {}).items() if k in ("done", "epochs")}
        floor = None if floors is None else stage_floor(record, floors, params, done)
        cpu, cores = record.get("cpu_seconds"), record.get("cores")
        rows.append(
            {
                "stage": record["stage"],
                "run": record.get("run"),
                "seed": record.get("seed"),
                "seconds": record["seconds"],
                "floor_seconds": None if floor is None else round(floor, 1),
                "floor_share": None if floor is None else round(floor / record["seconds"], 3),
                "cpu_share": None
                if not (cpu and cores)
                else round(cpu / (record["seconds"] * cores), 3),
                "machine": record.get("machine"),
                "finished": record.get("finished"),
                **({"resumed_after": done} if any(done.values()) else {}),
            }
        )
    floored = [r for r in rows if r["floor_seconds"] is not None]
    return {
        "stages": rows,
        "seconds": round(sum(r["seconds"] for r in rows), 1),
        "floored_seconds": round(sum(r["seconds"] for r in floored), 1),
        "floor_seconds": round(sum(r["floor_seconds"] for r in floored), 1),
        "unfloored_seconds": round(sum(r["seconds"] for r in rows if r not in floored), 1),
    }


def table(result: dict[str, Any]) -> str:
    """The accounting as Markdown: one row per stage, then the totals."""
    lines = [
        "| stage | run | seed | seconds | floor (s) | floor / seconds | CPU share |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["stages"]:
        cells = [r["stage"], r["run"] or "", "" if r["seed"] is None else r["seed"], r["seconds"]]
        optional = ("floor_seconds", "floor_share", "cpu_share")
        cells += ["" if r[key] is None else r[key] for key in optional]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    total, floor = result["floored_seconds"], result["floor_seconds"]
    lines += [
        "",
        f"Stages with a floor: {total} s against {floor} s of floors "
        f"({total / floor if floor else float('nan'):.2f}x); stages without one: "
        f"{result['unfloored_seconds']} s; all stages: {result['seconds']} s.",
    ]
    if "wall_seconds" in result:
        lines.append(
            f"Wall time of the run's finished steps: {result['wall_seconds']} s "
            f"({result['wall_seconds'] / floor if floor else float('nan'):.2f}x the floors)."
        )
    return "\n".join(lines)


def run(
    params: Params,
    timings: Path,
    floors: list[Path],
    out: Path | None,
    log: Path | None,
    resumed: Path | None = None,
) -> dict[str, Any]:
    """Account the stages of ``timings`` against the benches in ``floors`` (one per kind of
    machine the stages ran on), less the shares done before a resume (``resumed``, if there);
    write JSON to ``out``."""
    benches = [read_json(path) for path in floors]
    for path, bench in zip(floors, benches):
        if "kind" not in bench["machine"]:
            print(f"warning: {path} names no kind of machine (an older bench): no floors there")
    shares = read_resumed(resumed) if resumed is not None and resumed.is_file() else None
    result = account(read_timings(timings), benches, params, shares)
    result["machines"] = [bench["machine"] for bench in benches]
    if log is not None:
        steps = read_steps(log)
        result["steps"] = steps
        result["wall_seconds"] = round(sum(s["seconds"] for s in steps), 1)
    if out is not None:
        write_json(out, result)
    return result
