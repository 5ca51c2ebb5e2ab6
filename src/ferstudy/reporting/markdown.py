"""The report as Markdown, answer first.

Order: the title and a summary of a few lines (the headline on FER2013's PrivateTest, the
study's question answered, what lies below), the findings and the backbone choice, one main
table (every run), the differences that are real, then one section per topic, each with the
figures that support it right after its text, and the appendices (every pair, feature health,
fidelity and protocol variants, the study's Tables 2-5, speed, fer on the study's test split).
Every number comes from the inputs; method lives in the manual (``docs/``), linked from the
captions.

A figure is a ``{{IMG:path}}`` placeholder line (``stages/report.py`` makes it a Markdown
image, the HTML page embeds it) followed by its caption: one italic line,
``*Figure n. ...*``. A table's caption is the paragraph right above it. Captions stay at
about 40 words (tests/test_report_layout.py holds every one to 60).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferstudy.analysis.findings import (
    FASTER_BY,
    accuracy_choice,
    accuracy_leader,
    findings,
    pretrained_wins,
    speed_choice,
)
from ferstudy.analysis.results import finetuned_runs, study_runs
from ferstudy.analysis.stats import PairedDifference, seeds_text
from ferstudy.core import paths
from ferstudy.core.paths import EXAMPLES
from ferstudy.reporting import protocol
from ferstudy.reporting import tables as report_tables
from ferstudy.reporting.tables import pm, ranking_table

TITLE = "# FER backbone comparison: results"
RANKING_HEADING = "## Ranking on FER2013's PrivateTest"
ALL_PAIRS_HEADING = "## Appendix A: every pair of runs"
SPEED_HEADING = "## Appendix E: speed"
#: The manual, as linked from reports/report.md.
DOCS = "../docs"


def doc(page: str, text: str | None = None, anchor: str = "") -> str:
    """A Markdown link to a page of the manual (``docs/<page>``, optionally ``#anchor``)."""
    target = f"{DOCS}/{page}" + (f"#{anchor}" if anchor else "")
    return f"[{text or page.removesuffix('.md')}]({target})"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower())
    return text.replace(" ", "-")


def heading_link(heading: str, text: str | None = None) -> str:
    """A Markdown link to a ``## `` heading of the report itself (by default, an appendix by
    its letter and title)."""
    title = heading.lstrip("#").strip().removeprefix("Appendix ")
    return f"[{text or title}](#{slug(heading)})"


def _img_md(path: Path) -> str:
    return f"![{path.stem}](../{path.as_posix()})"


def _seeds_text(results: dict) -> str:
    return seeds_text(min(len(r["seeds"]) for r in results.values()))


class Figures:
    """The drawn figures, handed to the sections that refer to them and numbered in the order
    they appear; whatever no section takes ends in an appendix of its own (:meth:`rest`)."""

    def __init__(self, drawn: list[tuple[str, Path]], with_examples: bool):
        self.pending = [(t, p) for t, p in drawn if with_examples or p.name != EXAMPLES]
        self.count = 0

    def take(self, stems: list[str], note: str = "") -> list[str]:
        """The figures named ``stems`` (file names without ``.png``), in the order drawn, each
        as its placeholder and its caption (its title, then ``note``)."""
        chosen = [(t, p) for t, p in self.pending if p.stem in stems]
        self.pending = [f for f in self.pending if f not in chosen]
        return [line for title, path in chosen for line in self._figure(title, path, note)]

    def rest(self) -> list[str]:
        """Every figure no section took."""
        return self.take([p.stem for _, p in self.pending])

    def _figure(self, title: str, path: Path, note: str) -> list[str]:
        self.count += 1
        caption = f"Figure {self.count}. {title.rstrip('.')}." + (f" {note}" if note else "")
        return ["{{IMG:" + path.as_posix() + "}}", "", f"*{caption}*", ""]


@dataclass
class Inputs:
    """What the report is made of (``stages/report.py`` reads it all from the pipeline)."""

    results: dict[str, dict[str, Any]]
    paper: dict[tuple, float]
    fidelity: dict[str, Any]
    comparisons: dict[str, dict[str, Any]]
    figures: Figures
    outside: dict[str, Any] | None = None
    heads: dict[str, dict[str, dict[str, Any]]] | None = None
    ranking: dict[str, Any] | None = None
    shipped: dict[str, Any] | None = None
    study: dict[str, dict[str, Any]] = field(init=False)
    seeds: str = field(init=False)

    def __post_init__(self) -> None:
        self.study = study_runs(self.results)
        self.seeds = _seeds_text(self.results)


