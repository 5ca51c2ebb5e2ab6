"""Fine-tuning mode: the whole network learns, keeps its best validation epoch, stops early,
resumes exactly, and is scored on its own split's test images like any run.

Accuracies are checked against the labels the images were *generated* with (read back from
each image's file name in the zip), not the labels the pipeline carries along.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import synthetic_images, write_zip

from ferstudy.analysis.rates import read_curves
from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import load_dataset, read_json
from ferstudy.core.params import load_params, validate_params
from ferstudy.models.transfer import predict_images
from ferstudy.stages.finetune import class_weights, learning_rate, settings, split_rows

RUN = "onet-random"
TUNED = paths.finetune_run(RUN)
ROOT = Path(__file__).resolve().parents[1]


def _params(**finetune) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(runs=[RUN], seeds=[42])
    params["heads"]["runs"] = []
    params["finetune"].update(
        runs=[RUN], epochs=6, lr=0.003, batch_size=16, warmup_epochs=1, patience=10
    )
    params["finetune"].update(finetune)
    params["export"]["runs"] = []
    return params


def _project(root: Path, mp: pytest.MonkeyPatch, **finetune) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(_params(**finetune)))
    images, labels = synthetic_images(per_class=24, seed=2)
    mp.chdir(root)
    mp.setenv("FER2013_PATH", str(write_zip(root / "f.zip", images, labels)))
    mp.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
    assert main(["acquire"]) == 0
    return root


def _generated(root: Path) -> np.ndarray:
    images, labels = synthetic_images(per_class=24, seed=2)
    ids = load_dataset(root / paths.DATASET_FILE).ids
    return np.array([labels[int(re.search(r"_(\d+)\.png$", str(i)).group(1))] for i in ids])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A finished fine-tuned run and its evaluation."""
    root = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as mp:
        _project(root, mp)
        assert main(["finetune", RUN]) == 0
        assert main(["evaluate", TUNED]) == 0
        yield root


def test_learns_far_above_chance_on_its_own_test_split(tuned):
    run_id = paths.run_id(TUNED, 42)
    result = read_json(tuned / paths.eval_file(run_id))
    with np.load(tuned / paths.eval_dir(run_id) / "test_probabilities.npz") as npz:
        rows, probabilities = npz["rows"], npz["probabilities"]
    usage = load_dataset(tuned / paths.DATASET_FILE).usage
    assert set(usage[rows]) == {"PrivateTest"}  # finetune.split: usage
    truth = _generated(tuned)[rows]
    accuracy = float(np.mean(probabilities.argmax(1) == truth))
    assert accuracy == pytest.approx(result["accuracy"])
    assert accuracy > 0.6  # chance is 1/7
    assert result["privatetest"]["images"] == len(rows)


def test_config_and_curves_of_a_finetuned_run(tuned):
    run_id = paths.run_id(TUNED, 42)
    config = read_json(tuned / paths.model_dir(run_id) / "config.json")
    assert config["mode"] == "finetune" and config["trainable_layers"] == "all"
    assert config["split"] == {"kind": "usage"}
    curves = read_curves(tuned / paths.live_dir(run_id))
    assert len(curves["val/accuracy"]) == config["epochs_run"] + 1  # epoch 0 is untrained
    best = int(np.argmax(curves["val/accuracy"][1:])) + 1
    assert config["best_epoch"] == best
    assert config["val_accuracy"] == pytest.approx(curves["val/accuracy"][best], abs=1e-6)


def test_saved_weights_are_the_best_epochs(tuned, monkeypatch):
    """The model keeps the best validation epoch: rescoring it gives that epoch's accuracy."""
    from ferstudy.models.registry import get_backbone
    from ferstudy.models.store import load_model
    from ferstudy.models.transfer import image_transform

    monkeypatch.chdir(tuned)
    loaded = load_model(paths.model_dir(paths.run_id(TUNED, 42)))
    dataset = load_dataset(paths.DATASET_FILE)
    val = split_rows(dataset, loaded.config["split"])["val"]
    transform = image_transform(get_backbone("onet").preprocess, 48)
    probabilities = predict_images(loaded.model, transform, dataset.images[val])
    accuracy = float(np.mean(probabilities.argmax(1) == dataset.labels[val]))
    assert accuracy == pytest.approx(loaded.config["val_accuracy"], abs=1e-6)


