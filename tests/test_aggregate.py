"""The aggregate stage on hand-made per-seed outputs: means, intervals and paired comparisons
computed independently here, and the pretrained-features reuse across seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import params_of
from scipy.stats import t as scipy_t
from statsmodels.stats.multitest import multipletests

from ferstudy.analysis import ranking
from ferstudy.analysis.headline import headline, summary
from ferstudy.analysis.stats import paired_difference
from ferstudy.core import paths
from ferstudy.core.files import save_npz, write_json
from ferstudy.stages import aggregate as A

SEEDS = [1, 2, 3]
WINDOWS = ("1-5", "6-10")
LABELS = np.random.default_rng(0).integers(0, 7, 300)


def _study(k: float) -> dict:
    rates = {m: {w: 0.01 * k + i for i, w in enumerate(WINDOWS)} for m in ("accuracy", "loss")}
    return {
        "MCR": rates,
        "MOFR": rates,
        "initial": {"val_accuracy": 0.3 + k / 100, "val_loss": 1.8 - k / 100},
        "final_val_accuracy": 0.4 + k / 100,
        "best_val_accuracy": 0.45 + k / 100,
    }


def _write_run(run: str, correct: np.ndarray, rows: np.ndarray) -> None:
    """Per seed: the study record, the eval record and test probabilities that are right
    exactly where ``correct`` says."""
    for seed, right in zip(SEEDS, correct):
        run_id = paths.run_id(run, seed)
        write_json(paths.study_file(run_id), _study(seed))
        accuracy = float(right.mean())
        write_json(
            paths.eval_file(run_id),
            {"accuracy": accuracy, "macro_f1": accuracy / 2, "privatetest": {"images": 0}},
        )
        write_json(paths.speed_file(run_id), {"images_per_second_batch64": 100.0 + seed})
        labels = LABELS[rows]
        predicted = np.where(right, labels, (labels + 1) % 7)
        save_npz(
            paths.eval_dir(run_id) / "test_probabilities.npz",
            rows=rows,
            probabilities=np.eye(7, dtype=np.float32)[predicted],
        )


#: Every third row is a PrivateTest image (100 of the 300).
USAGE = np.where(np.arange(300) % 3 == 0, "PrivateTest", "Training")


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_npz(paths.DATASET_FILE, labels=LABELS, usage=USAGE)
    rng = np.random.default_rng(1)
    strong = rng.random((3, 300)) < 0.7
    weak = rng.random((3, 300)) < 0.4
    subset = np.arange(0, 300, 2)  # a fraction run: every other test image
    _write_run("onet-pretrained", strong, np.arange(300))
    _write_run("onet-random", weak, np.arange(300))
    _write_run("mobilenet-random", weak[:, ::2], subset)
    params = {"runs": ["onet-random", "onet-pretrained", "mobilenet-random"], "seeds": SEEDS}
    return params, strong, weak


def test_aggregates_are_the_seeds_mean_sd_and_t_interval(outputs):
    params, strong, _ = outputs
    result = A.run(params_of(params))
    agg = json.loads(paths.aggregate_file("onet-pretrained").read_text())
    assert agg == json.loads(json.dumps(result["aggregates"]["onet-pretrained"]))
    accuracies = strong.mean(axis=1)
    half = scipy_t.ppf(0.975, 2) * accuracies.std(ddof=1) / np.sqrt(3)
    test = agg["test_accuracy"]
    assert (agg["n"], agg["seeds"]) == (3, SEEDS)
    assert test["mean"] == pytest.approx(accuracies.mean())
    assert test["sd"] == pytest.approx(accuracies.std(ddof=1))
    assert test["half_width"] == pytest.approx(half)
    assert test["low"] == pytest.approx(accuracies.mean() - half)
    initial = agg["initial_val_accuracy"]  # 0.31, 0.32, 0.33
    assert initial["mean"] == pytest.approx(0.32) and initial["sd"] == pytest.approx(0.01)
    assert agg["MCR"]["accuracy"]["6-10"]["mean"] == pytest.approx(1.02)
    assert "privatetest_accuracy" not in agg  # no PrivateTest image: no such measure
    top = json.loads((paths.HEADLINE_DIR / "onet-pretrained.json").read_text())
    assert top["test_acc"] == round(accuracies.mean(), 4)
    assert top["test_acc_hw"] == round(half, 4) and top["private_acc"] is None
    assert top["img_per_s"] == 102  # mean of 101, 102, 103 images per second
    assert sorted(p.stem for p in paths.HEADLINE_DIR.iterdir()) == sorted(params["runs"])
    headlines = {
        run: json.loads((paths.HEADLINE_DIR / f"{run}.json").read_text()) for run in params["runs"]
    }
    written = json.loads(paths.SUMMARY_FILE.read_text())
    assert written["best_acc"] == max(h["test_acc"] for h in headlines.values())
    mean = sum(h["test_acc"] for h in headlines.values()) / len(headlines)
    assert written["mean_acc"] == round(mean, 4)


def test_every_pair_is_compared_paired_on_shared_images_best_first(outputs):
    params, strong, weak = outputs
    pairs = A.run(params_of(params))["comparisons"]
    assert set(pairs) == {
        "onet-pretrained vs onet-random",
        "onet-pretrained vs mobilenet-random",
        "onet-random vs mobilenet-random",  # a tie (the same answers): in the runs' order
    }
    differences = [c["difference"] for c in pairs.values()]
    assert differences == sorted(differences, reverse=True) and min(differences) >= 0
    p_values = [c["p_value"] for c in pairs.values()]
    assert [c["p_holm"] for c in pairs.values()] == pytest.approx(
        list(multipletests(p_values, method="holm")[1])
    )
    expected = paired_difference(strong, weak).as_dict()
    got = pairs["onet-pretrained vs onet-random"]
    assert got["difference"] == pytest.approx(expected["difference"])
    assert (got["low"], got["high"]) == (
        pytest.approx(expected["low"]),
        pytest.approx(expected["high"]),
    )
    assert got["significant"] and got["seeds"] == 3 and got["images"] == 300
    shared = pairs["onet-random vs mobilenet-random"]  # the same answers on 150 shared images
    assert shared["images"] == 150 and shared["difference"] == 0 and not shared["significant"]
    saved = json.loads(paths.COMPARISONS_FILE.read_text())
    assert saved == json.loads(json.dumps(pairs))
    table = paths.TABLES_FILE.read_text()
    assert "| onet-pretrained vs onet-random | 300 | 3 |" in table and "| yes | yes |" in table
    assert "| not distinguishable | no |" in table


PRIVATE = np.flatnonzero(USAGE == "PrivateTest")


@pytest.fixture
def with_finetune(outputs):
    """The study runs, plus ``onet-pretrained-finetune`` scored on every PrivateTest image
    (its seeds stopped after 12, 10 and 15 epochs) and fer's model's probabilities."""
    params, strong, weak = outputs
    rng = np.random.default_rng(2)
    tuned = rng.random((3, len(PRIVATE))) < 0.85
    _write_run("onet-pretrained-finetune", tuned, PRIVATE)
    for seed, last in zip(SEEDS, ("11-12", "6-10", "11-15")):  # early stopping: unequal
        run_id = paths.run_id("onet-pretrained-finetune", seed)
        study = _study(seed)
        for rate in ("MCR", "MOFR"):
            for metric in ("accuracy", "loss"):
                if last != "6-10":
                    study[rate][metric][last] = 0.5
        write_json(paths.study_file(run_id), study)
    fer_right = rng.random(300) < 0.55
    save_npz(
        paths.OUTSIDE_PROBABILITIES,
        rows=np.arange(300),
        probabilities=np.eye(7, dtype=np.float32)[np.where(fer_right, LABELS, (LABELS + 1) % 7)],
    )
    return {**params, "finetune": {"runs": ["onet-pretrained"]}}, strong, tuned, fer_right


def test_versus_a_fixed_model_counts_the_runs_seeds_and_the_images():
    """fer is one fixed model: replicated over the run's seeds, it adds no seed variance; the
    interval is Student t over the run's seed spread plus the image bootstrap."""
    rng = np.random.default_rng(5)
    run = rng.random((3, 400)) < np.array([[0.60], [0.66], [0.72]])  # seeds that differ
    fixed = rng.random(400) < 0.5
    d = ranking.versus_fixed(run, fixed)
    per_seed = run.mean(axis=1)
    assert d.difference == pytest.approx(per_seed.mean() - fixed.mean())
    seed_var = per_seed.var(ddof=1) / 3  # the run's alone: the fixed side contributes 0
    assert d.seed_se == pytest.approx(np.sqrt(seed_var))
    delta = run.mean(axis=0) - fixed  # the image part, bootstrapped independently here
    resampled = delta[np.random.default_rng(9).integers(0, 400, (4000, 400))].mean(axis=1)
    assert d.image_se == pytest.approx(resampled.std(ddof=1), rel=0.1)
    se = np.sqrt(seed_var + d.image_se**2)
    df = se**4 / (seed_var**2 / 2)
    assert d.df == pytest.approx(df)
    half = scipy_t.ppf(0.975, df) * se
    assert (d.low, d.high) == (
        pytest.approx(d.difference - half),
        pytest.approx(d.difference + half),
    )
    assert half > 1.96 * d.image_se  # wider than the images alone would make it
    same = ranking.versus_fixed(np.tile(run[0], (3, 1)), fixed)  # seeds that agree: images only
    assert same.seed_se == 0 and same.df is None
    one = ranking.versus_fixed(run[:1], fixed)  # one seed: paired bootstrap and McNemar
    expected = paired_difference(run[0], fixed)
    assert (one.p_value, one.low, one.high) == (expected.p_value, expected.low, expected.high)