Section = Callable[[Inputs], list[str]]


# --------------------------------------------------------------------------- the summary


def _ranked_name(entry: dict[str, Any]) -> str:
    return entry["name"] + (" (fine-tuned)" if entry.get("mode") == "fine-tuned" else "")


def headline(inputs: Inputs) -> str:
    """The best model measured here on FER2013's PrivateTest with its interval, against fer's
    model, paired; without a ranking, the best mean test accuracy (each run's own test set)."""
    rows = (inputs.ranking or {}).get("rows", [])
    runs = [e for e in rows if e["kind"] == "run"]
    if not runs:
        best = max(inputs.results, key=lambda r: inputs.results[r]["eval"]["accuracy"])
        accuracy = pm(inputs.results[best]["aggregate"]["test_accuracy"])
        return (
            f"- **Headline**: no ranking on FER2013's PrivateTest here; the highest mean test "
            f"accuracy, each run on its own test set: {best}, {accuracy} ({inputs.seeds})."
        )
    best, name = runs[0], _ranked_name(runs[0])
    text = (
        f"- **Headline**: the highest accuracy measured here on FER2013's PrivateTest: "
        f"{name}, {best['accuracy']:.4f} (95 % CI {best['low']:.4f} to {best['high']:.4f}, "
        f"{best['images']:,} images, {seeds_text(best['seeds'])})"
    )
    fer = next((e for e in rows if e["kind"] == "outside"), None)
    if fer is not None:
        every = fer["images"] == inputs.ranking.get("privatetest_images")
        text += (
            f", against {fer['accuracy']:.4f} for `fer`'s mini-Xception on "
            f"{'all ' if every else ''}{fer['images']:,} PrivateTest images"
        )
    if best["minus_fer"] is not None:
        d = PairedDifference.from_dict(best["minus_fer"])
        text += f"; {best['name']} minus fer's, paired on the images both scored: {d.verdict()}"
        if d.significant:
            holm = best["minus_fer"].get("significant_holm")
            text += ", real" + ("" if holm else " (not after Holm over the runs)")
    return text + "."


def shipped_line(s: dict[str, Any] | None) -> str | None:
    """The model that ships inside the package (stage export's record ``s``), on FER2013's
    PrivateTest."""
    if s is None:
        return None
    p = s["privatetest"]
    text = (
        f"- **The shipped model** (what `ferstudy.analyze` runs): {s['run']}, "
        f"{s['shipped']}, chosen on validation: {p['accuracy']:.4f} on FER2013's PrivateTest "
        f"(95 % Wilson interval {p['low']:.4f} to {p['high']:.4f}, {p['images']:,} images)"
    )
    if s.get("minus_fer") is not None:
        d = PairedDifference.from_dict(s["minus_fer"])
        text += f"; minus `fer`'s, paired on the same images: {d.verdict()}"
    return text + "."


def study_answer(inputs: Inputs) -> str | None:
    """The study's question, which frozen backbone and which initialisation learn FER2013
    best, answered from the study's runs and the paired comparisons."""
    if not inputs.study:
        return None
    leader = accuracy_leader(inputs.study, inputs.comparisons)
    if leader.runner_up is None:
        answer = f"{leader.run} is the only study run (test accuracy {leader.accuracy:.3f})"
    elif leader.ahead:
        answer = (
            f"{leader.run} (test accuracy {leader.accuracy:.3f}), ahead at 95 % after Holm of "
            f"every other study run on the test images they share, of the runner-up "
            f"{leader.runner_up} by "
            f"{leader.versus_runner_up.describe()}"
        )
    else:
        answer = (
            f"no single run: {leader.run} has the highest mean test accuracy "
            f"({leader.accuracy:.3f}) but is not ahead at 95 % after Holm of "
            f"{', '.join(leader.tied)}"
        )
    paired, wins = pretrained_wins(inputs.study, inputs.comparisons)
    if paired:
        answer += (
            f". Pretrained beats random initialisation for {len(wins)} of {len(paired)} "
            f"backbones with both runs ({', '.join(wins) or 'none'}; the study: all)"
        )
    else:
        answer += ". No backbone has both a pretrained and a random run here"
    return (
        "- **The study's question**, which frozen backbone and which initialisation recognise "
        f"facial emotions best: {answer}."
    )


