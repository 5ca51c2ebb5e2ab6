"""A fine-tuned run through the metrics, aggregate and report stages, on generated outputs:
no feature-health file, seeds that stopped at different epochs, a test set of its own
(every PrivateTest image), ranked against fer's model and kept out of the study's sections.
No saved model either: the report reads the metrics, never the models folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import params_of, synthetic_images, write_log

from ferstudy.analysis.ranking import FER_NAME, PUBLISHED
from ferstudy.core import paths
from ferstudy.core.files import Dataset, read_json, save_dataset, save_npz, write_json
from ferstudy.core.paths import OUTSIDE_PROBABILITIES, health_file
from ferstudy.stages import aggregate, metrics, report
from ferstudy.stages.evaluate import privatetest_scores, scores

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [1, 2]
TUNED = "onet-pretrained-finetune"
HEALTH = {
    "batchnorm_recalibrated_on": 0,
    "frozen_batchnorm_layers": 0,
    "rms": 1.0,
    "across_image_std": 0.5,
    "relative_std": 0.5,
    "constant_fraction": 0.0,
    "top1_variance": 0.2,
    "top10_variance": 0.6,
    "degenerate": False,
    "reason": None,
}


def write_run(run, rows, accuracy, epochs, dataset, rng, health=True) -> None:
    """Every file the train/finetune and evaluate stages write for one run, per seed."""
    for seed, n in zip(SEEDS, epochs):
        run_id = paths.run_id(run, seed)
        truth = dataset.labels[rows]
        predicted = np.where(rng.random(len(rows)) < accuracy, truth, (truth + 1) % 7)
        probabilities = np.full((len(rows), 7), 0.02, np.float32)
        probabilities[np.arange(len(rows)), predicted] = 0.88
        save_npz(
            paths.eval_dir(run_id) / "test_probabilities.npz",
            rows=rows,
            probabilities=probabilities,
        )
        result = scores(truth, predicted)
        result["test_images"] = len(rows)
        result["privatetest"] = privatetest_scores(dataset.usage[rows], truth, predicted)
        write_json(paths.eval_file(run_id), result)
        write_json(
            paths.speed_file(run_id),
            {
                "parameters": 400_000,
                "trainable_parameters": 400_000 if paths.is_finetune(run) else 9_000,
                "size_mb": 1.6,
                "ms_per_image_batch1": 2.0,
                "images_per_second_batch64": 3000.0 if paths.is_finetune(run) else 2500.0,
                "device": "cpu",
                "precision": "fp32",
            },
        )
        up = np.linspace(0.15, accuracy, n + 1) + rng.normal(0, 0.01, n + 1)
        write_log(
            paths.live_dir(run_id),
            {
                "train/accuracy": up,
                "val/accuracy": up - 0.05,
                "train/loss": 2 - up,
                "val/loss": 2.1 - up,
            },
        )
        if health:
            write_json(health_file(run_id), HEALTH)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return generated_project(tmp_path_factory.mktemp("report-finetune"))


def generated_project(folder: Path) -> tuple[Path, dict]:
    """Two study runs (a 1-in-3 test split: 12 of its 47 rows are PrivateTest), one
    fine-tuned run (every PrivateTest image: 35; its seeds stopped at 6 and 4 epochs), fer's
    probabilities; then the metrics, aggregate and report stages, in ``folder``."""
    shutil.copytree(ROOT / "reference", folder / "reference")
    shutil.rmtree(folder / "reference" / "protocol_variants", ignore_errors=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        images, labels = synthetic_images(per_class=20)
        usage = np.array(["PrivateTest", "PublicTest", "Training", "Training"] * 35)
        dataset = Dataset(images, labels, np.array([str(i) for i in range(140)]), usage)
        save_dataset(paths.DATASET_FILE, dataset)
        rng = np.random.default_rng(0)
        test_rows = np.arange(0, 140, 3)
        private = np.flatnonzero(usage == "PrivateTest")
        write_run("onet-pretrained", test_rows, 0.6, (4, 4), dataset, rng)
        write_run("onet-random", test_rows, 0.4, (4, 4), dataset, rng)
        write_run(TUNED, private, 0.95, (6, 4), dataset, rng, health=False)
        fer_rows = np.union1d(test_rows, private)
        fer_answer = np.where(rng.random(len(fer_rows)) < 0.2, labels[fer_rows], 0)
        save_npz(
            OUTSIDE_PROBABILITIES,
            rows=fer_rows,
            probabilities=np.eye(7, dtype=np.float32)[fer_answer],
        )
        params = {
            "runs": ["onet-pretrained", "onet-random"],
            "seeds": SEEDS,
            "window": 2,
            "heads": {"runs": [], "kinds": ["logistic"]},
            "finetune": {"runs": ["onet-pretrained"]},
        }
        params = params_of(params)
        metrics.run(params)
        aggregate.run(params)
        info = report.run(params)
    return folder, info


def section(text: str, heading: str) -> str:
    """The Markdown from ``heading`` to the next second-level heading."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else None]


