"""Report sections on fidelity to the study: feature health, protocol variants, disagreements.

Tables are Markdown (``report.py`` renders them to HTML). Inputs are the metrics the
pipeline wrote (``metrics/features/<run>.json``, ``metrics/fidelity.json``) and the committed
protocol-variant records under ``reference/protocol_variants/`` (``ferstudy fidelity``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferstudy.analysis.fidelity import ZERO_BAND
from ferstudy.analysis.health import MIN_RELATIVE_STD, MIN_STD
from ferstudy.analysis.rates import METRIC0, TABLES
from ferstudy.core.files import read_json
from ferstudy.reporting.tables import markdown_table

VARIANTS_DIR = Path("reference/protocol_variants")
#: scripts/health_by_frozen_bn.py: random backbones' feature health under each frozen_bn.
HEALTH_BY_FROZEN_BN = Path("reference/health_by_frozen_bn.json")


def health_table(results: dict[str, dict[str, Any]]) -> str:
    """Feature health of every run, the flag and its reason."""
    rows = []
    for run, r in sorted(results.items()):
        h = r["health"]
        bn = (
            f"recalibrated ({h['batchnorm_recalibrated_on']} img)"
            if h["batchnorm_recalibrated_on"]
            else ("none" if not h["frozen_batchnorm_layers"] else "inference")
        )
        flag = f"**yes**: {h['reason']}" if h["degenerate"] else "no"
        if h["degenerate"] and h.get("seeds", 1) > 1:
            flag += f" ({h['degenerate_seeds']} of {h['seeds']} seeds)"
        rows.append(
            (
                run,
                bn,
                f"{h['rms']:.3g}",
                f"{h['across_image_std']:.3g}",
                f"{h['relative_std']:.3f}",
                f"{100 * h['constant_fraction']:.1f} %",
                f"{h['top1_variance']:.2f}",
                f"{h['top10_variance']:.2f}",
                flag,
            )
        )
    columns = ("run", "frozen BN", "RMS", "across-image std", "relative std", "constant dims")
    return markdown_table((*columns, "top-1 PC", "top-10 PC", "degenerate"), "llrrrrrrl", rows)


def health_caption(images: int | None = None) -> str:
    """What the feature-health table shows and when a run is flagged (``images``: how many
    training images the features stage measured them on)."""
    on = f"on {images:,} training images" if images else "on training images"
    return (
        f"Frozen features of each study run {on} (first seed; the flag counts every seed). "
        f"Flagged: they vary across images by under {MIN_STD:g} on average or under "
        f"{100 * MIN_RELATIVE_STD:g} % of their RMS, leaving the tail almost nothing to "
        "learn from"
    )


def frozen_bn_section(path: Path = HEALTH_BY_FROZEN_BN) -> list[str]:
    """Markdown lines: random backbones' health with frozen BN in inference mode and
    recalibrated, on the same images (``scripts/health_by_frozen_bn.py``); none if absent."""
    if not path.is_file():
        return []
    lines = [
        "Why `frozen_bn: recalibrated`: the same random backbones, the same 512 training "
        "images, frozen BatchNormalization in inference mode (Keras' default, random "
        "statistics 0 and 1) against recalibrated (`scripts/health_by_frozen_bn.py`):",
        "",
        "| run | frozen BN | RMS | across-image std | relative std | constant dims | degenerate |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for run, modes in sorted(read_json(path).items()):
        for mode, h in modes.items():
            flag = f"**yes**: {h['reason']}" if h["degenerate"] else "no"
            lines.append(
                f"| {run} | {mode} | {h['rms']:.3g} | {h['across_image_std']:.3g} | "
                f"{h['relative_std']:.3f} | {100 * h['constant_fraction']:.1f} % | {flag} |"
            )
    return [*lines, ""]


def _score(agreement: dict[str, Any]) -> str:
    if not agreement.get("rates"):
        return "—"
    return f"{agreement['signs_agree']}/{agreement['rates']} ({agreement['rmse']:.4f})"


def fidelity_table(fidelity: dict[str, Any]) -> str:
    """Per run and table: signs that agree with the study / rates, and (RMSE)."""
    tables = sorted(TABLES.values())
    lines = [
        "| run | " + " | ".join(f"Table {t}" for t in tables) + " | all |",
        "|---|" + "---:|" * (len(tables) + 1),
    ]
    for run, per in sorted(fidelity["runs"].items()):
        cells = [_score(per[f"table{t}"]) for t in tables] + [_score(per["total"])]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def family_fidelity_lines(fidelity: dict[str, Any]) -> list[str]:
    """The pretrained runs scored on the study's pretrained rows of their family."""
    families = fidelity.get("pretrained_by_family") or {}
    if not families:
        return ["No pretrained run here belongs to a family of the study's backbones."]
    head = (
        "The study's pretrained rows against this project's pretrained runs of the same family "
        "(the same kind of weights, not the same network; apart from the like-for-like score "
        "above):"
    )
    return [head, ""] + [
        f"- {family}: {', '.join(f['ours'])} against the study's {', '.join(f['study'])}: "
        f"{_score(f)} signs agree (RMSE)."
        for family, f in families.items()
    ]