def scales_line(results: dict[str, Any]) -> str | None:
    """A warning when the study's runs were scored on test sets of different sizes (some on a
    ``fraction`` of the data): their scores then do not compare as one table."""
    sizes: dict[int, set[str]] = {}
    for run, r in study_runs(results).items():
        for n in r["test_images"]:
            sizes.setdefault(n, set()).add(run)
    if len(sizes) < 2:
        return None
    scales = "; ".join(f"{n:,} ({', '.join(sorted(runs))})" for n, runs in sorted(sizes.items()))
    return (
        f"- **Mixed data scales**: the runs were scored on test sets of {len(sizes)} sizes: "
        f"{scales}. Compare runs scored on the same images only."
    )


def summary(inputs: Inputs, main: list[str], appendices: list[str]) -> list[str]:
    """The title and a few lines that answer first (``main``, ``appendices``: the headings
    below, linked)."""
    answer, shipped = study_answer(inputs), shipped_line(inputs.shipped)
    scales = scales_line(inputs.results)
    return [
        TITLE,
        "",
        headline(inputs),
        *([scales] if scales else []),
        *([shipped] if shipped else []),
        *([answer] if answer else []),
        "- **Below**: "
        + "; ".join(heading_link(h) for h in main)
        + ". Appendices: "
        + "; ".join(heading_link(h) for h in appendices)
        + ".",
        "- Generated by `ferstudy report` from the pipeline's outputs (curves: `dvc plots "
        f"diff`; numbers: `dvc metrics show`); method: {doc('README.md', 'the manual')}.",
        "",
    ]


# --------------------------------------------------------------------------- main sections


def findings_section(inputs: Inputs) -> list[str]:
    """The study's findings checked, then the most accurate run (speed: Appendix E)."""
    return [
        "## Findings",
        "",
        f"The study's claims checked on this project's runs ({inputs.seeds}); a difference "
        "counts only where its 95 % interval excludes 0 "
        f"({doc('statistics.md', anchor='the-studys-claims-on-the-onet-pair')}).",
        "",
        *[f"- {f}" for f in findings(inputs.results, inputs.comparisons)],
        f"- {accuracy_choice(inputs.results, inputs.comparisons)} Speed: "
        f"{heading_link(SPEED_HEADING, 'Appendix E')}.",
        "",
    ]


def runs_section(inputs: Inputs) -> list[str]:
    """The main table: every run's scores across its seeds."""
    tuned = finetuned_runs(inputs.results)
    where = "on its own test set" + (" (a fine-tuned run: its own split's)" if tuned else "")
    return [
        "## Results of every run",
        "",
        f"Every run over {inputs.seeds}, {where}: `mean ± half-width`, 95 % t interval "
        "across seeds. `test images`: what each seed was scored on; `epochs run (best)`: per seed, "
        f"epochs trained (the best one, kept); {doc('training-and-rates.md', 'training')}"
        + (f", {doc('finetuning-and-heads.md', 'fine-tuning')}" if tuned else "")
        + ".",
        "",
        report_tables.runs_table(inputs.results),
        "",
        *inputs.figures.take(["test_accuracy"], "Error bars: 95 % t interval across seeds."),
        *inputs.figures.take(
            ["curves_finetune"], f"Fine-tuning: {doc('finetuning-and-heads.md')}."
        ),
    ]


def real_pairs_section(inputs: Inputs) -> list[str]:
    """Only the pairs of runs whose difference is real after Holm's adjustment."""
    real = {k: c for k, c in inputs.comparisons.items() if c["significant_holm"]}
    where = f"every pair: {heading_link(ALL_PAIRS_HEADING, 'Appendix A')}"
    method = doc("statistics.md", "method", "paired-comparisons")
    if not real:
        return [
            "## Differences that are real",
            "",
            f"No pair of runs differs at 95 % after Holm's adjustment; {where}.",
            "",
        ]
    return [
        "## Differences that are real",
        "",
        f"The {len(real)} of {len(inputs.comparisons)} pairs of runs whose test-accuracy "
        "difference stays real after Holm's adjustment, largest first, paired on the test "
        f"images both were scored on; {where}; {method}.",
        "",
        report_tables.comparisons_table(real),
        "",
    ]


def ranking_section(inputs: Inputs) -> list[str]:
    """The ranking on FER2013's PrivateTest: every run, fer's model, published figures."""
    if not inputs.ranking:
        return []
    return [
        RANKING_HEADING,
        "",
        "Accuracy on FER2013's PrivateTest, best first; published rows are quoted, not "
        "measured here. A study run is scored on the PrivateTest rows of its test split only "
        "(`scored on`); `minus fer` is paired on the images both scored "
        f"({doc('fer-baseline.md', 'method')}).",
        "",
        ranking_table(inputs.ranking),
        "",
    ]