def test_the_ranking_section_follows_the_main_results_and_says_what_each_row_is_scored_on(
    project,
):
    folder, _ = project
    md = (folder / "reports" / "report.md").read_text()
    order = [
        "## Findings",
        "## Results of every run",
        "## Differences that are real",
        "## Ranking on FER2013's PrivateTest",
        "## Appendix A: every pair of runs",
    ]
    assert [md.index(h) for h in order] == sorted(md.index(h) for h in order)
    assert not (folder / "models").exists()  # the report never needed a saved model
    ranking = section(md, "## Ranking on FER2013's PrivateTest")
    assert "published rows are quoted, not measured here" in ranking
    assert "A study run is scored on the PrivateTest rows of its test split only" in ranking
    assert "`minus fer` is paired on the images both scored" in ranking
    assert "(../docs/fer-baseline.md)" in ranking
    rows = [line for line in ranking.splitlines() if line.startswith("| ")][1:]
    names = [line.split(" | ")[1] for line in rows]
    assert names[0] == f"{TUNED} (fine-tuned)"  # 0.95 on its 35 images: first
    assert set(names) == {
        f"{TUNED} (fine-tuned)",
        "onet-pretrained",
        "onet-random",
        FER_NAME,
        *(f"{p['name']} (published)" for p in PUBLISHED),
    }
    cells = {line.split(" | ")[1]: line.split(" | ") for line in rows}
    assert cells[f"{TUNED} (fine-tuned)"][2:3] == ["all of PrivateTest"]
    assert cells[f"{TUNED} (fine-tuned)"][5] == "35"
    assert cells["onet-pretrained"][2] == "PrivateTest rows of its test split"
    assert cells["onet-pretrained"][5] == "12"
    assert cells[FER_NAME][5] == "35"
    for published in PUBLISHED:
        assert f"{published['accuracy']:.4f}" in " ".join(cells[f"{published['name']} (published)"])
    html = (folder / "reports" / "report.html").read_text()
    start = html.index('<h2 id="ranking-on-fer2013s-privatetest">')
    top = html[start : html.index("<h2", start + 1)]
    assert '<td class="l real"><b>real</b></td>' in top  # fine-tuned minus fer: highlighted


def test_the_finetuned_run_is_marked_compared_and_drawn(project):
    folder, info = project
    md = (folder / "reports" / "report.md").read_text()
    runs = section(md, "## Results of every run")
    (line,) = [x for x in runs.splitlines() if x.startswith(f"| {TUNED} |")]
    assert line.startswith(f"| {TUNED} | **fine-tuned** | 2 | 6/4 (")  # epochs per seed
    assert "| onet-pretrained | frozen | 2 | 4/4 (" in runs
    scored = {
        read_json(folder / paths.eval_file(paths.run_id(TUNED, s)))["test_images"] for s in SEEDS
    }
    # the test images its seeds were scored on; precision: its speed's
    assert line.split(" | ")[4:6] == [", ".join(f"{n:,}" for n in sorted(scored)), "fp32"]
    assert TUNED in section(md, "## Differences that are real")
    assert TUNED in section(md, "## Appendix A: every pair of runs")
    assert TUNED in section(md, "## Test F1 per emotion")
    assert f"| {TUNED} |" in section(md, "## Appendix E: speed")
    assert any(f.startswith(f"Fine-tuning end to end ({TUNED})") for f in info["findings"])
    figures = folder / "plots" / "figures"
    for name in ("curves_finetune.png", f"confusion_{TUNED}.png", "curves_onet.png"):
        assert (figures / name).stat().st_size > 10_000, name
    assert "Fine-tuned runs: curves" in md


def test_the_study_sections_keep_to_the_study_runs(project):
    folder, _ = project
    md = (folder / "reports" / "report.md").read_text()
    for heading in (
        "## Appendix B: feature health",  # no health file for the fine-tuned run: none asked for
        "## Appendix C: fidelity and protocol variants",
        "## Appendix D: the study's Tables 2-5 beside this project's",
    ):
        assert "finetune" not in section(md, heading), heading
    health = section(md, "## Appendix B: feature health")
    assert "| onet-pretrained |" in health and "| onet-random |" in health
    study = section(md, "## Pretrained against random, and the training curves")
    assert "**onet: pretrained against random**" in study
    assert not (folder / health_file(paths.run_id(TUNED, 1))).exists()