def load_variants(folder: Path = VARIANTS_DIR) -> list[dict[str, Any]]:
    """The committed protocol-variant records, by label."""
    if not folder.is_dir():
        return []
    return sorted((read_json(p) for p in folder.glob("*.json")), key=lambda v: v["label"])


def variants_table(current: dict[str, Any], variants: list[dict[str, Any]]) -> str:
    """Every protocol variant with its random-init and total fidelity, under each Metric[0]."""
    lines = [
        "| variant | runs | "
        + " | ".join(f"random-init signs (RMSE), Metric[0] {m}" for m in METRIC0)
        + " |",
        "|---|---|" + "---:|" * len(METRIC0),
    ]
    rows = [("this run (committed params)", sorted(current["runs"]), current["by_metric0"])]
    rows += [(v["label"], v["runs"], v["fidelity"]) for v in variants]
    for label, runs, by_metric0 in rows:
        cells = [_score(by_metric0[m]["random"]) for m in METRIC0]
        lines.append(f"| {label} | {', '.join(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant_notes(variants: list[dict[str, Any]]) -> list[str]:
    return [f"**{v['label']}**: {v['description']}" for v in variants]


def train_gain(curves: dict[str, Any]) -> float:
    """Train accuracy gained from epoch 0 to the last epoch, in points."""
    acc = curves["train/accuracy"]
    return 100 * float(acc[-1] - acc[0])


def paper_train_gain(paper: dict[tuple, float], backbone: str, init: str) -> float | None:
    """The study's train-accuracy gain over 20 epochs, from its accuracy MCR (Table 2)."""
    mcr = [v for (t, b, i, _), v in paper.items() if (t, b, i) == (2, backbone, init)]
    return 100 * 5 * sum(mcr) if len(mcr) == 4 else None


def disagreements(
    results: dict[str, dict[str, Any]], fidelity: dict[str, Any], paper: dict[tuple, float]
) -> list[str]:
    """One sentence per run that disagrees with the study: where, and what differs."""
    out = []
    for run, per in sorted(fidelity["runs"].items()):
        total = per["total"]
        if not total["rates"] or total["signs_agree"] == total["rates"]:
            continue
        r = results[run]
        worst = min(
            (t for t in sorted(TABLES.values()) if per[f"table{t}"]["rates"]),
            key=lambda t: per[f"table{t}"]["signs_agree"],
        )
        theirs = paper_train_gain(paper, r["backbone"], r["init"])
        gain = f"train accuracy rose {train_gain(r['curves']):+.1f} points here" + (
            f" against {theirs:+.1f} in the study" if theirs is not None else ""
        )
        health = (
            f"its features are degenerate ({r['health']['reason']})"
            if r["health"]["degenerate"]
            else "its features are healthy"
        )
        out.append(
            f"{run}: {total['signs_agree']}/{total['rates']} signs agree (most differ in "
            f"Table {worst}); {gain}; {health}."
        )
    return out


def fidelity_caption(metric0: str) -> str:
    return (
        "Each study run against the study's Tables 2-5 (seed means): signs that agree, out of "
        f"the rates both have, and the RMSE in brackets; |value| < {ZERO_BAND:g} counts as 0; "
        f"Metric[0] read as `{metric0}` (`metric0` in params.yaml)"
    )
