"""Stage ``report``: the page researchers read, assembled from the pipeline's outputs.

Writes the figures under ``plots/`` (:mod:`ferstudy.reporting.figures`) and two reports under
``reports/``: ``report.md`` (no dataset images: safe to commit, shown in the README) and
``report.html`` (:mod:`ferstudy.reporting.html`), one self-contained page with every figure
embedded, including ``plots/examples.png`` (one FER2013 test image per emotion beside each
run's predicted probabilities, the study's Figs 11-17), which shows dataset pixels and
therefore stays in the DVC cache, not in git. Tables: :mod:`ferstudy.reporting.tables`;
conclusions: :mod:`ferstudy.analysis.findings`. Every run is read across its seeds: numbers are seed
means with a 95 % interval, and a difference is claimed only where its interval excludes 0.

The page answers first (:mod:`ferstudy.reporting.markdown`): a summary of a few lines, the
findings and the backbone choice, the table of every run, the differences that are real, then
one section per topic with its own figures, and the appendices last.

Fine-tuned runs (``<run>-finetune``) appear where they compare like any model: the ranking on
FER2013's PrivateTest (``metrics/ranking.json``), the runs table (marked fine-tuned), the
pairwise comparisons, per-emotion F1, speed, the backbone choice and the confusion matrices,
plus a curves figure of their own. The sections about the study itself (feature health, the
study's tables and fidelity, pretrained against random, curves per backbone) keep to the
study's runs: a fine-tuned run has no cached features and no counterpart in the paper.

The report reads metrics, never the saved models: a run's data scale is the number of test
images each seed's evaluation counted, its precision the one its speed was timed at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferstudy.analysis.fidelity import load_paper_tables
from ferstudy.analysis.findings import findings
from ferstudy.analysis.ranking import compare_with_dense, seed_test_probabilities
from ferstudy.analysis.rates import read_curves
from ferstudy.analysis.results import (
    common_curves,
    common_study,
    finetuned_runs,
    mean_record,
    study_runs,
)
from ferstudy.core import paths
from ferstudy.core.files import load_dataset, read_json, write_text
from ferstudy.core.params import Params
from ferstudy.core.paths import (
    COMPARISONS_FILE,
    EXAMPLES,
    FIDELITY_FILE,
    OUTSIDE_FILE,
    RANKING_FILE,
    REPORTS_DIR,
    health_file,
)
from ferstudy.reporting import figures
from ferstudy.reporting.html import markdown_to_html
from ferstudy.reporting.markdown import _img_md, _seeds_text, markdown_report


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
    ``aggregate`` the aggregate stage's intervals; speed is the first seed's, feature health
    too, flagged degenerate when any seed's features are; ``test_images`` the distinct counts
    of test images its seeds were scored on. A fine-tuned run (``finetune`` true) has no
    feature health (None); its seeds may have stopped at different epochs, so ``study`` and
    ``curves`` average only the windows and epochs every seed has."""
    results = {}
    for run in runs:
        backbone, init = paths.parse_run_name(run)
        tuned = paths.is_finetune(run)
        ids = [paths.run_id(run, seed) for seed in seeds]
        studies = [read_json(paths.study_file(i)) for i in ids]
        evals = [read_json(paths.eval_file(i)) for i in ids]
        rows, probabilities = seed_test_probabilities(run, seeds)
        curves = [read_curves(paths.live_dir(i)) for i in ids]
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
            "aggregate": read_json(paths.aggregate_file(run)),
            "speed": read_json(paths.speed_file(ids[0])),
            "test_images": sorted({e["test_images"] for e in evals}),
            "health": None if tuned else _health(ids),
            "test_rows": rows,
            "test_probabilities": probabilities.mean(axis=0),
        }
    return results


def draw_figures(results: dict[str, dict[str, Any]], dataset) -> list[tuple[str, Path]]:
    """Every figure of the report, as (title, path). Curves per backbone, test accuracy,
    initial accuracy and loss and the example images: the study's runs; the fine-tuned runs
    get a curves figure of their own, and join the confusion matrices and accuracy vs speed."""
    plots = paths.PLOTS_DIR / "figures"
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
            figures.plot_examples(study, dataset, paths.PLOTS_DIR / EXAMPLES),
        )
    )
    return drawn


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``report`` stage."""
    runs = params.all_runs
    results = load_results(runs, params.seeds)
    paper = load_paper_tables()
    fidelity = read_json(FIDELITY_FILE)
    comparisons = read_json(COMPARISONS_FILE)
    outside = read_json(OUTSIDE_FILE) if OUTSIDE_FILE.is_file() else None
    ranking = read_json(RANKING_FILE) if RANKING_FILE.is_file() else None
    shipped = read_json(paths.EXPORT_FILE) if params.export.runs else None
    dataset = load_dataset(paths.DATASET_FILE)
    drawn = draw_figures(results, dataset)
    labels = dataset.labels
    heads = {
        name: compare_with_dense(name, params.seeds, params.heads.kinds, labels)
        for name in params.heads.runs
        if name in results
    }
    args = (results, paper, fidelity, drawn)
    extra = (comparisons, outside, heads, ranking, shipped)
    md = markdown_report(*args, False, *extra)
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
        markdown_to_html(markdown_report(*args, True, *extra)),
    )
    return {"figures": [str(p) for _, p in drawn], "findings": findings(results, comparisons)}


def describe(result: dict[str, Any]) -> str:
    findings = "\n".join(f"- {f}" for f in result["findings"])
    pages = f"{paths.REPORTS_DIR / 'report.html'} and {paths.REPORTS_DIR / 'report.md'}"
    return f"{findings}\nreport: {pages}"