def test_ranking_on_privatetest_with_fer_and_published_figures(with_finetune):
    from statsmodels.stats.proportion import proportion_confint

    params, strong, tuned, fer_right = with_finetune
    result = A.run(params_of(params))
    rank = json.loads(paths.RANKING_FILE.read_text())
    assert rank == json.loads(json.dumps(result["ranking"]))
    accuracies = [e["accuracy"] for e in rank["rows"]]
    assert accuracies == sorted(accuracies, reverse=True)
    rows = {e["name"]: e for e in rank["rows"]}
    runs = ["onet-random", "onet-pretrained", "mobilenet-random", "onet-pretrained-finetune"]
    assert set(rows) == {*runs, ranking.FER_NAME, *(p["name"] for p in ranking.PUBLISHED)}
    assert rank["privatetest_images"] == 100 and rank["not_ranked"] == {}
    finetuned = rows["onet-pretrained-finetune"]
    assert (finetuned["mode"], finetuned["images"], finetuned["seeds"]) == ("fine-tuned", 100, 3)
    assert finetuned["scored_on"] == "all of PrivateTest"
    assert finetuned["accuracy"] == pytest.approx(tuned.mean())
    study = rows["onet-pretrained"]  # its test set: all 300 rows, 100 of them PrivateTest
    assert study["mode"] == "frozen" and study["images"] == 100
    assert study["accuracy"] == pytest.approx(strong[:, PRIVATE].mean())
    assert study["across_seeds"]["mean"] == pytest.approx(strong[:, PRIVATE].mean())
    subset = rows["mobilenet-random"]  # every other row: 50 PrivateTest images
    assert subset["images"] == 50
    assert subset["scored_on"] == "PrivateTest rows of its test split"
    expected = ranking.versus_fixed(strong[:, PRIVATE], fer_right[PRIVATE]).as_dict()
    for key in ("difference", "low", "high", "p_value", "seed_se", "image_se"):
        assert study["minus_fer"][key] == pytest.approx(expected[key]), key
    p_values = [rows[r]["minus_fer"]["p_value"] for r in runs]
    holm_expected = multipletests(p_values, method="holm")[1]
    assert [rows[r]["minus_fer"]["p_holm"] for r in runs] == pytest.approx(list(holm_expected))
    assert finetuned["minus_fer"]["significant"] and finetuned["minus_fer"]["significant_holm"]
    fer = rows[ranking.FER_NAME]  # every PrivateTest image, a Wilson interval over the images
    right = int(fer_right[PRIVATE].sum())
    assert (fer["images"], fer["seeds"], fer["minus_fer"]) == (100, None, None)
    assert fer["accuracy"] == pytest.approx(right / 100)
    assert (fer["low"], fer["high"]) == pytest.approx(
        proportion_confint(right, 100, method="wilson")
    )
    for published in ranking.PUBLISHED:  # quoted, not measured: flagged, no interval
        row = rows[published["name"]]
        assert row["measured_here"] is False and row["low"] is None
        assert row["accuracy"] == published["accuracy"] and row["images"] == 3589
    assert {p["accuracy"] for p in ranking.PUBLISHED} == {0.7328, 0.7414}
    table = paths.TABLES_FILE.read_text()
    assert "| onet-pretrained-finetune (fine-tuned) | all of PrivateTest | " in table
    assert "arXiv:2105.03588" in table and "10.1109/ICPR48806.2021.9411919" in table


