"""The export stage: a model chosen on validation only, written into the package with a card
whose scores the written model reproduces, and refused when a file does not match its card.

Two seeds of a fine-tuned ONet learn a generated dataset in a few epochs; fer's real model is
the outside reference (fetched once per test session).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import fer_model_file, synthetic_images, write_zip

import ferstudy
from ferstudy.analysis.selection import Candidate, candidates, choose, combine
from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import file_sha256, load_dataset, read_json
from ferstudy.data.splits import usage_split
from ferstudy.models.classifier import load_shipped, read_card
from ferstudy.models.registry import get_backbone
from ferstudy.models.store import load_model
from ferstudy.models.transfer import image_transform, predict_images
from ferstudy.stages.export import EXPORT_DIR, EXPORT_FILE

RUN = "onet-random"
TUNED = paths.finetune_run(RUN)
SEEDS = [42, 43]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(runs=[RUN], seeds=SEEDS)
    params["heads"]["runs"] = []
    params["finetune"].update(runs=[RUN], epochs=4, lr=0.003, batch_size=16, warmup_epochs=1)
    params["export"] = {"runs": [RUN]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    images, labels = synthetic_images(per_class=24, seed=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FER2013_PATH", str(write_zip(root / "f.zip", images, labels)))
        mp.setenv("FER_MODEL_PATH", str(fer_model_file()))
        mp.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
        for command in (["acquire"], ["split"], ["outside"]):
            assert main(command) == 0
        for seed in SEEDS:
            assert main(["finetune", RUN, "--seed", str(seed)]) == 0
        assert main(["export", RUN]) == 0
        yield root


def _truth(root: Path) -> np.ndarray:
    """Each dataset row's generated label, read back from its file name in the zip."""
    _, labels = synthetic_images(per_class=24, seed=5)
    ids = load_dataset(root / paths.DATASET_FILE).ids
    return np.array([labels[int(re.search(r"_(\d+)\.png$", str(i)).group(1))] for i in ids])


def test_the_choice_is_the_best_validation_candidate(exported):
    result = read_json(exported / EXPORT_FILE)
    dataset = load_dataset(exported / paths.DATASET_FILE)
    val = usage_split(dataset.usage)["val"]
    truth = _truth(exported)
    plain, flipped = {}, {}
    for seed in SEEDS:  # each seed's probabilities the evaluation way, not the export way
        loaded = load_model(exported / paths.model_dir(paths.run_id(TUNED, seed)))
        transform = image_transform(get_backbone("onet").preprocess, loaded.config["input_size"])
        plain[seed] = predict_images(loaded.model, transform, dataset.images[val])
        flipped[seed] = predict_images(loaded.model, transform, dataset.images[val][:, :, ::-1])
    options = candidates(SEEDS)
    best, table = choose(options, plain, flipped, truth[val])
    assert result["validation_accuracy"] == pytest.approx(table, abs=1e-6)
    assert result["shipped"] == best.name
    assert len(table) == 6  # 2 seeds + their ensemble, each with and without flip
    accuracy = np.mean(combine(best, plain, flipped).argmax(1) == truth[val])
    assert table[best.name] == max(table.values())
    assert accuracy == pytest.approx(table[best.name], abs=1e-6)


def test_the_shipped_model_reproduces_its_card_through_the_public_api(exported):
    folder = exported / EXPORT_DIR
    card = read_card(folder)
    result = read_json(exported / EXPORT_FILE)
    assert card["scores"] == result
    for member in card["members"]:
        assert member["weights_sha256"] == file_sha256(folder / member["folder"] / "weights.h5")
    dataset = load_dataset(exported / paths.DATASET_FILE)
    test = usage_split(dataset.usage)["test"]
    assert set(dataset.usage[test]) == {"PrivateTest"}
    records = ferstudy.analyze(list(dataset.images[test]), model=folder, detector=None)
    predicted = np.array([ferstudy.CLASSES.index(r["emotion"]) for r in records])
    accuracy = float(np.mean(predicted == _truth(exported)[test]))
    assert accuracy == pytest.approx(result["privatetest"]["accuracy"], abs=1e-6)
    assert result["privatetest"]["low"] <= accuracy <= result["privatetest"]["high"]
    text = (folder / "MODEL_CARD.md").read_text()
    assert f"Accuracy {100 * accuracy:.1f} %" in text and card["name"] in text
    augment = ", ".join(f"{k} {v}" for k, v in card["recipe"]["augmentation"].items())
    assert "flip True" in augment and f"Augmentation on the fly: {augment}." in text


