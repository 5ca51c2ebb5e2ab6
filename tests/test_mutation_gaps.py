"""Checks that mutation testing (mutmut, see pyproject.toml [tool.mutmut]) showed were missing.

Each test pins a behaviour of metrics.py, split.py, evaluate.scores/privatetest_scores or
params.py that a changed operator, constant or key survived before it was written.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import curves_of, params_of, write_log
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from ferstudy import CLASSES
from ferstudy.analysis import fidelity, rates
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import Dataset, load_split, read_json, save_dataset, write_csv
from ferstudy.core.params import _expectations, _one_of, load_params, validate_params
from ferstudy.data import splits as S
from ferstudy.reporting import tables
from ferstudy.stages import metrics as M
from ferstudy.stages import split as split_stage
from ferstudy.stages.evaluate import privatetest_scores, scores

ROOT = Path(__file__).resolve().parents[1]


# 3 epochs; thirds so that rounding to 6 decimals shows
THIRDS = curves_of(
    [0.0, 1 / 3, 0.5, 2 / 3],
    [0.0, 1 / 7, 2 / 7, 1 / 6],
    [2.0, 5 / 3, 4 / 3, 1.0],
    [2.0, 11 / 6, 13 / 7, 1.9],
)

_RNG = np.random.default_rng(0)
# 10 epochs of noisy curves: windows 1-5 and 6-10, as in the study's tables
LONG = curves_of(*(np.round(_RNG.random((4, 11)), 4)))


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    """A working folder with the study's tables, as the metrics stage runs in."""
    (tmp_path / "reference").mkdir()
    shutil.copy(ROOT / "reference" / "paper_tables.csv", tmp_path / "reference")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- metrics.py


def test_windows_of_one_epoch_and_bad_arguments():
    assert rates.windows(1, 1) == [(1, 1)]
    assert rates.windows(2, 1) == [(1, 1), (2, 2)]
    for epochs, window in ((0, 5), (5, 0)):
        with pytest.raises(FerError, match="^epochs and window must be at least 1$"):
            rates.windows(epochs, window)


def test_unknown_metric0_reading_is_refused_by_name():
    with pytest.raises(FerError, match=r"one of untrained, epoch1 \(got 'epoch0'\)"):
        rates.with_metric0(THIRDS, "epoch0")


def test_run_of_one_epoch_is_scored_and_of_none_refused():
    one = curves_of([0.1, 0.4], [0.1, 0.3], [2.0, 1.5], [2.0, 1.7])
    result = rates.run_metrics(one, window=5)
    assert result["epochs"] == 1
    assert result["MCR"]["accuracy"] == {"1-1": 0.3}
    with pytest.raises(FerError, match="^a run needs at least one trained epoch$"):
        rates.run_metrics(curves_of([0.1], [0.1], [2.0], [2.0]), window=5)


def test_run_metrics_records_reading_epochs_and_first_epoch_values_to_6_decimals():
    result = rates.run_metrics(THIRDS, window=2)
    assert result["metric0"] == "untrained"
    assert rates.run_metrics(THIRDS, window=2, metric0="epoch1")["metric0"] == "epoch1"
    assert result["epochs"] == 3
    assert result["MCR"]["accuracy"] == {"1-2": 0.25, "3-3": round(1 / 6, 6)}
    assert result["MCR"]["loss"]["3-3"] == round(-1 / 3, 6)
    assert result["initial"] == {
        "val_accuracy": round(1 / 7, 6),
        "val_loss": round(11 / 6, 6),
        "train_accuracy": round(1 / 3, 6),
        "train_loss": round(5 / 3, 6),
    }
    assert result["untrained_val_accuracy"] == 0.0
    assert result["final_val_accuracy"] == round(1 / 6, 6)
    assert (result["best_val_accuracy"], result["best_epoch"]) == (round(2 / 7, 6), 2)


def test_untrained_value_is_rounded_to_6_decimals():
    curves = curves_of([0.1, 0.2], [1 / 3, 0.5], [2.0, 1.9], [2.0, 1.8])
    assert rates.run_metrics(curves, window=5)["untrained_val_accuracy"] == round(1 / 3, 6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0), (0.0009, 0), (-0.0009, 0), (1e-3, 1), (-1e-3, -1), (0.5, 1), (-0.5, -1)],
)
def test_sign_with_zero_band(value, expected):
    assert fidelity.sign(value) == expected