def test_stops_early_when_validation_stalls(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        _project(tmp_path, mp, lr=1e-12, epochs=20, patience=2)
        assert main(["finetune", RUN]) == 0
        config = read_json(paths.model_dir(paths.run_id(TUNED, 42)) / "config.json")
    assert config["epochs_run"] == config["best_epoch"] + 2 < 20


def _weights(root: Path) -> bytes:
    return (root / paths.model_dir(paths.run_id(TUNED, 42)) / "weights.h5").read_bytes()


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    import ferstudy.stages.finetune as F

    whole = tmp_path / "whole"
    with pytest.MonkeyPatch.context() as mp:
        _project(whole, mp, epochs=4)
        assert main(["finetune", RUN]) == 0
        config = read_json(paths.model_dir(paths.run_id(TUNED, 42)) / "config.json")
    killed = tmp_path / "killed"
    with pytest.MonkeyPatch.context() as mp:
        _project(killed, mp, epochs=4)
        calls = []

        def dies_in_epoch_3(*args):
            calls.append(args)
            if len(calls) == 4:  # epoch 0, 1, 2 logged and checkpointed; killed in 3
                raise KeyboardInterrupt
            return F.log_epoch.__wrapped__(*args)

        dies_in_epoch_3.__wrapped__ = F.log_epoch
        mp.setattr(F, "log_epoch", dies_in_epoch_3)
        with pytest.raises(KeyboardInterrupt):
            F.run(load_params(), RUN, 42)
        mp.undo()
        mp.chdir(killed)
        assert main(["finetune", RUN]) == 0
        resumed = read_json(paths.model_dir(paths.run_id(TUNED, 42)) / "config.json")
    assert _weights(killed) == _weights(whole)
    assert resumed["val_accuracy"] == config["val_accuracy"]
    assert resumed["best_epoch"] == config["best_epoch"]


def test_class_weights_balanced_as_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0, 0, 0, 1, 2, 2, 3, 4, 5, 6, 6, 6, 6])
    expected = compute_class_weight("balanced", classes=np.arange(7), y=labels)
    assert np.allclose(class_weights(labels, "balanced"), expected)
    assert np.array_equal(class_weights(labels, "none"), np.ones(7))


def test_schedule_warms_up_then_decays_to_zero():
    s = settings(
        validate_params(_params(epochs=10, warmup_epochs=2, lr=0.01)), "onet", "random", 42
    )
    lr = learning_rate(s, steps_per_epoch=5)
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(5)) == pytest.approx(0.005)
    assert float(lr(10)) == pytest.approx(0.01)
    assert float(lr(30)) == pytest.approx(0.005, abs=1e-6)
    assert float(lr(50)) == pytest.approx(0.0, abs=1e-9)


def test_a_frozen_only_backbone_or_missing_size_is_refused():
    with pytest.raises(FerError, match="dlib"):
        validate_params({**_params(), "finetune": {"runs": ["dlib-pretrained"]}})
    with pytest.raises(FerError, match="finetune.input_size.resnet50"):
        validate_params({**_params(), "finetune": {"runs": ["resnet50-random"]}})
    with pytest.raises(FerError, match="warmup_epochs"):
        validate_params({**_params(), "finetune": {"epochs": 3, "warmup_epochs": 3}})


def test_keeps_the_best_validation_epoch_not_the_last(tmp_path):
    """Validation accuracies scripted to peak at epoch 2 of 4: the saved weights are the
    weights validation saw at epoch 2."""
    import ferstudy.stages.finetune as F
    from ferstudy.models.store import load_model

    scripted = iter([0.2, 0.1, 0.3, 0.8, 0.5, 0.4])  # train 0, val 0, val 1..4
    seen: list[list[np.ndarray]] = []  # the model's weights at each prediction
    real_predict = F.predict_images

    def predict(model, transform, images, batch_size=256):
        seen.append([w.copy() for w in model.get_weights()])
        return real_predict(model, transform, images, batch_size)

    with pytest.MonkeyPatch.context() as mp:
        _project(tmp_path, mp, epochs=4)
        mp.setattr(F, "predict_images", predict)
        mp.setattr(F, "loss_and_accuracy", lambda probabilities, labels: (1.0, next(scripted)))
        F.run(load_params(), RUN, 42)
        loaded = load_model(paths.model_dir(paths.run_id(TUNED, 42)))
    assert loaded.config["best_epoch"] == 2 and loaded.config["val_accuracy"] == 0.8
    at_epoch_2, last = seen[3], seen[5]
    saved = loaded.model.get_weights()
    assert all(np.array_equal(s, w) for s, w in zip(saved, at_epoch_2))
    assert not all(np.array_equal(s, w) for s, w in zip(saved, last))