def test_paired_differences_are_those_of_the_predictions(exported):
    """Recomputed from fer's saved answers and the shipped model's own, row by row."""
    result = read_json(exported / EXPORT_FILE)
    dataset = load_dataset(exported / paths.DATASET_FILE)
    test = usage_split(dataset.usage)["test"]
    truth = _truth(exported)
    records = ferstudy.analyze(
        list(dataset.images[test]), model=exported / EXPORT_DIR, detector=None
    )
    shipped = {
        row: ferstudy.CLASSES.index(r["emotion"]) == truth[row] for row, r in zip(test, records)
    }
    with np.load(exported / paths.OUTSIDE_PROBABILITIES) as saved:
        fer = {
            row: p.argmax() == truth[row] for row, p in zip(saved["rows"], saved["probabilities"])
        }
    only_shipped = sum(shipped[r] and not fer[r] for r in test)
    only_fer = sum(fer[r] and not shipped[r] for r in test)
    d = result["minus_fer"]
    assert (d["only_a_right"], d["only_b_right"], d["images"]) == (
        only_shipped,
        only_fer,
        len(test),
    )
    assert d["difference"] == pytest.approx((only_shipped - only_fer) / len(test), abs=1e-6)
    assert result["fer_privatetest"]["accuracy"] == pytest.approx(
        np.mean([fer[r] for r in test]), abs=1e-6
    )
    ensemble = result["minus_single_best"]["ensemble"]  # two seeds: always a candidate apart
    assert (
        ensemble["images"] == len(test)
        and ensemble["low"] <= ensemble["difference"] <= ensemble["high"]
    )
    assert result["single_best"] in {Candidate((s,), False).name for s in SEEDS}


def test_the_choice_never_looks_at_privatetest(exported, tmp_path, monkeypatch):
    """Seed 42 is right on every validation image and wrong on every test image, seed 43 the
    reverse: the export must ship seed 42 and measure it at 0 on PrivateTest."""
    import shutil

    from ferstudy.models.classifier import Ensemble, mirrored
    from ferstudy.stages import export

    root = tmp_path / "project"
    shutil.copytree(exported, root, ignore=shutil.ignore_patterns("src"))
    dataset = load_dataset(root / paths.DATASET_FILE)
    val = set(usage_split(dataset.usage)["val"].tolist())
    truth = _truth(root)
    rows = {image.tobytes(): row for row, image in enumerate(dataset.images)}
    rows.update({image[:, ::-1].tobytes(): row for row, image in enumerate(dataset.images)})

    def fake(model, faces):
        if isinstance(model, Ensemble):
            views = [faces, mirrored(faces)] if model.flip else [faces]
            return np.mean([fake(m, v) for m in model.members for v in views], axis=0)
        seed = int(model.name.rsplit("seed", 1)[1])
        out = np.full((len(faces), 7), 0.1 / 6)
        for i, face in enumerate(faces):
            row = rows[np.ascontiguousarray(face).tobytes()]
            right = (row in val) == (seed == 42)
            out[i, truth[row] if right else (truth[row] + 1) % 7] = 0.9
        return out

    monkeypatch.chdir(root)
    monkeypatch.setattr(export, "predict_in_batches", fake)
    assert main(["export", RUN]) == 0
    result = read_json(root / EXPORT_FILE)
    assert result["validation_accuracy"]["seed42"] == 1.0
    assert result["validation_accuracy"]["seed43"] == 0.0
    assert result["shipped"] == "seed42" and result["privatetest"]["accuracy"] == 0.0


def test_a_member_that_does_not_match_its_card_is_refused(exported, tmp_path):
    import shutil

    copy = tmp_path / "shipped"
    shutil.copytree(exported / EXPORT_DIR, copy)
    member = read_card(copy)["members"][0]["folder"]
    weights = copy / member / "weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(
        FerError, match=rf"{member}/weights.h5: sha256 does not match the model card"
    ):
        load_shipped(copy)
    shutil.copyfile(exported / EXPORT_DIR / member / "weights.h5", weights)
    load_shipped(copy)  # restored: accepted again
    config = copy / member / "config.json"
    config.write_text(config.read_text().replace('"input_size": 48', '"input_size": 64'))
    with pytest.raises(FerError, match=rf"{member}/config.json: sha256 does not match"):
        load_shipped(copy)
    (copy / "card.json").unlink()
    with pytest.raises(FerError, match="no shipped model"):
        load_shipped(copy)


def test_the_cards_commit_is_modified_only_by_code_or_configuration(tmp_path, monkeypatch):
    import subprocess

    from ferstudy.stages.export import _commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], check=True, capture_output=True)

    monkeypatch.chdir(tmp_path)
    assert _commit() == {"commit": None, "modified": None}  # outside git
    git("init", "-q")
    for name in ("src/ferstudy/stage.py", "src/ferstudy/shipped/card.json", "metrics/a.json"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text("1")
    Path("params.yaml").write_text("lr: 1")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert _commit() == {"commit": head.strip(), "modified": False}
    Path("metrics/a.json").write_text("2")  # an output a running pipeline rewrites
    Path("src/ferstudy/shipped/card.json").write_text("2")  # what export itself writes
    assert _commit()["modified"] is False
    Path("params.yaml").write_text("lr: 2")
    assert _commit()["modified"] is True
    git("checkout", "params.yaml")
    Path("src/ferstudy/stage.py").write_text("2")
    assert _commit()["modified"] is True