def test_agreement_of_nothing_and_of_three_pairs():
    assert fidelity.agreement([]) == {
        "rates": 0,
        "signs_agree": 0,
        "sign_agreement": None,
        "rmse": None,
    }
    got = fidelity.agreement([(0.1, 0.2), (-0.1, 0.2), (0.0, 0.0)])  # signs: agree, differ, agree
    assert got["rates"] == 3 and got["signs_agree"] == 2
    assert got["sign_agreement"] == 0.6667
    assert got["rmse"] == round(float(np.sqrt((0.01 + 0.09) / 3)), 6)


def test_fidelity_total_of_a_run():
    paper = {(2, "onet", "random", "1-5"): 0.02, (3, "onet", "random", "1-5"): -0.2}
    rows = [
        {"table": 2, "backbone": "onet", "init": "random", "epochs": "1-5", "value": 0.03},
        {"table": 3, "backbone": "onet", "init": "random", "epochs": "1-5", "value": 0.1},
    ]
    total = fidelity.fidelity(rows, paper)["runs"]["onet-random"]["total"]
    assert total == {
        "rates": 2,
        "signs_agree": 1,
        "sign_agreement": 0.5,
        "rmse": round(float(np.sqrt((0.01**2 + 0.3**2) / 2)), 6),
    }


def test_read_curves_from_a_dvclive_log(tmp_path):
    write_log(tmp_path, THIRDS)
    curves = rates.read_curves(tmp_path)
    assert set(curves) == {"train/accuracy", "train/loss", "val/accuracy", "val/loss"}
    for key, values in THIRDS.items():
        np.testing.assert_array_equal(curves[key], values)


def test_read_curves_refuses_a_missing_file_and_epochs_out_of_order(tmp_path):
    with pytest.raises(FerError, match="accuracy.tsv: missing; run the train stage first"):
        rates.read_curves(tmp_path)
    write_log(tmp_path, THIRDS)
    path = tmp_path / "plots" / "metrics" / "val" / "loss.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(FerError, match=r"loss.tsv: epochs are not 0..N in order"):
        rates.read_curves(tmp_path)


def test_markdown_tables_by_hand():
    rows = [
        {"table": 2, "backbone": "onet", "init": "random", "epochs": "1-5", "value": 0.1},
        {"table": 2, "backbone": "onet", "init": "random", "epochs": "6-10", "value": -0.02},
        {"table": 2, "backbone": "vggface", "init": "pretrained", "epochs": "1-5", "value": 0.5},
        {"table": 5, "backbone": "onet", "init": "random", "epochs": "1-5", "value": 1 / 3},
    ]
    assert tables.markdown_tables(rows) == (
        "**Table 2: MCR of accuracy**\n"
        "\n"
        "| model | init | 1-5 | 6-10 |\n"
        "|---|---|---:|---:|\n"
        "| onet | random | 0.100000 | -0.020000 |\n"
        "| vggface | pretrained | 0.500000 |  |\n"
        "\n"
        "**Table 5: MOFR of loss**\n"
        "\n"
        "| model | init | 1-5 |\n"
        "|---|---|---:|\n"
        "| onet | random | 0.333333 |\n"
    )
    assert tables.markdown_tables([]) == ""
    seeded = [{**rows[0], "half_width": 0.0125}]
    assert "| onet | random | 0.100000 ± 0.012500 |" in tables.markdown_tables(seeded)


def test_study_table_rows_are_seed_means_with_their_interval():
    per_seed = [
        {
            "MCR": {m: {"1-5": v} for m in rates.METRICS},
            "MOFR": {m: {"1-5": 0.0} for m in rates.METRICS},
        }
        for v in (0.1, 0.2, 0.3)
    ]
    rows = rates.study_table_rows({"onet-random": per_seed})
    (row,) = [r for r in rows if r["table"] == 2]
    half = 0.1 * 4.302652729911275 / np.sqrt(3)  # sd 0.1, t(0.975, 2 df), by hand
    assert row["value"] == pytest.approx(0.2) and row["seeds"] == 3
    assert row["half_width"] == pytest.approx(half, abs=1e-6)
    one = rates.study_table_rows({"onet-random": per_seed[:1]})
    assert [r["half_width"] for r in one] == [None] * 4 and one[0]["seeds"] == 1


