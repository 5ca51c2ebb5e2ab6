"""The scikit-learn heads on cached features: fitted, chosen on validation, scored, and
compared with the dense head, on hand-made feature folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import params_of
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ferstudy.analysis import ranking
from ferstudy.analysis.stats import paired_difference
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import SPLITS, save_npz, write_json
from ferstudy.core.params import validate_params
from ferstudy.stages import heads as H

RUN = "onet-pretrained"
SIZES = {"train": 350, "val": 70, "test": 140}


def _features(seed: int = 0) -> tuple[dict, dict]:
    """Features whose first 7 dims point at the class, with noise; 7 imbalanced classes."""
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    for name, n in SIZES.items():
        y[name] = rng.choice(7, n, p=[0.3, 0.05, 0.15, 0.2, 0.1, 0.1, 0.1])
        x[name] = rng.normal(0, 1.0, (n, 12)).astype(np.float32)
        x[name][np.arange(n), y[name]] += 1.5
    return x, y


def _write_folder(run_id: str, x: dict, y: dict) -> None:
    folder = paths.features_dir(run_id)
    folder.mkdir(parents=True)
    offset = 0
    rows = {}
    for name in SPLITS:
        np.save(folder / f"{name}.npy", x[name])
        rows[name] = np.arange(offset, offset + len(y[name]))
        offset += len(y[name])
    np.savez(
        folder / "labels.npz",
        **{f"{n}_labels": y[n] for n in SPLITS},
        **{f"{n}_rows": rows[n] for n in SPLITS},
    )
    write_json(folder / "meta.json", {"dtype": "float32"})


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _features()
    usage = np.array(["Training"] * 420 + ["PrivateTest"] * 70 + ["PublicTest"] * 70)
    save_npz(paths.DATASET_FILE, usage=usage, labels=np.concatenate([y[n] for n in SPLITS]))
    for seed in (1, 2):
        _write_folder(paths.run_id(RUN, seed), x, y)
    params = {
        "seeds": [1, 2],
        "heads": {
            "runs": [RUN],
            "kinds": ["logistic", "linear_svm"],
            "C": [0.001, 1.0],
            "class_weight": "balanced",
            "max_iter": 1000,
            "flip": False,
        },
    }
    return params, x, y


def test_heads_are_chosen_on_validation_and_scored_like_scikit_learn(project):
    params, x, y = project
    result = H.run(params_of(params), RUN, 1)
    saved = json.loads(paths.heads_file(paths.run_id(RUN, 1)).read_text())
    assert saved == json.loads(json.dumps({k: v for k, v in result.items() if k != "seconds"}))
    logistic = result["logistic"]
    assert set(logistic["val_accuracy_by_C"]) == {"0.001", "1"}
    best_c = max([0.001, 1.0], key=lambda c: (logistic["val_accuracy_by_C"][f"{c:g}"], -c))
    assert logistic["C"] == best_c
    # the same head fitted here by hand gives the same test accuracy
    scaler = StandardScaler().fit(x["train"])
    model = LogisticRegression(C=best_c, class_weight="balanced", max_iter=1000, random_state=1)
    model.fit(scaler.transform(x["train"]), y["train"])
    expected = np.mean(model.predict(scaler.transform(x["test"])) == y["test"])
    assert logistic["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert logistic["test_accuracy"] > 0.5  # the features carry the class: far above 1/7
    assert result["linear_svm"]["test_accuracy"] > 0.5
    private = logistic["privatetest"]  # test rows 420..489 are PrivateTest
    assert private["images"] == 70
    with np.load(paths.predictions_file(paths.run_id(RUN, 1), "logistic")) as npz:
        assert len(npz["predicted"]) == SIZES["test"]
        assert np.mean(npz["predicted"] == y["test"]) == pytest.approx(expected)


def test_balanced_weights_reach_the_classifier_and_unknown_kinds_are_refused():
    head = H.make_head("linear_svm", 0.5, "balanced", 10, 0)
    assert head[-1].class_weight == "balanced" and head[-1].C == 0.5
    assert H.make_head("logistic", 1.0, None, 10, 0)[-1].class_weight is None
    with pytest.raises(ValueError, match="unknown head kind"):
        H.make_head("tree", 1.0, None, 10, 0)


def test_heads_are_compared_with_the_dense_head_paired(project):
    params, x, y = project
    rng = np.random.default_rng(3)
    dense = []
    for seed in (1, 2):
        H.run(params_of(params), RUN, seed)
        right = rng.random(SIZES["test"]) < 0.3  # a weak dense head
        dense.append(right)
        predicted = np.where(right, y["test"], (y["test"] + 1) % 7)
        save_npz(
            paths.eval_dir(paths.run_id(RUN, seed)) / "test_probabilities.npz",
            rows=np.arange(420, 560),
            probabilities=np.eye(7, dtype=np.float32)[predicted],
        )
    labels = np.concatenate([y[n] for n in SPLITS])
    out = ranking.compare_with_dense(RUN, [1, 2], ["logistic"], labels)
    heads_right = []
    for seed in (1, 2):
        with np.load(paths.predictions_file(paths.run_id(RUN, seed), "logistic")) as npz:
            heads_right.append(npz["predicted"] == y["test"])
    expected = paired_difference(np.array(heads_right), np.array(dense), paired_seeds=True)
    got = out["logistic"]["minus_dense"]
    assert got["difference"] == pytest.approx(expected.difference)
    assert (got["low"], got["high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert got["paired_seeds"] and got["difference"] > 0.2
    assert out["logistic"]["test_accuracy"]["n"] == 2
    save_npz(  # a head scored on other images than the dense head cannot be paired with it
        paths.predictions_file(paths.run_id(RUN, 2), "logistic"),
        rows=np.arange(421, 561),
        predicted=np.zeros(140, int),
    )
    with pytest.raises(FerError) as err:
        ranking.compare_with_dense(RUN, [1, 2], ["logistic"], labels)
    assert str(err.value) == f"{RUN} logistic: scored on other test images; rerun heads"


def test_heads_need_runs_of_the_matrix():

    with pytest.raises(FerError, match="heads.runs: openface-pretrained is not in runs"):
        validate_params(
            {
                "lr": 1e-4,
                "runs": ["onet-pretrained"],
                "backbone": {"onet": {"input_size": 48}},
                "heads": {"runs": ["openface-pretrained"]},
            }
        )


def test_flip_adds_the_mirrored_training_features(project):
    """heads.flip: the head is fitted on the cached training features and the flipped stage's
    features of the mirrored images, with the labels repeated."""
    from ferstudy.data.feature_cache import FLIPPED_TRAIN, META, flipped_dir

    params, x, y = project
    mirrored = np.random.default_rng(5).normal(0, 1.0, x["train"].shape).astype(np.float32)
    mirrored[np.arange(len(y["train"])), y["train"]] += 1.5
    folder = flipped_dir(paths.run_id(RUN, 1))
    folder.mkdir(parents=True)
    np.save(folder / FLIPPED_TRAIN, mirrored)
    write_json(folder / META, {"of": {"dtype": "float32"}})
    params["heads"].update(kinds=["logistic"], C=[1.0], flip=True)
    result = H.run(params_of(params), RUN, 1)
    assert result["flip"] and result["train_images"] == 2 * SIZES["train"]
    both = np.concatenate([x["train"], mirrored])
    scaler = StandardScaler().fit(both)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=1)
    model.fit(scaler.transform(both), np.concatenate([y["train"], y["train"]]))
    expected = np.mean(model.predict(scaler.transform(x["test"])) == y["test"])
    assert result["logistic"]["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    write_json(folder / META, {"of": {"dtype": "float32", "seed": 3}})  # other features
    with pytest.raises(FerError, match="computed from other features"):
        H.run(params_of(params), RUN, 1)