def test_finetuned_runs_are_aggregated_and_compared_on_shared_images(with_finetune):
    params, strong, tuned, _ = with_finetune
    result = A.run(params_of(params))
    agg = json.loads(paths.aggregate_file("onet-pretrained-finetune").read_text())
    assert agg["test_accuracy"]["mean"] == pytest.approx(tuned.mean(axis=1).mean())
    # seeds that stopped at 12, 10 and 15 epochs: only the windows all three have
    assert list(agg["MCR"]["accuracy"]) == ["1-5", "6-10"]
    pairs = result["comparisons"]
    assert len(pairs) == 6  # 4 runs, every pair shares PrivateTest images
    both = {"onet-pretrained", "onet-pretrained-finetune"}
    (name,) = [n for n, c in pairs.items() if {c["a"], c["b"]} == both]
    assert pairs[name]["images"] == 100 and pairs[name]["seeds"] == 3
    expected = paired_difference(tuned, strong[:, PRIVATE])
    assert pairs[name]["difference"] == pytest.approx(abs(expected.difference))


def test_pairs_sharing_fewer_than_two_images_are_listed_not_compared(outputs):
    params, _, weak = outputs
    rows = np.r_[0, np.arange(1, 300, 2)]  # odd rows and row 0: one image shared, too few
    _write_run("mobilenet-random-finetune", np.c_[weak[:, :1], weak[:, 1::2]], rows)
    params = {**params, "finetune": {"runs": ["mobilenet-random"]}}
    pairs = A.run(params_of(params))["comparisons"]
    apart = {"mobilenet-random", "mobilenet-random-finetune"}
    assert all({c["a"], c["b"]} != apart for c in pairs.values()) and len(pairs) == 5
    assert (
        "- mobilenet-random and mobilenet-random-finetune: fewer than 2 shared test images, "
        "not compared." in paths.TABLES_FILE.read_text()
    )