def test_load_paper_tables_reads_the_committed_csv():
    paper = fidelity.load_paper_tables(ROOT / "reference" / "paper_tables.csv")
    assert len(paper) == 128
    assert paper[(2, "mobilenet", "pretrained", "1-5")] == 0.039937
    assert all(table in (2, 3, 4, 5) for table, *_ in paper)


@pytest.mark.parametrize(
    "text",
    [
        None,  # no file
        "table,metric,rate,backbone,init,epochs\n2,accuracy,MCR,onet,random,1-5\n",  # no value
        "table,metric,rate,backbone,init,epochs,value\n2,accuracy,MCR,onet,random,1-5,x\n",
    ],
)
def test_load_paper_tables_refuses_a_bad_file_in_one_line(tmp_path, text):
    path = tmp_path / "paper.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(FerError, match=r"paper.csv: cannot read the study's tables \(") as info:
        fidelity.load_paper_tables(path)
    assert "\n" not in str(info.value)


def test_write_csv_with_rows_and_without(tmp_path):
    rows = [{"table": 2, "value": 0.5}, {"table": 3, "value": -1.0}]
    write_csv(tmp_path / "a.csv", rows)
    assert (tmp_path / "a.csv").read_bytes() == b"table,value\n2,0.5\n3,-1.0\n"  # no \r
    write_csv(tmp_path / "one.csv", rows[:1])
    assert (tmp_path / "one.csv").read_bytes() == b"table,value\n2,0.5\n"
    write_csv(tmp_path / "b.csv", [])
    assert (tmp_path / "b.csv").read_bytes() == b"table\n"


def test_fidelity_of_logs_under_each_metric0_reading():
    paper = fidelity.load_paper_tables(ROOT / "reference" / "paper_tables.csv")
    curves = {"mobilenet-random": [LONG]}
    both = fidelity.fidelity_of_logs(curves, 5, paper)
    assert list(both) == ["untrained", "epoch1"]
    for metric0 in rates.METRIC0:
        rows = rates.study_table_rows({"mobilenet-random": [rates.run_metrics(LONG, 5, metric0)]})
        assert both[metric0] == fidelity.fidelity(rows, paper)
        assert both[metric0]["total"]["rates"] == 8  # 2 windows x 4 tables
    assert both["untrained"] != both["epoch1"]


def test_variant_record_of_logged_runs(study_dir):
    logs = study_dir / "logs"
    shorter = {k: v[:-1] for k, v in LONG.items()}
    write_log(logs / "vggface-pretrained", shorter)  # the layout before seeds
    write_log(logs / "mobilenet-random" / "seed1", LONG)
    write_log(logs / "mobilenet-random" / "seed2", {k: v[::-1] for k, v in LONG.items()})
    (logs / "not-a-run").mkdir()
    record = fidelity.variant_record(logs, "label", "what changed", window=2)
    assert record["label"] == "label" and record["description"] == "what changed"
    assert record["runs"] == ["mobilenet-random", "vggface-pretrained"]
    assert record["epochs"] == {"mobilenet-random": 10, "vggface-pretrained": 9}
    assert record["seeds"] == {"mobilenet-random": 2, "vggface-pretrained": 1}
    curves = {
        "mobilenet-random": [LONG, {k: v[::-1] for k, v in LONG.items()}],
        "vggface-pretrained": [shorter],
    }
    assert record["fidelity"] == fidelity.fidelity_of_logs(curves, 2, fidelity.load_paper_tables())
    default = fidelity.variant_record(logs, "label", "what changed")  # window 5
    assert default["fidelity"] == fidelity.fidelity_of_logs(curves, 5, fidelity.load_paper_tables())
    assert default["fidelity"]["untrained"]["total"]["rates"] == 8 + 4  # 9 epochs: 1-5 only
    with pytest.raises(FerError, match="no run logs"):
        fidelity.variant_record(logs / "not-a-run", "label", "")


