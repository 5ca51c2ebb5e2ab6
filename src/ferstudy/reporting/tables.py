"""The report's tables, as Markdown: every run, speed, per-emotion F1, the study's Tables 2-5
beside ours, pretrained against random, every pair compared, the outside reference (the
ranking on FER2013's PrivateTest is :func:`ferstudy.analysis.ranking.ranking_table`).

A cell of a measure repeated over seeds reads ``mean ± half-width`` (95 % Student-t interval
across seeds, ``metrics/aggregate/<run>.json``), or the mean alone for one seed. A cell that
starts with **real** marks a difference whose 95 % interval excludes 0 (the page highlights
it), **yes** a flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from scipy.stats import binomtest

from ferstudy import CLASSES
from ferstudy.analysis.findings import SeedDifference, comparison_of, seed_difference
from ferstudy.analysis.ranking import (
    MEASURES,
    MIN_IMAGES,
    PUBLISHED,
)
from ferstudy.analysis.rates import TABLES
from ferstudy.analysis.stats import (
    PairedDifference,
    Summary,
)
from ferstudy.core import paths


def pm(summary: dict[str, Any] | None, digits: int = 4) -> str:
    """``mean ± half-width`` of an aggregate entry (the mean alone for one seed)."""
    return "—" if summary is None else Summary.from_dict(summary).describe(digits)


def _epochs(r: dict) -> str:
    """Epochs each seed trained and, in brackets, its best validation epoch."""
    seeds = r["seed_study"]
    return "/".join(str(s.get("epochs", "—")) for s in seeds) + (
        " (" + "/".join(str(s.get("best_epoch", "—")) for s in seeds) + ")"
    )


def markdown_table(columns: Sequence[str], align: str, rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: the header, the alignment row (``align``: one ``l`` or ``r`` per
    column, text left and numbers right) and one line per row."""
    marks = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def runs_table(results: dict) -> str:
    """Scores of every run: mean ± half-width across its seeds; the study's runs first, then
    the fine-tuned ones (``mode``). ``test images``: the counts its seeds were scored on;
    precision: the one its speed was measured at (its features')."""
    head = (
        "| run | mode | seeds | epochs run (best) | test images | precision | initial val acc "
        "| final val acc | best val acc | test acc | macro-F1 | PrivateTest acc (images) "
        "| params | trainable |"
    )
    lines = [head, "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run, r in sorted(results.items(), key=lambda item: (paths.is_finetune(item[0]), item[0])):
        a, sp = r["aggregate"], r["speed"]
        private = r["eval"].get("privatetest") or {}
        images = f" ({private['images']:,.0f})" if private.get("images") else ""
        mode = "**fine-tuned**" if paths.is_finetune(run) else "frozen"
        lines.append(
            f"| {run} | {mode} | {a['n']} | {_epochs(r)} | "
            f"{', '.join(f'{n:,}' for n in r['test_images'])} | "
            f"{sp['precision']} | {pm(a['initial_val_accuracy'])} | "
            f"{pm(a['final_val_accuracy'])} | {pm(a['best_val_accuracy'])} | "
            f"{pm(a['test_accuracy'])} | {pm(a['macro_f1'])} | "
            f"{pm(a.get('privatetest_accuracy'))}{images} | {sp['parameters']:,} | "
            f"{sp['trainable_parameters']:,} |"
        )
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    """Measured inference cost of every run (varies from one measurement to the next)."""
    columns = ("run", "size on disk (MB)", "ms/image (batch 1)", "images/s (batch 64)")
    rows = [
        (
            run,
            f"{r['speed']['size_mb']:.1f}",
            f"{r['speed']['ms_per_image_batch1']:.1f}",
            f"{r['speed']['images_per_second_batch64']:.0f}",
            r["speed"]["precision"],
            r["speed"]["device"],
        )
        for run, r in sorted(results.items())
    ]
    return markdown_table((*columns, "precision", "device"), "lrrrll", rows)


def per_class_table(results: dict) -> str:
    rows = [
        (run, *(f"{r['eval']['per_class'][c]['f1']:.3f}" for c in CLASSES))
        for run, r in sorted(results.items())
    ]
    return markdown_table(("run", *CLASSES), "l" + "r" * len(CLASSES), rows)


def side_by_side(results: dict, paper: dict[tuple, float]) -> str:
    """The study's Tables 2-5 beside this project's values (paper / ours per window; ours
    as mean ± half-width across seeds)."""
    out = []
    for (metric, rate), table in TABLES.items():
        windows = sorted(
            next(iter(results.values()))["study"][rate][metric], key=lambda w: int(w.split("-")[0])
        )
        out.append(f"**Table {table}: {rate} of {metric}** (paper / this project)\n")
        out.append("| model | init | " + " | ".join(windows) + " |")
        out.append("|---|---|" + "---:|" * len(windows))
        backbones = sorted({k[1] for k in paper} | {r["backbone"] for r in results.values()})
        for backbone in backbones:
            for init in paths.INITS:
                ours = results.get(paths.run_name(backbone, init))
                cells = []
                for w in windows:
                    p = paper.get((table, backbone, init, w))
                    o = pm(ours["aggregate"][rate][metric].get(w)) if ours else "—"
                    cells.append(f"{'' if p is None else f'{p:.4f}'} / {o}")
                out.append(f"| {backbone} | {init} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _real(significant: bool) -> str:
    return "**real**" if significant else "not distinguishable"


def pair_table(results: dict, backbone: str, comparisons: dict[str, dict[str, Any]]) -> str:
    """Pretrained against random for one backbone, each difference with its 95 % interval
    beside the study's claim; "agrees" only where the interval is on the study's side."""
    pre_run, ran_run = paths.run_name(backbone, "pretrained"), paths.run_name(backbone, "random")
    pre, ran = results[pre_run], results[ran_run]

    def row(
        name: str, a: str, b: str, d: SeedDifference | PairedDifference, claim: str, higher: bool
    ) -> str:
        agrees = d.significant and (d.low > 0) == higher
        return (
            f"| {name} | {a} | {b} | {d.describe()} | {claim} | "
            f"{'**real**, agrees' if agrees else _verdict(d, higher)} |"
        )

    c = comparison_of(comparisons, pre_run, ran_run)
    lines = [
        "| measure | pretrained | random | difference (95 % CI) | the study | here |",
        "|---|---:|---:|---:|---|---|",
    ]
    if c:
        lines.append(
            row(
                "test accuracy (paired on the test images)",
                pm(pre["aggregate"]["test_accuracy"]),
                pm(ran["aggregate"]["test_accuracy"]),
                c,
                "pretrained higher",
                True,
            )
        )
    for key, claim, higher in (("val_accuracy", "higher", True), ("val_loss", "lower", False)):
        d = seed_difference(
            [s["initial"][key] for s in pre["seed_study"]],
            [s["initial"][key] for s in ran["seed_study"]],
        )
        lines.append(
            row(
                f"initial {key.replace('_', ' ')}",
                pm(pre["aggregate"][f"initial_{key}"]),
                pm(ran["aggregate"][f"initial_{key}"]),
                d,
                f"pretrained {claim}",
                higher,
            )
        )
    for rate, claim in (("MCR", "converges faster"), ("MOFR", "overfits more")):
        for window in sorted(pre["study"][rate]["accuracy"], key=lambda w: int(w.split("-")[0])):
            d = seed_difference(
                [s[rate]["accuracy"][window] for s in pre["seed_study"]],
                [s[rate]["accuracy"][window] for s in ran["seed_study"]],
            )
            lines.append(
                row(
                    f"accuracy {rate} {window}",
                    pm(pre["aggregate"][rate]["accuracy"][window]),
                    pm(ran["aggregate"][rate]["accuracy"][window]),
                    d,
                    f"pretrained {claim}",
                    True,
                )
            )
    return "\n".join(lines)


def _verdict(d: SeedDifference | PairedDifference, higher: bool) -> str:
    if d.low is None:
        side = "agrees" if (d.difference > 0) == higher else "disagrees"
        return f"{side} by the point estimate (one seed: no claim)"
    if d.significant:
        return "**yes**: real, and against the study"
    return "not distinguishable"


def comparisons_table(comparisons: dict[str, dict[str, Any]]) -> str:
    """Every pair of runs, the largest difference first: test accuracy of the first minus the
    second, paired; real at 95 % per comparison, and after Holm's adjustment over all."""
    lines = [
        "| comparison | difference (points, 95 % CI, images, seeds) | p | real at 95 % "
        "| real after Holm |",
        "|---|---|---:|---|---|",
    ]
    for name, c in sorted(comparisons.items(), key=lambda item: -item[1]["difference"]):
        d = PairedDifference.from_dict(c)
        lines.append(
            f"| {name} | {d.describe()} | {d.p_value:.2g} | {_real(d.significant)} | "
            f"{_real(c['significant_holm'])} |"
        )
    return "\n".join(lines)


def outside_table(results: dict, outside: dict[str, Any] | None) -> str:
    """PrivateTest accuracy of every run (mean ± half-width across seeds) and the outside
    reference, with a 95 % Wilson interval of the mean over the images."""

    def cells(accuracy: float, images: int, across: str) -> str:
        ci = binomtest(round(accuracy * images), images).proportion_ci(method="wilson")
        return f"{accuracy:.4f} | {across} | {ci.low:.3f} to {ci.high:.3f} | {images:,}"

    lines = [
        "| model | PrivateTest accuracy | across seeds | 95 % Wilson (images) | images |",
        "|---|---:|---:|---:|---:|",
    ]
    if outside and outside["private_test"]["images"]:
        ref = outside["private_test"]
        lines.append(
            "| `fer` mini-Xception, the study's test split only (not the ranking's image set) | "
            f"{cells(ref['accuracy'], ref['images'], '—')} |"
        )
    for run, r in sorted(results.items()):
        private = r["eval"].get("privatetest") or {}
        if private.get("images"):
            across = pm(r["aggregate"].get("privatetest_accuracy"))
            lines.append(
                f"| {run} | {cells(private['accuracy'], round(private['images']), across)} |"
            )
    return "\n".join(lines)


def heads_table(dense: dict[str, dict], heads: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Per run with heads: the dense head's test accuracy beside each scikit-learn head's,
    and each head minus the dense head, paired on the same images and seeds."""
    lines = [
        "| run | head | test accuracy | minus the dense head (points, 95 % CI) | real |",
        "|---|---|---:|---|---|",
    ]
    for run, kinds in heads.items():
        lines.append(f"| {run} | dense (the study's) | {pm(dense[run]['test_accuracy'])} | | |")
        for kind, r in kinds.items():
            d = PairedDifference.from_dict(r["minus_dense"])
            lines.append(
                f"| {run} | {kind.replace('_', ' ')} | {pm(r['test_accuracy'])} | "
                f"{d.describe()} | {_real(d.significant)} |"
            )
    return "\n".join(lines)


def _cell(summary: dict[str, Any] | None) -> str:
    return "—" if summary is None else Summary.from_dict(summary).describe()


def _real(significant: bool) -> str:
    return "**real**" if significant else "not distinguishable"


def ranking_table(rank: dict[str, Any]) -> str:
    """The ranking as a Markdown table (a difference from fer's model whose interval
    excludes 0 reads **real**), the published figures' sources below it."""
    lines = [
        "| rank | model | scored on | PrivateTest accuracy | 95 % interval | images | seeds "
        "| minus fer (points, 95 % CI) | p (Holm) | real at 95 % | real after Holm |",
        "|---:|---|---|---:|---|---:|---:|---|---:|---|---|",
    ]
    for i, e in enumerate(rank["rows"], 1):
        name = e["name"] + (" (fine-tuned)" if e.get("mode") == "fine-tuned" else "")
        if not e["measured_here"]:
            name += " (published)"
        interval = "—" if e["low"] is None else f"{e['low']:.4f} to {e['high']:.4f}"
        d = e["minus_fer"]
        if d is None:
            versus = ["(the reference)" if e["kind"] == "outside" else "—", "", "", ""]
        else:
            pd = PairedDifference.from_dict(d)
            versus = [
                pd.describe(),
                f"{pd.p_value:.2g} ({d['p_holm']:.2g})",
                _real(pd.significant),
                _real(d["significant_holm"]),
            ]
        lines.append(
            f"| {i} | {name} | {e['scored_on']} | {e['accuracy']:.4f} | {interval} | "
            f"{e['images']:,} | {e['seeds'] or '—'} | " + " | ".join(versus) + " |"
        )
    lines += ["", *[f"- {p['name']}: {p['source']}." for p in PUBLISHED]]
    lines += [f"- {run}: not ranked ({why})." for run, why in rank["not_ranked"].items()]
    return "\n".join(lines)


def markdown(
    aggregates: dict[str, dict[str, Any]],
    pairs: dict[str, dict[str, Any]],
    rank: dict[str, Any] | None = None,
    not_compared: list[tuple[str, str]] | None = None,
) -> str:
    """The aggregates, the comparisons and the ranking as Markdown tables."""
    names = list(MEASURES)
    lines = [
        "| run | seeds | " + " | ".join(n.replace("_", " ") for n in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for run, agg in aggregates.items():
        cells = " | ".join(_cell(agg.get(n)) for n in names)
        lines.append(f"| {run} | {agg['n']} | {cells} |")
    lines += [
        "",
        "| comparison | test images | seeds | difference (points) | 95 % interval | real "
        "| real after Holm |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for name, c in pairs.items():
        lines.append(
            f"| {name} | {c['images']:,} | {c['seeds']} | {100 * c['difference']:+.1f} | "
            f"{100 * c['low']:+.1f} to {100 * c['high']:+.1f} | "
            f"{'yes' if c['significant'] else 'not distinguishable'} | "
            f"{'yes' if c['significant_holm'] else 'no'} |"
        )
    if not_compared:
        lines.append("")
        lines += [
            f"- {a} and {b}: fewer than {MIN_IMAGES} shared test images, not compared."
            for a, b in not_compared
        ]
    if rank is not None:
        lines += ["", "Ranking on FER2013's PrivateTest:", "", ranking_table(rank)]
    return "\n".join(lines) + "\n"


def markdown_tables(rows: list[dict[str, Any]], value_columns: list[str] | None = None) -> str:
    """One Markdown table per study table: a row per run, a column per epoch window."""
    out = []
    for (metric, rate), table in TABLES.items():
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        epochs = list(dict.fromkeys(r["epochs"] for r in sel))
        runs = list(dict.fromkeys((r["backbone"], r["init"]) for r in sel))
        out.append(f"**Table {table}: {rate} of {metric}**\n")
        out.append("| model | init | " + " | ".join(epochs) + " |")
        out.append("|---|---|" + "---:|" * len(epochs))
        for backbone, init in runs:
            vals = {
                r["epochs"]: _mean_pm(r["value"], r.get("half_width"))
                for r in sel
                if (r["backbone"], r["init"]) == (backbone, init)
            }
            out.append(
                f"| {backbone} | {init} | " + " | ".join(vals.get(e, "") for e in epochs) + " |"
            )
        out.append("")
    return "\n".join(out)


def _mean_pm(value: float, half_width: float | None) -> str:
    return f"{value:.6f}" if half_width is None else f"{value:.6f} ± {half_width:.6f}"
