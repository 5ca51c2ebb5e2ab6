"""The report's figures: curves with a band across seeds, bars with error bars, confusion
matrices, accuracy against speed, and one example image per emotion.

Each takes ``results`` as ``report.load_results`` returns them (seed means under ``study``
and ``eval``, each seed's curves under ``seed_curves``) and writes one PNG atomically. A band
or an error bar is the 95 % Student-t interval of the mean across seeds
(:func:`ferstudy.analysis.stats.summarize`); with one seed there is none.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ferstudy import CLASSES  # noqa: E402
from ferstudy.analysis.findings import FASTER_BY, pareto_front  # noqa: E402
from ferstudy.analysis.stats import seeds_text, summarize  # noqa: E402
from ferstudy.core.files import Dataset, atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per column of ``values`` (seeds x points): the mean and its 95 % t interval."""
    summaries = [summarize(column) for column in np.asarray(values, float).T]
    mean = np.array([s.mean for s in summaries])
    if summaries[0].low is None:
        return mean, None, None
    return mean, np.array([s.low for s in summaries]), np.array([s.high for s in summaries])


def _seeds_note(results: dict) -> str:
    n = min(len(r["seed_curves"]) for r in results.values())
    return seeds_text(n) if n == 1 else f"mean of {seeds_text(n)}, band: 95 % t interval"


def plot_curves(results: dict, backbone: str, out: Path) -> Path:
    """Accuracy and loss over epochs, mean across seeds with a band; pretrained solid, random
    dashed (the study's Figs 5-8)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in (results[run] for run in sorted(results)):
        if r["backbone"] != backbone:
            continue
        style = "-" if r["init"] == "pretrained" else "--"
        for ax, metric in zip(axes, ("accuracy", "loss")):
            for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
                mean, low, high = band([c[f"{split}/{metric}"] for c in r["seed_curves"]])
                epochs = range(len(mean))
                ax.plot(epochs, mean, style, color=color, label=f"{r['init']} {split}")
                if low is not None:
                    ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
    _label_curve_axes(axes)
    fig.suptitle(f"{backbone}: accuracy and loss per epoch ({_seeds_note(results)})")
    return _save(fig, out)


def _label_curve_axes(axes) -> None:
    """Axis labels, grid and legend of an (accuracy, loss) pair of curve plots."""
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch (0 = untrained)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def plot_finetune_curves(results: dict, out: Path) -> Path:
    """Fine-tuned runs: train (solid) and validation (dashed) accuracy and loss per epoch.

    Early stopping leaves seeds of different lengths: the mean and its band cover the epochs
    every seed reached; a seed that trained longer goes on as a thin line of its own. Each
    seed's best validation epoch (the weights it keeps) is marked with an x on its own
    validation accuracy.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, run in enumerate(sorted(results)):
        r, color = results[run], colors[k % len(colors)]
        for ax, metric in zip(axes, ("accuracy", "loss")):
            for split, style in (("train", "-"), ("val", "--")):
                seeds = [np.asarray(c[f"{split}/{metric}"], float) for c in r["seed_curves"]]
                n = min(len(c) for c in seeds)
                mean, low, high = band([c[:n] for c in seeds])
                ax.plot(range(n), mean, style, color=color, label=f"{run} {split}")
                if low is not None:
                    ax.fill_between(range(n), low, high, color=color, alpha=0.2, linewidth=0)
                for c in seeds:
                    if len(c) > n:  # this seed trained on after the shortest one stopped
                        ax.plot(range(n - 1, len(c)), c[n - 1 :], style, color=color, lw=0.8)
        for study, c in zip(r["seed_study"], r["seed_curves"]):
            best = int(study["best_epoch"])
            axes[0].plot(best, c["val/accuracy"][best], "x", color=color, markersize=8)
    axes[0].plot([], [], "x", color="black", label="best val epoch (each seed)")
    _label_curve_axes(axes)
    fig.suptitle(f"Fine-tuned runs: accuracy and loss per epoch ({_seeds_note(results)})")
    return _save(fig, out)