@pytest.mark.parametrize(
    ("params", "window", "metric0"),
    [({"window": 2, "metric0": "epoch1"}, 2, "epoch1"), ({}, 5, "untrained")],
)
def test_metrics_stage_writes_each_runs_rates_tables_and_fidelity(
    study_dir, params, window, metric0
):
    runs = ["vggface-pretrained", "mobilenet-random"]
    curves = {
        "vggface-pretrained": {k: v[::-1] for k, v in LONG.items()},
        "mobilenet-random": LONG,
    }
    flipped = {k: 1 - v for k, v in LONG.items()}  # a second seed of mobilenet-random
    for run, c in curves.items():
        write_log(paths.live_dir(paths.run_id(run, 1)), c)
        write_log(paths.live_dir(paths.run_id(run, 2)), flipped if run == "mobilenet-random" else c)
    per_id = M.run(params_of({**params, "runs": runs, "seeds": [1, 2]}))
    seeds = {
        run: [curves[run], flipped if run == "mobilenet-random" else curves[run]] for run in runs
    }
    expected = {run: [rates.run_metrics(c, window, metric0) for c in seeds[run]] for run in runs}
    assert per_id == {
        paths.run_id(run, seed): expected[run][i] for run in runs for i, seed in enumerate([1, 2])
    }
    for run in runs:
        assert read_json(paths.METRICS_DIR / "study" / run / "seed2.json") == expected[run][1]
    rows = rates.study_table_rows(expected)
    csv_text = (paths.METRICS_DIR / "study_tables.csv").read_text()
    assert csv_text.splitlines()[0] == (
        "table,metric,rate,backbone,init,epochs,value,seeds,half_width"
    )
    assert len(csv_text.splitlines()) == 1 + len(rows)
    assert (paths.METRICS_DIR / "study_tables.md").read_text() == tables.markdown_tables(rows)
    both = fidelity.fidelity_of_logs(seeds, window, fidelity.load_paper_tables())
    saved = read_json(paths.FIDELITY_FILE)
    assert saved == json.loads(
        json.dumps({"metric0": metric0, "seeds": 2, **both[metric0], "by_metric0": both})
    )


# --------------------------------------------------------------------------- split.py


@pytest.mark.parametrize(
    ("test_size", "val_size"),
    [(0, 0.1), (0.1, 0), (-0.5, 0.1), (0.7, 0.4), (0.6, 0.5), (0.5, 0.5), (1, 0.1)],
)
def test_invalid_fractions_are_named(test_size, val_size):
    labels = np.repeat(np.arange(7), 20)
    with pytest.raises(FerError, match=f"test_size={test_size}, val_size={val_size} are not valid"):
        S.stratified_split(labels, test_size=test_size, val_size=val_size, random_state=0)


def test_split_summary_counts_classes_that_are_absent():
    labels = np.array([0, 0, 1, 2, 2, 2])  # no image of classes 3..6
    summary = S.split_summary(labels, {"train": np.array([0, 2, 3]), "test": np.array([5])})
    assert summary["train"] == {
        "total": 3,
        "per_class": {c: n for c, n in zip(CLASSES, [1, 1, 1, 0, 0, 0, 0])},
    }
    assert summary["test"]["total"] == 1 and summary["test"]["per_class"]["neutral"] == 0


def _dataset_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    labels = np.random.default_rng(3).permutation(np.repeat(np.arange(7), 30))
    n = len(labels)
    dataset = Dataset(
        np.zeros((n, 48, 48), np.uint8),
        labels,
        np.array([f"img{i}" for i in range(n)]),
        np.array(["Training"] * n),
    )
    save_dataset(tmp_path / "fer.npz", dataset)
    return tmp_path / "fer.npz", labels


