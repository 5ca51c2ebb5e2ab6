"""ferstudy.analysis.rates and ferstudy.analysis.fidelity on small hand-made inputs: whole
outputs against values worked out here, the boundaries and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import curves_of, write_log

from ferstudy.analysis import fidelity, rates
from ferstudy.core.errors import FerError

ROOT = Path(__file__).resolve().parents[1]

#: The 97.5 % quantile of Student's t with 1 degree of freedom (the Cauchy distribution).
T975_1DF = float(np.tan(np.pi * 0.475))

EMPTY = {"rates": 0, "signs_agree": 0, "sign_agreement": None, "rmse": None}


def _agreement(rates_, agree, share, rmse):
    return {"rates": rates_, "signs_agree": agree, "sign_agreement": share, "rmse": rmse}


def _rmse(*differences):
    return round(float(np.sqrt(np.mean(np.square(differences)))), 6)


def _row(backbone, init, table, epochs, value):
    return {"table": table, "backbone": backbone, "init": init, "epochs": epochs, "value": value}


# 4 epochs; epoch 0's validation accuracy is the highest, epochs 2 and 3 tie for the best
FOUR = curves_of(
    [0.0, 1 / 3, 0.5, 2 / 3, 1.0],
    [6 / 7, 0.2, 4 / 9, 4 / 9, 2 / 7],
    [2.0, 1.5, 1.2, 1.1, 1.0],
    [2.0, 5 / 3, 1.5, 1.55, 1.7],
)


# --------------------------------------------------------------------------- rates.py


def test_constants_name_the_rates_metrics_tables_and_readings():
    assert rates.RATES == ("MCR", "MOFR")
    assert rates.METRICS == ("accuracy", "loss")
    assert rates.TABLES == {
        ("accuracy", "MCR"): 2,
        ("loss", "MCR"): 3,
        ("accuracy", "MOFR"): 4,
        ("loss", "MOFR"): 5,
    }
    assert rates.METRIC0 == ("untrained", "epoch1")


@pytest.mark.parametrize(
    ("epochs", "window", "expected"),
    [
        (1, 1, [(1, 1)]),
        (3, 1, [(1, 1), (2, 2), (3, 3)]),
        (1, 5, [(1, 1)]),
        (4, 10, [(1, 4)]),
        (5, 5, [(1, 5)]),
        (6, 5, [(1, 5), (6, 6)]),
        (10, 5, [(1, 5), (6, 10)]),
        (11, 5, [(1, 5), (6, 10), (11, 11)]),
        (7, 2, [(1, 2), (3, 4), (5, 6), (7, 7)]),
    ],
)
def test_windows_cover_every_epoch_once_with_a_shorter_last_window(epochs, window, expected):
    assert rates.windows(epochs, window) == expected


@pytest.mark.parametrize(("epochs", "window"), [(0, 0), (-1, 3), (3, -1), (0, 1), (1, 0)])
def test_windows_refuse_fewer_than_one_epoch_or_window_length(epochs, window):
    with pytest.raises(FerError) as info:
        rates.windows(epochs, window)
    assert str(info.value) == "epochs and window must be at least 1"


def test_window_label_joins_first_and_last_epoch():
    assert rates.window_label((6, 10)) == "6-10"
    assert rates.window_label((3, 3)) == "3-3"
    assert [rates.window_label(w) for w in rates.windows(7, 3)] == ["1-3", "4-6", "7-7"]


def test_mean_convergence_rate_of_a_middle_a_first_and_a_one_epoch_window():
    train = np.array([0.0, 1.0, 3.0, 6.0, 10.0])  # steps 1, 2, 3, 4
    assert rates.mean_convergence_rate(train, 2, 3) == 2.5
    assert rates.mean_convergence_rate(train, 1, 2) == 1.5
    assert rates.mean_convergence_rate(train, 1, 1) == 1.0
    assert rates.mean_convergence_rate(train, 4, 4) == 4.0
    assert rates.mean_convergence_rate(train, 1, 4) == 2.5
    assert type(rates.mean_convergence_rate(train, 2, 3)) is float


def test_mean_overfitting_rate_is_the_mean_step_of_train_minus_validation():
    train = np.array([0.0, 1.0, 3.0, 6.0, 10.0])
    val = np.array([0.0, 0.5, 1.0, 1.0, 1.0])  # gaps 0, 0.5, 2, 5, 9
    assert rates.mean_overfitting_rate(train, val, 2, 3) == 2.25
    assert rates.mean_overfitting_rate(train, val, 1, 1) == 0.5
    assert rates.mean_overfitting_rate(train, val, 4, 4) == 4.0
    assert rates.mean_overfitting_rate(train, val, 1, 4) == 2.25
    assert type(rates.mean_overfitting_rate(train, val, 1, 1)) is float


def test_with_metric0_untrained_returns_the_curves_themselves():
    assert rates.with_metric0(FOUR, "untrained") is FOUR


def test_with_metric0_epoch1_repeats_epoch_1_in_place_of_epoch_0():
    got = rates.with_metric0(FOUR, "epoch1")
    assert list(got) == ["train/accuracy", "val/accuracy", "train/loss", "val/loss"]
    np.testing.assert_array_equal(got["train/accuracy"], [1 / 3, 1 / 3, 0.5, 2 / 3, 1.0])
    np.testing.assert_array_equal(got["val/accuracy"], [0.2, 0.2, 4 / 9, 4 / 9, 2 / 7])
    np.testing.assert_array_equal(got["train/loss"], [1.5, 1.5, 1.2, 1.1, 1.0])
    np.testing.assert_array_equal(got["val/loss"], [5 / 3, 5 / 3, 1.5, 1.55, 1.7])
    np.testing.assert_array_equal(FOUR["train/accuracy"], [0.0, 1 / 3, 0.5, 2 / 3, 1.0])


@pytest.mark.parametrize("metric0", ["Epoch1", "UNTRAINED", ""])
def test_with_metric0_refuses_an_unknown_reading_naming_the_known_ones(metric0):
    with pytest.raises(FerError) as info:
        rates.with_metric0(FOUR, metric0)
    assert str(info.value) == f"metric0 must be one of untrained, epoch1 (got '{metric0}')"


def test_run_metrics_untrained_reading_in_full():
    result = rates.run_metrics(FOUR, window=3)
    assert result == {
        "metric0": "untrained",
        "MCR": {
            "accuracy": {"1-3": round(2 / 9, 6), "4-4": round(1 / 3, 6)},
            "loss": {"1-3": -0.3, "4-4": -0.1},
        },
        "MOFR": {
            "accuracy": {"1-3": round((2 / 9 + 6 / 7) / 3, 6), "4-4": round(5 / 7 - 2 / 9, 6)},
            "loss": {"1-3": -0.15, "4-4": -0.25},
        },
        "epochs": 4,
        "initial": {
            "val_accuracy": 0.2,
            "val_loss": round(5 / 3, 6),
            "train_accuracy": round(1 / 3, 6),
            "train_loss": 1.5,
        },
        "untrained_val_accuracy": round(6 / 7, 6),
        "final_val_accuracy": round(2 / 7, 6),
        "best_val_accuracy": round(4 / 9, 6),
        "best_epoch": 2,
    }
    assert list(result) == [
        "metric0",
        "MCR",
        "MOFR",
        "epochs",
        "initial",
        "untrained_val_accuracy",
        "final_val_accuracy",
        "best_val_accuracy",
        "best_epoch",
    ]
    assert list(result["MOFR"]) == ["accuracy", "loss"]
    assert list(result["MCR"]["loss"]) == ["1-3", "4-4"]


def test_run_metrics_epoch1_reading_in_full():
    result = rates.run_metrics(FOUR, window=3, metric0="epoch1")
    assert result == {
        "metric0": "epoch1",
        "MCR": {
            "accuracy": {"1-3": round(1 / 9, 6), "4-4": round(1 / 3, 6)},
            "loss": {"1-3": round(-0.4 / 3, 6), "4-4": -0.1},
        },
        "MOFR": {
            "accuracy": {"1-3": round((2 / 9 - 2 / 15) / 3, 6), "4-4": round(5 / 7 - 2 / 9, 6)},
            "loss": {"1-3": round((1 / 6 - 0.45) / 3, 6), "4-4": -0.25},
        },
        "epochs": 4,
        "initial": {
            "val_accuracy": 0.2,
            "val_loss": round(5 / 3, 6),
            "train_accuracy": round(1 / 3, 6),
            "train_loss": 1.5,
        },
        "untrained_val_accuracy": round(6 / 7, 6),
        "final_val_accuracy": round(2 / 7, 6),
        "best_val_accuracy": round(4 / 9, 6),
        "best_epoch": 2,
    }
    assert FOUR["train/accuracy"][0] == 0.0


def test_run_metrics_with_windows_of_one_epoch():
    result = rates.run_metrics(FOUR, window=1)
    assert result["MCR"]["accuracy"] == {
        "1-1": round(1 / 3, 6),
        "2-2": round(1 / 6, 6),
        "3-3": round(1 / 6, 6),
        "4-4": round(1 / 3, 6),
    }
    assert result["MOFR"]["loss"] == {
        "1-1": round(-1 / 6, 6),
        "2-2": round(1 / 6 - 0.3, 6),
        "3-3": -0.15,
        "4-4": -0.25,
    }


def test_run_metrics_of_one_epoch_in_full():
    one = curves_of([0.1, 0.4], [0.3, 0.25], [2.0, 1.5], [2.0, 1.75])
    assert rates.run_metrics(one, window=5) == {
        "metric0": "untrained",
        "MCR": {"accuracy": {"1-1": 0.3}, "loss": {"1-1": -0.5}},
        "MOFR": {"accuracy": {"1-1": 0.35}, "loss": {"1-1": -0.25}},
        "epochs": 1,
        "initial": {
            "val_accuracy": 0.25,
            "val_loss": 1.75,
            "train_accuracy": 0.4,
            "train_loss": 1.5,
        },
        "untrained_val_accuracy": 0.3,
        "final_val_accuracy": 0.25,
        "best_val_accuracy": 0.25,
        "best_epoch": 1,
    }


def test_run_metrics_best_epoch_is_the_first_of_equal_bests_and_the_last_when_it_is_best():
    rising = curves_of([0, 0, 0, 0], [0.0, 0.1, 0.2, 0.3], [1, 1, 1, 1], [1, 1, 1, 1])
    result = rates.run_metrics(rising, window=5)
    assert (result["best_epoch"], result["best_val_accuracy"]) == (3, 0.3)
    flat = curves_of([0, 0, 0, 0], [0.4, 0.2, 0.2, 0.2], [1, 1, 1, 1], [1, 1, 1, 1])
    result = rates.run_metrics(flat, window=5)
    assert (result["best_epoch"], result["best_val_accuracy"]) == (1, 0.2)


def test_run_metrics_refuses_a_log_of_epoch_0_alone():
    with pytest.raises(FerError) as info:
        rates.run_metrics(curves_of([0.1], [0.1], [2.0], [2.0]), window=1)
    assert str(info.value) == "a run needs at least one trained epoch"


def test_read_curves_reads_each_split_and_metric_in_order(tmp_path):
    write_log(tmp_path, FOUR)
    got = rates.read_curves(tmp_path)
    assert list(got) == ["train/accuracy", "train/loss", "val/accuracy", "val/loss"]
    for key, values in FOUR.items():
        np.testing.assert_array_equal(got[key], values)
        assert got[key].dtype == np.float64


def test_read_curves_reads_a_string_folder_and_a_log_of_epoch_0_alone(tmp_path):
    write_log(tmp_path, curves_of([0.5], [0.25], [2.0], [1.5]))
    got = rates.read_curves(str(tmp_path))
    assert {k: v.tolist() for k, v in got.items()} == {
        "train/accuracy": [0.5],
        "train/loss": [2.0],
        "val/accuracy": [0.25],
        "val/loss": [1.5],
    }


def test_read_curves_names_the_first_missing_file(tmp_path):
    with pytest.raises(FerError) as info:
        rates.read_curves(tmp_path)
    first = tmp_path / "plots" / "metrics" / "train" / "accuracy.tsv"
    assert str(info.value) == f"{first}: missing; run the train stage first"
    write_log(tmp_path, FOUR)
    last = tmp_path / "plots" / "metrics" / "val" / "loss.tsv"
    last.unlink()
    with pytest.raises(FerError) as info:
        rates.read_curves(tmp_path)
    assert str(info.value) == f"{last}: missing; run the train stage first"


def test_read_curves_refuses_steps_that_do_not_start_at_0(tmp_path):
    write_log(tmp_path, FOUR)
    path = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    path.write_text("timestamp\tstep\tloss\n1\t1\t2.0\n1\t2\t1.5\n")
    with pytest.raises(FerError) as info:
        rates.read_curves(tmp_path)
    assert str(info.value) == f"{path}: epochs are not 0..N in order"


def test_common_windows_of_one_seed_keep_its_order():
    one = {"MCR": {"accuracy": {"6-10": 0.1, "1-5": 0.2}, "loss": {"1-5": 0.3}}}
    assert rates.common_windows([one], "MCR", "accuracy") == ["6-10", "1-5"]
    assert rates.common_windows([one], "MCR", "loss") == ["1-5"]


def test_common_windows_of_two_seeds_are_the_shared_ones_in_the_first_seeds_order():
    first = {"MOFR": {"loss": {"6-10": 0, "11-12": 0, "1-5": 0}, "accuracy": {"1-5": 0}}}
    second = {"MOFR": {"loss": {"1-5": 0, "6-10": 0}, "accuracy": {"1-5": 0, "6-7": 0}}}
    assert rates.common_windows([first, second], "MOFR", "loss") == ["6-10", "1-5"]
    assert rates.common_windows([second, first], "MOFR", "loss") == ["1-5", "6-10"]
    assert rates.common_windows([first, second], "MOFR", "accuracy") == ["1-5"]


def _seed_result(mcr_acc, mcr_loss, mofr_acc, mofr_loss):
    return {
        "MCR": {"accuracy": mcr_acc, "loss": mcr_loss},
        "MOFR": {"accuracy": mofr_acc, "loss": mofr_loss},
    }


def test_study_table_rows_in_full_for_one_and_two_seeds():
    two_seeds = [
        _seed_result(
            {"1-5": 0.1, "6-10": 0.3, "11-12": 0.9}, {"1-5": -0.2}, {"1-5": 0.0}, {"1-5": 0.05}
        ),
        _seed_result({"1-5": 0.2, "6-10": 0.3}, {"1-5": -0.4}, {"1-5": 0.0}, {"1-5": 0.15}),
    ]
    one_seed = [_seed_result({"1-5": 1 / 3}, {"1-5": -0.5}, {"1-5": 0.25}, {"1-5": -1 / 7})]
    rows = rates.study_table_rows({"vggface-pretrained": one_seed, "onet-random": two_seeds})

    def row(*values):
        keys = ("table", "metric", "rate", "backbone", "init", "epochs", "value", "seeds")
        return dict(zip((*keys, "half_width"), values, strict=True))

    assert rows == [
        row(2, "accuracy", "MCR", "onet", "random", "1-5", 0.15, 2, round(T975_1DF * 0.05, 6)),
        row(2, "accuracy", "MCR", "onet", "random", "6-10", 0.3, 2, 0.0),
        row(3, "loss", "MCR", "onet", "random", "1-5", -0.3, 2, round(T975_1DF * 0.1, 6)),
        row(4, "accuracy", "MOFR", "onet", "random", "1-5", 0.0, 2, 0.0),
        row(5, "loss", "MOFR", "onet", "random", "1-5", 0.1, 2, round(T975_1DF * 0.05, 6)),
        row(2, "accuracy", "MCR", "vggface", "pretrained", "1-5", round(1 / 3, 6), 1, None),
        row(3, "loss", "MCR", "vggface", "pretrained", "1-5", -0.5, 1, None),
        row(4, "accuracy", "MOFR", "vggface", "pretrained", "1-5", 0.25, 1, None),
        row(5, "loss", "MOFR", "vggface", "pretrained", "1-5", round(-1 / 7, 6), 1, None),
    ]
    assert list(rows[0]) == [
        "table",
        "metric",
        "rate",
        "backbone",
        "init",
        "epochs",
        "value",
        "seeds",
        "half_width",
    ]


def test_study_table_rows_of_a_finetuned_run_name_the_study_run_and_of_nothing_are_empty():
    seed = _seed_result({"1-5": 0.5}, {"1-5": 0.5}, {"1-5": 0.5}, {"1-5": 0.5})
    rows = rates.study_table_rows({"mobilenet-random-finetune": [seed]})
    assert [(r["table"], r["backbone"], r["init"]) for r in rows] == [
        (2, "mobilenet", "random"),
        (3, "mobilenet", "random"),
        (4, "mobilenet", "random"),
        (5, "mobilenet", "random"),
    ]
    assert rates.study_table_rows({}) == []


def test_study_table_rows_refuse_a_name_that_is_not_a_run():
    seed = _seed_result({"1-5": 0.5}, {"1-5": 0.5}, {"1-5": 0.5}, {"1-5": 0.5})
    with pytest.raises(FerError) as info:
        rates.study_table_rows({"onet": [seed]})
    assert str(info.value) == "'onet' is not a run name of the form <backbone>-<init>[-finetune]"


def _scaled(curves, factor):
    return {k: v * factor for k, v in curves.items()}


def test_read_run_logs_reads_the_seed_folders_with_logs_in_seed_order(tmp_path):
    for n in (10, 3, 1, 2):
        write_log(tmp_path / f"seed{n}", _scaled(FOUR, n))
    (tmp_path / "seed4").mkdir()
    write_log(tmp_path, _scaled(FOUR, 7))
    got = rates.read_run_logs(tmp_path)
    assert [c["train/loss"].tolist() for c in got] == [
        (FOUR["train/loss"] * n).tolist() for n in (1, 2, 3, 10)
    ]


def test_read_curves_refuses_curves_of_different_lengths(tmp_path):
    short = {**FOUR, "val/loss": FOUR["val/loss"][:-1]}
    write_log(tmp_path, short)
    with pytest.raises(FerError) as info:
        rates.read_curves(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: the curves differ in length (train/accuracy 5, train/loss 5, "
        "val/accuracy 5, val/loss 4 epochs)"
    )


def test_read_run_logs_reads_the_folder_itself_without_seed_folders(tmp_path):
    write_log(tmp_path, FOUR)
    (tmp_path / "seed1").mkdir()
    (got,) = rates.read_run_logs(tmp_path)
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in FOUR.items()}


def test_read_run_logs_of_an_empty_folder_names_its_missing_file(tmp_path):
    with pytest.raises(FerError) as info:
        rates.read_run_logs(tmp_path)
    path = tmp_path / "plots" / "metrics" / "train" / "accuracy.tsv"
    assert str(info.value) == f"{path}: missing; run the train stage first"


# --------------------------------------------------------------------------- fidelity.py


def test_zero_band_is_a_thousandth():
    assert fidelity.ZERO_BAND == 1e-3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0), (-0.0, 0), (0.000999, 0), (-0.000999, 0), (0.001, 1), (-0.001, -1), (2.0, 1)],
)
def test_sign_counts_the_zero_band_as_zero(value, expected):
    assert fidelity.sign(value) == expected


def test_agreement_of_one_pair_and_of_pairs_on_both_sides():
    assert fidelity.agreement([(0.03, 0.02)]) == _agreement(1, 1, 1.0, 0.01)
    assert fidelity.agreement([(-0.5, 0.25), (0.25, 0.5), (0.0005, -0.0005)]) == _agreement(
        3, 2, 0.6667, _rmse(-0.75, -0.25, 0.001)
    )
    assert fidelity.agreement([(1 / 3, 0.0), (0.0, 0.0), (0.0, 0.0)]) == _agreement(
        3, 2, 0.6667, round(float(np.sqrt(1 / 27)), 6)
    )
    assert fidelity.agreement([]) == EMPTY


def _paper():
    return {
        (2, "onet", "random", "1-5"): 0.02,
        (3, "onet", "random", "1-5"): -0.2,
        (4, "onet", "random", "1-5"): 0.01,
        (2, "mobilenet", "random", "1-5"): 0.0005,
        (2, "vggface", "pretrained", "1-5"): 0.05,
        (2, "openface", "pretrained", "1-5"): -0.02,
        (2, "vggface", "random", "1-5"): -0.03,
    }


def _rows():
    return [
        _row("onet", "random", 2, "1-5", 0.03),
        _row("onet", "random", 3, "1-5", 0.1),
        _row("onet", "random", 5, "1-5", 0.3),
        _row("onet", "random", 2, "6-10", 0.3),
        _row("mobilenet", "random", 2, "1-5", -0.0009),
        _row("facenet", "pretrained", 2, "1-5", 0.04),
        _row("facenet", "pretrained", 3, "1-5", -0.1),
        _row("vggface", "pretrained", 2, "1-5", 0.06),
        _row("mobilenetv2", "pretrained", 2, "1-5", 0.01),
    ]


FAMILY = {
    "face recognition": {
        "ours": ["facenet-pretrained", "vggface-pretrained"],
        "study": ["openface", "vggface"],
        # facenet against openface and vggface, vggface against openface alone
        **_agreement(3, 1, 0.3333, _rmse(0.06, -0.01, 0.08)),
    }
}


def test_family_fidelity_in_full():
    assert fidelity.family_fidelity(_rows(), _paper()) == FAMILY


def test_family_fidelity_lists_families_runs_and_study_backbones_in_name_order():
    names = ["vggface", "facenet", "openface", "dlib", "mobilenet"]
    paper = {(3, b, "pretrained", "6-10"): 0.02 for b in names}
    rows = [_row(b, "pretrained", 3, "6-10", 0.01) for b in [*names[:4], "resnet50"]]
    got = fidelity.family_fidelity(rows, paper)
    assert got == {
        "ImageNet": {
            "ours": ["resnet50-pretrained"],
            "study": ["mobilenet"],
            **_agreement(1, 1, 1.0, 0.01),
        },
        "face recognition": {
            "ours": [
                "dlib-pretrained",
                "facenet-pretrained",
                "openface-pretrained",
                "vggface-pretrained",
            ],
            "study": ["dlib", "facenet", "openface", "vggface"],
            **_agreement(12, 12, 1.0, 0.01),
        },
    }
    assert list(got) == ["ImageNet", "face recognition"]


def test_family_fidelity_without_pretrained_rows_or_study_rows_is_empty():
    assert fidelity.family_fidelity(_rows()[:5], _paper()) == {}
    assert fidelity.family_fidelity([_row("unlisted", "random", 2, "1-5", 0.1)], _paper()) == {}
    assert fidelity.family_fidelity([], _paper()) == {}
    assert fidelity.family_fidelity(_rows(), {}) == {}


def test_fidelity_in_full():
    got = fidelity.fidelity(_rows(), _paper())
    assert got == {
        "runs": {
            "onet-random": {
                "table2": _agreement(1, 1, 1.0, 0.01),
                "table3": _agreement(1, 0, 0.0, 0.3),
                "table4": EMPTY,
                "table5": EMPTY,
                "total": _agreement(2, 1, 0.5, _rmse(0.01, 0.3)),
            },
            "mobilenet-random": {
                "table2": _agreement(1, 1, 1.0, 0.0014),
                "table3": EMPTY,
                "table4": EMPTY,
                "table5": EMPTY,
                "total": _agreement(1, 1, 1.0, 0.0014),
            },
            "vggface-pretrained": {
                "table2": _agreement(1, 1, 1.0, 0.01),
                "table3": EMPTY,
                "table4": EMPTY,
                "table5": EMPTY,
                "total": _agreement(1, 1, 1.0, 0.01),
            },
        },
        "total": _agreement(4, 3, 0.75, _rmse(0.01, 0.3, 0.0014, 0.01)),
        "pretrained": _agreement(1, 1, 1.0, 0.01),
        "random": _agreement(3, 2, 0.6667, _rmse(0.01, 0.3, 0.0014)),
        "pretrained_by_family": FAMILY,
    }
    assert list(got) == ["runs", "total", "pretrained", "random", "pretrained_by_family"]
    assert list(got["runs"]) == ["onet-random", "mobilenet-random", "vggface-pretrained"]
    assert list(got["runs"]["onet-random"]) == ["table2", "table3", "table4", "table5", "total"]


def test_fidelity_of_no_rows():
    assert fidelity.fidelity([], _paper()) == {
        "runs": {},
        "total": EMPTY,
        "pretrained": EMPTY,
        "random": EMPTY,
        "pretrained_by_family": {},
    }


# 2 epochs: one window of 2 under window=2
TWO = curves_of([0.0, 0.2, 0.4], [0.0, 0.1, 0.1], [2.0, 1.6, 1.2], [2.0, 1.8, 1.9])
TWO_PAPER = {(2, "onet", "random", "1-2"): 0.1, (5, "onet", "random", "1-2"): -0.1}


def _one_run_fidelity(table2, table5):
    total = _agreement(2, 2, 1.0, _rmse(table2 - 0.1, table5 + 0.1))
    return {
        "runs": {
            "onet-random": {
                "table2": _agreement(1, 1, 1.0, _rmse(table2 - 0.1)),
                "table3": EMPTY,
                "table4": EMPTY,
                "table5": _agreement(1, 1, 1.0, _rmse(table5 + 0.1)),
                "total": total,
            }
        },
        "total": total,
        "pretrained": EMPTY,
        "random": total,
        "pretrained_by_family": {},
    }


def test_fidelity_of_logs_under_each_reading_by_hand():
    got = fidelity.fidelity_of_logs({"onet-random": [TWO]}, 2, TWO_PAPER)
    # untrained: MCR of accuracy 0.4 / 2, MOFR of loss (-0.7 - 0) / 2;
    # epoch1: (0.4 - 0.2) / 2 and (-0.7 + 0.2) / 2
    assert got == {
        "untrained": _one_run_fidelity(0.2, -0.35),
        "epoch1": _one_run_fidelity(0.1, -0.25),
    }
    assert list(got) == ["untrained", "epoch1"]


def test_fidelity_of_logs_with_a_window_that_misses_the_papers_windows():
    got = fidelity.fidelity_of_logs({"onet-random": [TWO]}, 1, TWO_PAPER)
    nothing = {
        "runs": {},
        "total": EMPTY,
        "pretrained": EMPTY,
        "random": EMPTY,
        "pretrained_by_family": {},
    }
    assert got == {"untrained": nothing, "epoch1": nothing}


def test_load_paper_tables_of_a_small_file(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text(
        "value,epochs,init,backbone,rate,metric,table\n"
        "0.5,1-5,random,onet,MCR,accuracy,2\n"
        "-1.5e-05,6-10,pretrained,vggface,MOFR,loss,5\n"
    )
    assert fidelity.load_paper_tables(path) == {
        (2, "onet", "random", "1-5"): 0.5,
        (5, "vggface", "pretrained", "6-10"): -1.5e-05,
    }


def test_load_paper_tables_reads_the_committed_tables_by_default(monkeypatch):
    monkeypatch.chdir(ROOT)
    paper = fidelity.load_paper_tables()
    assert len(paper) == 128
    assert paper[(5, "vggface", "random", "16-20")] == -5e-05
    assert paper[(3, "openface", "random", "1-5")] == -0.0145
    assert {key[0] for key in paper} == {2, 3, 4, 5}
    assert {key[2] for key in paper} == {"pretrained", "random"}
    assert {key[3] for key in paper} == {"1-5", "6-10", "11-15", "16-20"}
    assert {key[1] for key in paper} == {"mobilenet", "openface", "resnet50", "vggface"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("table,backbone,init,epochs\n2,onet,random,1-5\n", "'value'"),
        (
            "table,backbone,init,epochs,value\n2,onet,random,1-5,x\n",
            "could not convert string to float: 'x'",
        ),
        (
            "table,backbone,init,epochs,value\ntwo,onet,random,1-5,0.5\n",
            "invalid literal for int() with base 10: 'two'",
        ),
    ],
)
def test_load_paper_tables_refuses_a_bad_file_with_the_reason(tmp_path, text, reason):
    path = tmp_path / "paper.csv"
    path.write_text(text)
    with pytest.raises(FerError) as info:
        fidelity.load_paper_tables(path)
    assert str(info.value) == f"{path}: cannot read the study's tables ({reason})"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_load_paper_tables_refuses_a_missing_file_with_the_reason(tmp_path):
    path = tmp_path / "none.csv"
    with pytest.raises(FerError) as info:
        fidelity.load_paper_tables(path)
    reason = f"[Errno 2] No such file or directory: '{path}'"
    assert str(info.value) == f"{path}: cannot read the study's tables ({reason})"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _linear(step, epochs):
    acc = np.arange(epochs + 1) * step
    return curves_of(acc, acc, 2 - acc, 2 - acc)


def test_variant_record_in_full(tmp_path, monkeypatch):
    monkeypatch.setattr(fidelity, "load_paper_tables", lambda: {(2, "onet", "random", "1-5"): 0.1})
    logs = tmp_path / "logs"
    write_log(logs / "onet-random" / "seed2", _linear(0.2, 6))
    write_log(logs / "onet-random" / "seed1", _linear(0.1, 6))
    (logs / "onet-random" / "seed3").mkdir()
    write_log(logs / "vggface-pretrained", _linear(0.1, 3))
    (logs / "empty").mkdir()
    (logs / "notes.txt").write_text("not a run\n")
    record = fidelity.variant_record(logs, "a label", "a description")

    def scored(ours):
        one = _agreement(1, 1, 1.0, _rmse(ours - 0.1))
        table = {"table2": one, "table3": EMPTY, "table4": EMPTY, "table5": EMPTY, "total": one}
        return {
            "runs": {"onet-random": table},
            "total": one,
            "pretrained": EMPTY,
            "random": one,
            "pretrained_by_family": {},
        }

    assert record == {
        "label": "a label",
        "description": "a description",
        "runs": ["onet-random", "vggface-pretrained"],
        "seeds": {"onet-random": 2, "vggface-pretrained": 1},
        "epochs": {"onet-random": 6, "vggface-pretrained": 3},
        # seeds' MCR of accuracy over 1-5: 0.1 and 0.2; epoch1: 0.4 / 5 and 0.8 / 5
        "fidelity": {"untrained": scored(0.15), "epoch1": scored(0.12)},
    }


def test_variant_record_uses_the_window_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setattr(fidelity, "load_paper_tables", lambda: {(2, "onet", "random", "1-2"): 0.1})
    write_log(tmp_path / "onet-random", _linear(0.1, 6))
    record = fidelity.variant_record(tmp_path, "l", "d", window=2)
    one = _agreement(1, 1, 1.0, 0.0)
    assert record["fidelity"]["untrained"]["total"] == one
    assert record["fidelity"]["epoch1"]["total"] == _agreement(1, 1, 1.0, _rmse(0.05 - 0.1))


def test_variant_record_refuses_a_folder_without_run_logs(tmp_path):
    (tmp_path / "onet-random" / "seed1").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(FerError) as info:
        fidelity.variant_record(tmp_path, "l", "d")
    assert str(info.value) == (
        f"{tmp_path}: no run logs (expected <run>/[seed<n>/]plots/metrics/...)"
    )
    with pytest.raises(FerError) as info:
        fidelity.variant_record(tmp_path / "absent", "l", "d")
    assert str(info.value) == f"{tmp_path / 'absent'}: not a folder"