def test_seeds_scored_on_different_images_are_refused(outputs):
    params, *_ = outputs
    run_id = paths.run_id("onet-random", 2)
    save_npz(
        paths.eval_dir(run_id) / "test_probabilities.npz",
        rows=np.arange(1, 301),
        probabilities=np.zeros((300, 7), np.float32),
    )
    with pytest.raises(Exception, match="seeds were scored on different test images"):
        A.run(params_of(params))


def test_mean_record_averages_numbers_lists_and_arrays():
    from ferstudy.analysis.results import mean_record

    records = [
        {"a": 1, "b": [1.0, 2.0], "c": np.array([0.0, 2.0]), "d": "x", "e": True, "f": None},
        {"a": 3, "b": [3.0, 4.0], "c": np.array([4.0, 4.0]), "d": "y", "e": False, "f": None},
    ]
    mean = mean_record(records)
    assert mean["a"] == 2.0 and mean["b"] == [2.0, 3.0]
    np.testing.assert_array_equal(mean["c"], [2.0, 3.0])  # per element, across the records
    assert (mean["d"], mean["e"], mean["f"]) == ("x", True, None)
    assert mean_record([{"g": np.float32(1.0)}, {"g": np.float32(2.0)}])["g"] == 1.5


def test_finetuned_pairs_are_their_own_holm_family(monkeypatch):
    """Adding a fine-tuned run leaves the study pairs' Holm-adjusted p values as they were."""
    rng = np.random.default_rng(0)
    labels = np.zeros(400, int)
    right = {
        "a-random": rng.random(400) < 0.60,
        "b-random": rng.random(400) < 0.55,
        "c-random": rng.random(400) < 0.50,
        "a-random-finetune": rng.random(400) < 0.70,
    }
    rows = np.arange(400)
    monkeypatch.setattr(
        ranking, "seed_correctness", lambda run, seeds, labels: (rows, right[run][None])
    )
    study_runs = ["a-random", "b-random", "c-random"]
    study = ranking.comparisons(study_runs, [1], labels)
    both = ranking.comparisons([*study_runs, "a-random-finetune"], [1], labels)
    for name, pair in study.items():
        assert both[name]["p_holm"] == pytest.approx(pair["p_holm"])
        assert both[name]["family"] == "study"
    tuned = [p for p in both.values() if "a-random-finetune" in (p["a"], p["b"])]
    assert len(tuned) == 3 and all(p["family"] == "finetune" for p in tuned)
    raw = sorted(p["p_value"] for p in tuned)
    assert min(p["p_holm"] for p in tuned) == pytest.approx(min(1.0, 3 * raw[0]))