@pytest.mark.parametrize(
    ("params", "fractions"),
    [
        ({"data": {"test_size": 0.3, "val_size": 0.2, "random_state": 7}}, (0.3, 0.2, 7)),
        ({}, (0.2, 0.1, 42)),
    ],
)
def test_split_stage_writes_the_split_and_its_summary(tmp_path, monkeypatch, params, fractions):
    dataset_file, labels = _dataset_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    paths.DATASET_FILE.parent.mkdir()
    dataset_file.rename(paths.DATASET_FILE)
    split_file, summary_file = paths.SPLIT_FILE, paths.SPLIT_SUMMARY
    summary = split_stage.run(params_of(params))
    test_size, val_size, seed = fractions
    expected = S.stratified_split(labels, test_size=test_size, val_size=val_size, random_state=seed)
    saved = load_split(split_file)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(saved[name], expected[name])
        assert saved[name].dtype == np.int64
    assert summary == S.split_summary(labels, expected)
    assert read_json(summary_file) == summary


def test_stratified_subset():
    labels = np.tile(np.arange(7), 20)
    rows = np.random.default_rng(0).permutation(np.arange(140))[:70]
    np.testing.assert_array_equal(S.stratified_subset(rows, labels, 1, 0), np.sort(rows))
    np.testing.assert_array_equal(S.stratified_subset(rows, labels, 1.5, 0), np.sort(rows))
    half = S.stratified_subset(rows, labels, 0.5, 0)
    assert len(half) == 35 and set(half) <= set(rows)
    assert np.all(np.diff(half) > 0)  # sorted
    per_class = np.bincount(labels[half], minlength=7)
    assert np.all(np.abs(per_class - np.bincount(labels[rows], minlength=7) / 2) <= 1)
    np.testing.assert_array_equal(half, S.stratified_subset(rows, labels, 0.5, 0))
    assert not np.array_equal(half, S.stratified_subset(rows, labels, 0.5, 1))


# --------------------------------------------------------------------------- evaluate.py


def test_scores_are_rounded_to_6_decimals_and_warn_about_nothing():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 301)  # neutral never true, never predicted
    predicted = np.where(rng.random(301) < 0.5, labels, rng.integers(0, 6, 301))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = scores(labels, predicted)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=range(7), zero_division=0
    )
    assert result["accuracy"] == round(accuracy_score(labels, predicted), 6)
    assert result["macro_f1"] == round(float(np.mean(f1)), 6)
    for i, name in enumerate(CLASSES):
        got = result["per_class"][name]
        assert got["precision"] == round(float(precision[i]), 6)
        assert got["recall"] == round(float(recall[i]), 6)
        assert got["f1"] == round(float(f1[i]), 6)


def test_privatetest_scores_by_hand():
    usage = np.array(["Training", "PrivateTest", "PublicTest", "PrivateTest", "PrivateTest"])
    labels = np.array([2, 0, 3, 1, 1])
    predicted = np.array([2, 0, 4, 1, 0])
    # PrivateTest: true 0 1 1, predicted 0 1 0 -> accuracy 2/3; F1 angry 2/3, disgust 2/3
    assert privatetest_scores(usage, labels, predicted) == {
        "images": 3,
        "accuracy": round(2 / 3, 6),
        "macro_f1": round(4 / 3 / 7, 6),
    }


