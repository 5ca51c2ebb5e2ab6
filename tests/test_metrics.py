"""The study's rates on hand-computed curves."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import params_of, write_log

from ferstudy.analysis import fidelity, rates
from ferstudy.analysis.rates import (
    mean_convergence_rate,
    mean_overfitting_rate,
    run_metrics,
    study_table_rows,
    windows,
)
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import read_json
from ferstudy.reporting import tables
from ferstudy.stages import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def curves(train_acc, val_acc, train_loss=None, val_loss=None):
    train_loss = train_loss if train_loss is not None else [1 - a for a in train_acc]
    val_loss = val_loss if val_loss is not None else [1 - a for a in val_acc]
    return {
        "train/accuracy": np.array(train_acc, float),
        "val/accuracy": np.array(val_acc, float),
        "train/loss": np.array(train_loss, float),
        "val/loss": np.array(val_loss, float),
    }


def test_windows():
    assert windows(20, 5) == [(1, 5), (6, 10), (11, 15), (16, 20)]
    assert windows(12, 5) == [(1, 5), (6, 10), (11, 12)]
    assert windows(3, 5) == [(1, 3)]
    with pytest.raises(FerError):
        windows(0, 5)


def test_mcr_and_mofr_by_hand():
    # epoch:        0    1    2    3    4
    train = np.array([0.1, 0.3, 0.4, 0.6, 0.7])
    val = np.array([0.1, 0.25, 0.3, 0.4, 0.42])
    # MCR 1-2: ((0.3-0.1) + (0.4-0.3)) / 2 = 0.15 ; 3-4: ((0.6-0.4) + (0.7-0.6)) / 2 = 0.15
    assert mean_convergence_rate(train, 1, 2) == pytest.approx(0.15)
    assert mean_convergence_rate(train, 3, 4) == pytest.approx(0.15)
    # gaps: 0, 0.05, 0.1, 0.2, 0.28 -> MOFR 1-2: (0.05 + 0.05) / 2 ; 3-4: (0.1 + 0.08) / 2
    assert mean_overfitting_rate(train, val, 1, 2) == pytest.approx(0.05)
    assert mean_overfitting_rate(train, val, 3, 4) == pytest.approx(0.09)
    # a window of one epoch uses Metric[0] for epoch 1
    assert mean_convergence_rate(train, 1, 1) == pytest.approx(0.2)


def test_constant_curve_gives_zero_rates():
    """The study's VGG-Face random run did not learn: every rate is 0."""
    flat = [1 / 7] * 21
    result = run_metrics(curves(flat, flat, [1.9459] * 21, [1.9459] * 21), window=5)
    values = [v for rate in ("MCR", "MOFR") for m in result[rate].values() for v in m.values()]
    assert len(values) == 16 and all(v == 0 for v in values)


def test_window_that_does_not_divide_epochs():
    train = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # 7 epochs
    result = run_metrics(curves(train, train), window=3)
    assert list(result["MCR"]["accuracy"]) == ["1-3", "4-6", "7-7"]
    assert result["MCR"]["accuracy"]["7-7"] == pytest.approx(0.1)
    assert result["MCR"]["loss"]["1-3"] == pytest.approx(-0.1)
    assert result["MOFR"]["accuracy"]["4-6"] == pytest.approx(0.0)


def test_initial_final_and_best():
    train = [0.1, 0.3, 0.5, 0.6]
    val = [0.12, 0.28, 0.45, 0.40]
    result = run_metrics(curves(train, val), window=5)
    assert result["initial"]["val_accuracy"] == pytest.approx(0.28)
    assert result["initial"]["train_accuracy"] == pytest.approx(0.3)
    assert result["final_val_accuracy"] == pytest.approx(0.40)
    assert (result["best_val_accuracy"], result["best_epoch"]) == (pytest.approx(0.45), 2)
    assert result["untrained_val_accuracy"] == pytest.approx(0.12)