def _bars(ax, results: dict, runs: list[str], values: list[list[float]]) -> None:
    """Bars of the seeds' means with their 95 % t interval as error bars."""
    summaries = [summarize(v) for v in values]
    errors = [0.0 if s.half_width is None else s.half_width for s in summaries]
    bars = ax.bar(
        runs,
        [s.mean for s in summaries],
        yerr=errors if any(errors) else None,
        capsize=4,
        color=["tab:green" if results[r]["init"] == "pretrained" else "tab:gray" for r in runs],
    )
    ax.bar_label(bars, fmt="%.3f", fontsize=8, label_type="center", color="white")
    ax.tick_params(axis="x", rotation=30)


def plot_initial(results: dict, key: str, out: Path) -> Path:
    """Initial (after epoch 1) validation accuracy or loss, mean and 95 % interval across
    seeds (the study's Figs 9-10)."""
    runs = sorted(results)
    values = [[s["initial"][f"val_{key}"] for s in results[r]["seed_study"]] for r in runs]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(runs)), 3.4))
    _bars(ax, results, runs, values)
    ax.set_ylabel(f"validation {key} after epoch 1")
    ax.set_title(f"Initial {key} ({_seeds_note(results).replace('band', 'bars')})")
    return _save(fig, out)


def plot_test_accuracy(results: dict, out: Path) -> Path:
    """Test accuracy of every run, mean and 95 % interval across seeds."""
    runs = sorted(results, key=lambda r: -results[r]["eval"]["accuracy"])
    values = [[e["accuracy"] for e in results[r]["seed_eval"]] for r in runs]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(runs)), 3.4))
    _bars(ax, results, runs, values)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Test accuracy ({_seeds_note(results).replace('band', 'bars')})")
    return _save(fig, out)


def plot_confusion(run: str, matrix: list[list[float]], out: Path) -> Path:
    """Row-normalised test confusion matrix (counts averaged over seeds)."""
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


def plot_accuracy_speed(results: dict, out: Path) -> Path:
    """Mean test accuracy (95 % interval across seeds) against measured inference speed, and
    the Pareto front that :func:`ferstudy.analysis.findings.speed_choice` states (speeds closer than
    :data:`~ferstudy.analysis.findings.FASTER_BY` count as equal)."""
    points = {
        r: (v["eval"]["accuracy"], v["speed"]["images_per_second_batch64"])
        for r, v in results.items()
    }
    front = pareto_front(points, FASTER_BY)
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, (acc, speed) in points.items():
        hw = summarize([e["accuracy"] for e in results[run]["seed_eval"]]).half_width
        ax.errorbar(
            speed,
            acc,
            yerr=hw,
            fmt="o",
            capsize=3,
            color="tab:red" if run in front else "tab:gray",
        )
        ax.annotate(run, (speed, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.plot(
        [points[r][1] for r in front],
        [points[r][0] for r in front],
        ":",
        color="tab:red",
        label=f"Pareto front (means; speeds within {100 * (FASTER_BY - 1):.0f} % equal)",
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
    for r in results.values():
        rows = set(r["test_rows"].tolist())
        common = rows if common is None else common & rows
    chosen = {}
    for c in range(len(CLASSES)):
        rows = sorted(r for r in common or () if labels[r] == c)
        if rows:
            chosen[c] = rows[0]
    return chosen


def plot_examples(results: dict, dataset: Dataset, out: Path) -> Path:
    """Each emotion's example image beside every run's probabilities, averaged over seeds
    (the study's Figs 11-17)."""
    chosen = example_rows(results, dataset.labels)
    probs = {}
    for run, r in results.items():
        index = {int(row): i for i, row in enumerate(r["test_rows"])}
        probs[run] = {c: r["test_probabilities"][index[row]] for c, row in chosen.items()}
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