def test_privatetest_scores_without_privatetest_images():
    usage = np.array(["Training", "PublicTest", ""])
    got = privatetest_scores(usage, np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert got == {"images": 0, "accuracy": None, "macro_f1": None}


# --------------------------------------------------------------------------- params.py


def test_run_folders():
    run_id = paths.run_id("onet-random", 43)
    assert run_id == "onet-random/seed43" and paths.parse_run_id(run_id) == ("onet-random", 43)
    assert paths.features_dir(run_id) == Path("data/features/onet-random/seed43")
    assert paths.model_dir(run_id) == Path("models/onet-random/seed43")
    assert paths.live_dir(run_id) == Path("metrics/train/onet-random/seed43")
    assert paths.eval_file(run_id) == Path("metrics/eval/onet-random/seed43.json")
    assert paths.eval_dir(run_id) == Path("metrics/eval/onet-random/seed43")
    assert paths.speed_file(run_id) == Path("metrics/speed/onet-random/seed43.json")
    assert paths.study_file(run_id) == Path("metrics/study/onet-random/seed43.json")
    assert paths.aggregate_file("onet-random") == Path("metrics/aggregate/onet-random.json")
    assert params_of({}).seeds == [42] and params_of({"seeds": [7, 3]}).seeds == [7, 3]
    for bad in ("onet-random", "onet-random/seedx", "onet-bar/seed1"):
        with pytest.raises(FerError, match="is not a run"):
            paths.parse_run_id(bad)


def test_parse_run_name_splits_at_the_last_dash_and_refuses_other_names():
    assert paths.parse_run_name("my-net-random") == ("my-net", "random")
    for name in ("onet-bar", "onet"):
        with pytest.raises(FerError, match=f"'{name}' is not a run name of the form"):
            paths.parse_run_name(name)


def test_descriptions_of_every_key():
    table = _expectations()
    assert table["optimizer"] == "one of adam, sgd, rmsprop"
    assert table["backbone.*"] == "a mapping of input_size, fraction, descriptor"
    assert table["backbone.*.fraction"] == "a number in (0, 1]"
    assert table["data.test_size"] == "a number in (0, 1)"
    assert table["heads.max_iter"] == "an integer >= 1"
    assert table["finetune.epochs"] == "an integer >= 1"
    assert table["finetune.augment.shift"] == "a number in [0, 0.5)"
    assert all(isinstance(v, str) and v for v in table.values())  # every key says what it takes
    assert _one_of(("a", "b")) == "one of a, b"


def _message(raw) -> str:
    with pytest.raises(FerError) as info:
        validate_params(raw)
    return str(info.value)


def test_dlib_random_is_refused_with_the_reason():
    raw = {"runs": ["dlib-random"], "backbone": {"dlib": {"input_size": 150}}}
    assert _message(raw) == (
        "params.yaml: runs: dlib-random: dlib has no random initialisation; use dlib-pretrained"
    )


def test_non_string_keys_are_unknown_keys_with_the_allowed_ones():
    assert _message({"data": {1: 2}}) == (
        "params.yaml: data.1: unknown key (allowed: source, kaggle_dataset, sha256, split, "
        "test_size, val_size, random_state, max_unpacked_bytes, max_image_pixels)"
    )
    assert _message({"backbone": {"vggface": {"input_size": 48, "fration": 0.5}}}) == (
        "params.yaml: backbone.vggface.fration: unknown key "
        "(allowed: input_size, fraction, descriptor)"
    )


def test_unknown_backbone_lists_the_backbones():
    assert _message({"backbone": {"vgface": {"input_size": 224}}}) == (
        "params.yaml: backbone.vgface: unknown backbone; expected a name among "
        "vggface, openface, resnet50, mobilenet, mobilenetv2, facenet, onet, dlib"
    )


def test_a_bad_list_item_names_the_list():
    raw = {"runs": ["onet-random", 5], "backbone": {"onet": {"input_size": 48}}}
    assert _message(raw).startswith("params.yaml: runs: expected a non-empty list of unique run")


def test_a_missing_required_key_is_named():
    assert _message({"backbone": {"vggface": {}}}) == (
        "params.yaml: backbone.vggface.input_size: missing; expected an integer >= 32"
    )


def test_a_non_mapping_is_described_in_pydantics_words():
    text = _message(["lr"])
    assert text.startswith("params.yaml: (top level): ") and "dictionary" in text


def test_long_values_are_cut_to_80_characters():
    kept = "a" * 78  # repr 80 characters
    assert _message({"lr": kept}).endswith(f"(got '{kept}')")
    cut = "a" * 79  # repr 81 characters: 77 of them and "..."
    assert _message({"lr": cut}).endswith(f"(got '{'a' * 76}...)")


def test_load_params_errors_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "none.yaml"
    with pytest.raises(FerError, match=f"^{missing}: parameter file not found$"):
        load_params(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(FerError) as info:
        load_params(bad)
    text = str(info.value)
    assert text.startswith(f"{bad}: not valid YAML (while parsing a flow sequence")
    assert "\n" not in text
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("5\n")
    with pytest.raises(FerError, match=f"^{scalar}: expected a mapping of parameters$"):
        load_params(scalar)