def test_table_rows_in_paper_layout():
    result = run_metrics(curves([0.1, 0.2, 0.3], [0.1, 0.2, 0.2]), window=5)
    rows = study_table_rows({"openface-random": [result]})
    assert {r["table"] for r in rows} == {2, 3, 4, 5}
    assert rows[0].keys() == {
        "table",
        "metric",
        "rate",
        "backbone",
        "init",
        "epochs",
        "value",
        "seeds",
        "half_width",
    }


def test_finetuned_runs_get_rates_but_stay_out_of_the_study_tables_and_fidelity(
    tmp_path, monkeypatch
):
    """A fine-tuned run's seeds stopped early at different epochs: each seed's rates over its
    own epochs; the study's tables and the fidelity score are the study run's alone."""
    (tmp_path / "reference").mkdir()
    shutil.copy(ROOT / "reference" / "paper_tables.csv", tmp_path / "reference")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    study = {seed: curves(*rng.random((2, 11))) for seed in (1, 2)}  # 10 epochs each
    tuned = {1: curves(*rng.random((2, 13))), 2: curves(*rng.random((2, 8)))}  # 12 and 7
    for seed in (1, 2):
        write_log(paths.live_dir(paths.run_id("mobilenet-random", seed)), study[seed])
        write_log(paths.live_dir(paths.run_id("mobilenet-random-finetune", seed)), tuned[seed])
    per_id = M.run(
        params_of({"window": 5, "seeds": [1, 2], "finetune": {"runs": ["mobilenet-random"]}})
    )
    for seed, own in ((1, ["1-5", "6-10", "11-12"]), (2, ["1-5", "6-7"])):
        run_id = paths.run_id("mobilenet-random-finetune", seed)
        assert per_id[run_id] == run_metrics(tuned[seed], 5)
        assert list(per_id[run_id]["MCR"]["accuracy"]) == own
        assert read_json(paths.study_file(run_id)) == json.loads(json.dumps(per_id[run_id]))
    only = {"mobilenet-random": [run_metrics(study[s], 5) for s in (1, 2)]}
    rows = study_table_rows(only)
    assert (paths.METRICS_DIR / "study_tables.md").read_text() == tables.markdown_tables(rows)
    assert len((paths.METRICS_DIR / "study_tables.csv").read_text().splitlines()) == 1 + len(rows)
    written = read_json(paths.FIDELITY_FILE)
    assert set(written["runs"]) == {"mobilenet-random"} and written["total"]["rates"] == 8
    expected = fidelity.fidelity_of_logs(
        {"mobilenet-random": [study[1], study[2]]}, 5, fidelity.load_paper_tables()
    )
    assert written["by_metric0"] == json.loads(json.dumps(expected))


def test_rates_across_seeds_of_unequal_length_use_the_windows_every_seed_has():
    long = run_metrics(curves(*np.random.default_rng(4).random((2, 13))), window=5)  # 12 epochs
    short = run_metrics(curves(*np.random.default_rng(5).random((2, 8))), window=5)  # 7
    assert rates.common_windows([long, short], "MCR", "accuracy") == ["1-5"]
    assert rates.common_windows([long, long], "MOFR", "loss") == ["1-5", "6-10", "11-12"]
    rows = study_table_rows({"mobilenet-random-finetune": [long, short]})
    assert {r["epochs"] for r in rows} == {"1-5"} and {r["seeds"] for r in rows} == {2}
    row = next(r for r in rows if (r["rate"], r["metric"]) == ("MCR", "accuracy"))
    mean = (long["MCR"]["accuracy"]["1-5"] + short["MCR"]["accuracy"]["1-5"]) / 2
    assert row["value"] == pytest.approx(mean, abs=1e-6)


def test_a_run_without_seeds_results_is_refused_by_name():
    with pytest.raises(FerError, match="openface-random: no seed's results"):
        study_table_rows({"openface-random": []})