def pretrained_section(inputs: Inputs) -> list[str]:
    """Pretrained against random per backbone with both runs, then the figures behind the
    study's claims: initial accuracy and loss, and the curves of every backbone."""
    backbones = sorted({r["backbone"] for r in inputs.study.values()})
    both = [b for b in backbones if all(paths.run_name(b, i) in inputs.study for i in paths.INITS)]
    rates = doc("training-and-rates.md", "rates", "the-studys-metrics-mcr-and-mofr")
    lines = ["## Pretrained against random, and the training curves", ""]
    if not both:
        lines += ["No backbone has both a pretrained and a random study run here.", ""]
    for backbone in both:
        lines += [
            f"**{backbone}: pretrained against random**, each measure beside the study's claim "
            f"({inputs.seeds}; test accuracy paired on the test images, the rest Welch's t "
            f"interval across seeds; {rates}).",
            "",
            report_tables.pair_table(inputs.study, backbone, inputs.comparisons),
            "",
        ]
    bars = "Error bars: 95 % t interval across seeds."
    return [
        *lines,
        *inputs.figures.take(["initial_accuracy", "initial_loss"], bars),
        *inputs.figures.take([f"curves_{b}" for b in backbones], f"MCR and MOFR: {rates}."),
    ]


def heads_section(inputs: Inputs) -> list[str]:
    """The scikit-learn heads on the cached features (none without heads)."""
    if not inputs.heads:
        return []
    dense = {r: inputs.results[r]["aggregate"] for r in inputs.heads}
    return [
        "## Classical heads on the cached features",
        "",
        "scikit-learn heads (`heads` in params.yaml) on the same cached features as the run's "
        "dense head; each head minus the dense head, paired on the same test images and seeds "
        f"({doc('finetuning-and-heads.md', 'heads', 'classical-heads-on-the-cached-features')}).",
        "",
        report_tables.heads_table(dense, inputs.heads),
        "",
    ]


def per_emotion_section(inputs: Inputs) -> list[str]:
    """Test F1 per emotion, the confusion matrices and the example images."""
    return [
        "## Test F1 per emotion",
        "",
        f"Test F1 per emotion, seed means ({inputs.seeds}), each run on its own test set.",
        "",
        report_tables.per_class_table(inputs.results),
        "",
        *inputs.figures.take(
            [f"confusion_{run}" for run in inputs.results], "Rows: the true emotion, normalised."
        ),
        *inputs.figures.take(
            [Path(EXAMPLES).stem], "Each run's probabilities are the mean over its seeds."
        ),
    ]


# --------------------------------------------------------------------------- appendices


def text_section(heading: str, *blocks: str) -> list[str]:
    """A section: its heading, then each block (a paragraph, a table) and a blank line."""
    lines = [heading, ""]
    for block in blocks:
        lines += [block, ""]
    return lines


def all_pairs_appendix(inputs: Inputs) -> list[str]:
    return text_section(
        ALL_PAIRS_HEADING,
        "Test accuracy of every pair of runs, the first minus the second, paired on the test "
        "images both were scored on. Holm adjusts within two families: pairs of study runs, "
        f"pairs with a fine-tuned run ({doc('statistics.md', 'method', 'paired-comparisons')}).",
        report_tables.comparisons_table(inputs.comparisons),
    )


def health_appendix(inputs: Inputs) -> list[str]:
    health = [r["health"] for r in inputs.study.values() if r.get("health")]
    return [
        "## Appendix B: feature health",
        "",
        protocol.health_caption(health[0].get("images") if health else None)
        + f" ({doc('fidelity.md', 'why', 'feature-health')}).",
        "",
        protocol.health_table(inputs.study),
        "",
        *protocol.frozen_bn_section(),
    ]


def fidelity_appendix(inputs: Inputs) -> list[str]:
    variants = protocol.load_variants()
    return [
        "## Appendix C: fidelity and protocol variants",
        "",
        protocol.fidelity_caption(inputs.fidelity["metric0"])
        + f"; {doc('fidelity.md', 'fidelity score', 'fidelity-score')}.",
        "",
        protocol.fidelity_table(inputs.fidelity),
        "",
        *protocol.family_fidelity_lines(inputs.fidelity),
        "",
        "Every protocol variant run so far, scored on the study's 64 random-initialisation "
        "rates (4 backbones x 4 tables x 4 windows, where both have them), under both "
        "readings of Metric[0]:",
        "",
        protocol.variants_table(inputs.fidelity, variants),
        "",
        *[f"- {note}" for note in protocol.variant_notes(variants)],
        "",
        *_disagreements(inputs),
    ]