def test_headline_rounds_and_reads_the_first_window():
    summary = {"mean": 0.123456, "half_width": 0.0123456}
    aggregate = {
        "n": 2,
        "test_accuracy": summary,
        "macro_f1": summary,
        "initial_val_accuracy": summary,
        "MCR": {"accuracy": {"6-10": {"mean": 0.5}, "1-5": {"mean": 0.0123456}}},
        "MOFR": {"accuracy": {"11-15": {"mean": 0.5}, "1-5": {"mean": -0.0012345}}},
    }
    speeds = [{"images_per_second_batch64": 1234.0}, {"images_per_second_batch64": 1236.0}]
    h = headline(aggregate, speeds)
    assert (h["test_acc"], h["test_acc_hw"]) == (0.1235, 0.0123)
    assert h["private_acc"] is None  # no PrivateTest images in its test set
    assert (h["mcr_first"], h["mofr_first"]) == (0.01235, -0.00123)
    assert h["img_per_s"] == 1240 and isinstance(h["img_per_s"], int)
    assert headline(aggregate, [{"images_per_second_batch64": 13.44}])["img_per_s"] == 13.4
    assert h == {
        "test_acc": 0.1235,
        "test_acc_hw": 0.0123,
        "macro_f1": 0.1235,
        "macro_f1_hw": 0.0123,
        "private_acc": None,
        "initial_acc": 0.1235,
        "mcr_first": 0.01235,
        "mofr_first": -0.00123,
        "img_per_s": 1240,
    }
    assert headline(aggregate, [])["img_per_s"] is None
    assert headline(aggregate, [{"images_per_second_batch64": 99.94}])["img_per_s"] == 99.9
    for rate, shown in ((100.0, 100), (105.3, 105)):  # three digits and more: an int
        img_per_s = headline(aggregate, [{"images_per_second_batch64": rate}])["img_per_s"]
        assert img_per_s == shown and isinstance(img_per_s, int)
    later = {**aggregate, "MCR": {"accuracy": {"10-12": {"mean": 0.5}, "4-6": {"mean": 0.25}}}}
    assert headline(later, speeds)["mcr_first"] == 0.25  # by the first epoch, not as text
    assert headline({**aggregate, "MCR": {"accuracy": {}}}, speeds)["mcr_first"] is None


def test_summary_is_the_study_runs_mean_and_the_best_of_all():
    headlines = {
        "a-random": {"test_acc": 0.5},
        "b-random": {"test_acc": 0.61234},
        "a-pretrained-finetune": {"test_acc": 0.7},
    }
    assert summary(headlines, ["a-random", "b-random"]) == {"mean_acc": 0.5562, "best_acc": 0.7}
