"""The aggregate stage on hand-made per-seed outputs: means, intervals and paired comparisons
computed independently here, and the pretrained-features reuse across seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import t as scipy_t
from statsmodels.stats.multitest import multipletests

from ferstudy import aggregate as A
from ferstudy import features as F
from ferstudy import params as P
from ferstudy.io import save_npz, write_json
from ferstudy.stats import paired_difference

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
        run_id = P.run_id(run, seed)
        write_json(P.study_file(run_id), _study(seed))
        accuracy = float(right.mean())
        write_json(
            P.eval_file(run_id),
            {"accuracy": accuracy, "macro_f1": accuracy / 2, "privatetest": {"images": 0}},
        )
        labels = LABELS[rows]
        predicted = np.where(right, labels, (labels + 1) % 7)
        save_npz(
            P.eval_dir(run_id) / "test_probabilities.npz",
            rows=rows,
            probabilities=np.eye(7, dtype=np.float32)[predicted],
        )


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_npz(P.DATASET_FILE, labels=LABELS)
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
    result = A.run(params)
    agg = json.loads(P.aggregate_file("onet-pretrained").read_text())
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


def test_every_pair_is_compared_paired_on_shared_images_best_first(outputs):
    params, strong, weak = outputs
    pairs = A.run(params)["comparisons"]
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
    saved = json.loads(A.COMPARISONS_FILE.read_text())
    assert saved == json.loads(json.dumps(pairs))
    table = A.TABLES_FILE.read_text()
    assert "| onet-pretrained vs onet-random | 300 | 3 |" in table and "| yes | yes |" in table
    assert "| not distinguishable | no |" in table


def test_seeds_scored_on_different_images_are_refused(outputs):
    params, *_ = outputs
    run_id = P.run_id("onet-random", 2)
    save_npz(
        P.eval_dir(run_id) / "test_probabilities.npz",
        rows=np.arange(1, 301),
        probabilities=np.zeros((300, 7), np.float32),
    )
    with pytest.raises(Exception, match="seeds were scored on different test images"):
        A.run(params)


def test_pretrained_features_are_reused_only_for_the_same_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    P.DATASET_FILE.parent.mkdir(parents=True)
    P.DATASET_FILE.write_bytes(b"dataset")
    P.SPLIT_FILE.write_bytes(b"split")
    settings = {"backbone": "onet", "precision": "fp32"}
    recipe = F.recipe_digest(settings)
    assert F.recipe_digest(settings) == recipe  # deterministic
    assert F.recipe_digest({**settings, "precision": "bf16"}) != recipe
    sibling = P.features_dir(P.run_id("onet-pretrained", 42))
    write_json(sibling / F.META, {"recipe": recipe})
    here = P.features_dir(P.run_id("onet-pretrained", 43))
    assert F.reusable_sibling("onet-pretrained", recipe, here) == sibling
    assert F.reusable_sibling("onet-pretrained", recipe, sibling) is None  # not itself
    assert F.reusable_sibling("onet-pretrained", "other", here) is None
    P.DATASET_FILE.write_bytes(b"another dataset")  # the data changed: a new recipe
    assert F.reusable_sibling("onet-pretrained", F.recipe_digest(settings), here) is None


def test_recipe_modules_are_the_features_stages_code_deps():
    """A pretrained seed reuses a sibling's features only if the code that computed them is
    the same: the recipe must hash every code file DVC reruns the features stage for."""
    import yaml

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    deps = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["features"]["deps"]
    code = {d.removeprefix("src/ferstudy/") for d in deps if d.startswith("src/ferstudy/")}
    assert code == set(F.RECIPE_MODULES)


def test_mean_record_averages_numbers_lists_and_arrays():
    from ferstudy.report import mean_record

    records = [
        {"a": 1, "b": [1.0, 2.0], "c": np.array([0.0, 2.0]), "d": "x", "e": True, "f": None},
        {"a": 3, "b": [3.0, 4.0], "c": np.array([2.0, 4.0]), "d": "y", "e": False, "f": None},
    ]
    mean = mean_record(records)
    assert mean["a"] == 2.0 and mean["b"] == [2.0, 3.0]
    np.testing.assert_array_equal(mean["c"], [1.0, 3.0])
    assert (mean["d"], mean["e"], mean["f"]) == ("x", True, None)
    assert mean_record([{"g": np.float32(1.0)}, {"g": np.float32(2.0)}])["g"] == 1.5