def _disagreements(inputs: Inputs) -> list[str]:
    found = protocol.disagreements(inputs.study, inputs.fidelity, inputs.paper)
    if not found:
        return []
    return ["Where this run still disagrees with the study:", "", *[f"- {d}" for d in found], ""]


def tables_appendix(inputs: Inputs) -> list[str]:
    return text_section(
        "## Appendix D: the study's Tables 2-5 beside this project's",
        "The study's values from `reference/paper_tables.csv` (read by OCR; Table 5's garbled "
        "vggface/pretrained row: the more legible reading). Metric[0] here: "
        f"`{inputs.fidelity['metric0']}`. Ours: mean ± half-width across {inputs.seeds}.",
        report_tables.side_by_side(inputs.study, inputs.paper),
    )


def speed_appendix(inputs: Inputs) -> list[str]:
    """Everything that depends on timings: the speed table, the Pareto front, a speed pick
    beyond the noise and the accuracy-vs-speed figure."""
    return [
        *text_section(
            SPEED_HEADING,
            "Measured on the machine that ran the pipeline, first seed of each run. Timings "
            f"vary between measurements, so speeds within {100 * (FASTER_BY - 1):.0f} % are "
            "not told apart; everything else is identical on a rerun with the same seeds "
            f"({doc('performance.md')}).",
            report_tables.speed_table(inputs.results),
        ),
        *[f"- {line}" for line in speed_choice(inputs.results)],
        "",
        *inputs.figures.take(["accuracy_vs_speed"], f"Speed: {doc('performance.md')}."),
    ]


def outside_appendix(inputs: Inputs) -> list[str]:
    """fer's model and every run on the PrivateTest rows of the study's test split: another
    image set than the ranking's, hence another accuracy for fer's model."""
    if not inputs.outside:
        return []
    return [
        "## Appendix F: PrivateTest rows of the study's test split",
        "",
        "A different image set from the ranking's: `fer`'s model on the PrivateTest rows of "
        "the study's test split only, each run on those of its own test set. Wilson: the "
        f"images' sampling; `across seeds`: the seeds' t interval ({doc('fer-baseline.md')}).",
        "",
        report_tables.outside_table(inputs.results, inputs.outside),
        "",
    ]


MAIN: tuple[Section, ...] = (
    findings_section,
    runs_section,
    real_pairs_section,
    ranking_section,
    pretrained_section,
    heads_section,
    per_emotion_section,
)
APPENDICES: tuple[Section, ...] = (
    all_pairs_appendix,
    health_appendix,
    fidelity_appendix,
    tables_appendix,
    speed_appendix,
    outside_appendix,
)


def other_figures_appendix(inputs: Inputs) -> list[str]:
    """Figures no section took (none unless a new figure has no section yet)."""
    rest = inputs.figures.rest()
    return ["## Appendix G: other figures", "", *rest] if rest else []


def _headings(sections: list[list[str]]) -> list[str]:
    return [line for lines in sections for line in lines if line.startswith("## ")]


def markdown_report(
    results: dict[str, dict[str, Any]],
    paper: dict[tuple, float],
    fidelity: dict[str, Any],
    drawn: list[tuple[str, Path]],
    with_examples: bool,
    comparisons: dict[str, dict[str, Any]],
    outside: dict[str, Any] | None = None,
    heads: dict[str, dict[str, dict[str, Any]]] | None = None,
    ranking: dict[str, Any] | None = None,
    shipped: dict[str, Any] | None = None,
) -> str:
    """The whole report as Markdown (the drawn figures as ``{{IMG:path}}`` placeholders)."""
    inputs = Inputs(
        results,
        paper,
        fidelity,
        comparisons,
        Figures(drawn, with_examples),
        outside,
        heads,
        ranking,
        shipped,
    )
    main = [section(inputs) for section in MAIN]
    appendices = [section(inputs) for section in APPENDICES]
    appendices.append(other_figures_appendix(inputs))
    top = summary(inputs, _headings(main), _headings(appendices))
    text = "\n".join(line for lines in [top, *main, *appendices] for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text)  # one blank line between blocks