def test_predictor_on_a_finetuned_run_equals_its_evaluation(tuned, monkeypatch):
    from ferstudy.models.classifier import EmotionClassifier

    monkeypatch.chdir(tuned)
    run_id = paths.run_id(TUNED, 42)
    with np.load(paths.eval_dir(run_id) / "test_probabilities.npz") as npz:
        rows, expected = npz["rows"], npz["probabilities"]
    classifier = EmotionClassifier(paths.model_dir(run_id))
    predicted = classifier(load_dataset(paths.DATASET_FILE).images[rows])
    assert np.allclose(predicted, expected, atol=1e-5)
    assert classifier.name == run_id


@pytest.mark.parametrize("study_val", [0.2, 0.99])
def test_predict_picks_the_highest_validation_accuracy(tuned, tmp_path, monkeypatch, study_val):
    """A study run (its last epoch's val accuracy in its dvclive log) against the fine-tuned
    run (its kept epoch's, in its config): the higher one is the default model."""
    import shutil

    from conftest import saved_model

    from ferstudy.core.files import write_json
    from ferstudy.tools.predict import best_model

    monkeypatch.chdir(tmp_path)
    shutil.copytree(
        tuned / paths.model_dir(paths.run_id(TUNED, 42)), paths.model_dir(paths.run_id(TUNED, 42))
    )
    study = paths.run_id("mobilenet-random", 42)
    saved_model(paths.model_dir(study))
    write_json(paths.live_dir(study) / "metrics.json", {"val": {"accuracy": study_val}})
    tuned_val = read_json(paths.model_dir(paths.run_id(TUNED, 42)) / "config.json")["val_accuracy"]
    assert 0.2 < tuned_val < 0.99
    expected = study if study_val > tuned_val else paths.run_id(TUNED, 42)
    assert best_model() == paths.MODELS_DIR / expected


def test_only_evaluate_takes_a_finetuned_run_name(capsys):
    for stage in ("features", "train", "heads", "flipped", "finetune"):
        assert main([stage, TUNED]) == 2
        assert f"only evaluate takes a -finetune run; here give {RUN}" in capsys.readouterr().err


def _scripted_run(root: Path, accuracies: list[float], die_at_log: int | None = None) -> None:
    """Run the fine-tuning stage with validation accuracies taken from ``accuracies`` (in call
    order) and, optionally, killed at the ``die_at_log``-th epoch log."""
    import ferstudy.stages.finetune as F

    scripted, logs = iter(accuracies), []
    real_log = F.log_epoch

    def log(*args):
        logs.append(args)
        if len(logs) == die_at_log:
            raise KeyboardInterrupt
        return real_log(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
        mp.setattr(F, "loss_and_accuracy", lambda probabilities, labels: (1.0, next(scripted)))
        mp.setattr(F, "log_epoch", log)
        F.run(load_params(), RUN, 42)


def test_a_resumed_run_remembers_its_best_epoch(tmp_path):
    """Best epoch 1, patience 2: the run stops after epoch 3 and keeps epoch 1's weights. Killed
    in epoch 2 and resumed, it must still know that epoch 1 was the best."""
    train0_val0_val1, later = [0.2, 0.1, 0.9], [0.5, 0.4, 0.3, 0.2, 0.1]
    with pytest.MonkeyPatch.context() as mp:
        _project(tmp_path / "whole", mp, epochs=6, patience=2)
        _project(tmp_path / "killed", mp, epochs=6, patience=2)
    _scripted_run(tmp_path / "whole", train0_val0_val1 + later)
    with pytest.raises(KeyboardInterrupt):  # epoch 0 and 1 logged (and checkpointed), 2 not
        _scripted_run(tmp_path / "killed", train0_val0_val1 + later, die_at_log=3)
    _scripted_run(tmp_path / "killed", later)
    configs = [
        read_json(root / paths.model_dir(paths.run_id(TUNED, 42)) / "config.json")
        for root in (tmp_path / "whole", tmp_path / "killed")
    ]
    assert configs[0]["best_epoch"] == configs[1]["best_epoch"] == 1
    assert configs[0]["epochs_run"] == configs[1]["epochs_run"] == 3
    assert _weights(tmp_path / "killed") == _weights(tmp_path / "whole")
