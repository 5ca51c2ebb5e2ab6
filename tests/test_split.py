import numpy as np
import pytest

from ferstudy import CLASSES
from ferstudy.core.errors import FerError
from ferstudy.data.splits import split_summary, stratified_split


@pytest.fixture
def labels():
    rng = np.random.default_rng(1)
    counts = [495, 55, 512, 899, 608, 400, 620]  # FER2013's proportions, one tenth
    return rng.permutation(np.repeat(np.arange(7), counts))


def test_fractions_and_stratification(labels):
    split = stratified_split(labels, test_size=0.2, val_size=0.1, random_state=42)
    n = len(labels)
    assert abs(len(split["test"]) - 0.2 * n) <= 1
    assert abs(len(split["val"]) - 0.1 * n) <= 1
    for name, frac in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        per_class = np.bincount(labels[split[name]], minlength=7)
        target = frac * np.bincount(labels, minlength=7)
        assert np.all(np.abs(per_class - target) <= 1), (name, per_class, target)


def test_disjoint_and_complete(labels):
    split = stratified_split(labels, test_size=0.2, val_size=0.1, random_state=42)
    together = np.concatenate(list(split.values()))
    assert len(together) == len(set(together.tolist())) == len(labels)


def test_deterministic_and_seed_dependent(labels):
    a = stratified_split(labels, test_size=0.2, val_size=0.1, random_state=42)
    b = stratified_split(labels, test_size=0.2, val_size=0.1, random_state=42)
    c = stratified_split(labels, test_size=0.2, val_size=0.1, random_state=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_full_size_counts_match_documented_calls():
    counts = [4953, 547, 5121, 8989, 6077, 4002, 6198]
    labels = np.repeat(np.arange(7), counts)
    split = stratified_split(labels, test_size=0.2, val_size=0.1, random_state=42)
    assert [len(split[k]) for k in ("train", "val", "test")] == [25120, 3589, 7178]
    summary = split_summary(labels, split)
    assert sum(summary["train"]["per_class"].values()) == 25120
    assert list(summary["val"]["per_class"]) == list(CLASSES)


def test_invalid_fractions_and_too_few_images():
    with pytest.raises(FerError):
        stratified_split(np.zeros(10, int), test_size=0.7, val_size=0.4, random_state=0)
    with pytest.raises(FerError, match="cannot split"):
        stratified_split(np.array([0, 0, 0, 1]), test_size=0.2, val_size=0.1, random_state=0)


def test_usage_split_is_fer2013s_own_protocol():
    from ferstudy.data.splits import usage_split

    usage = np.array(["Training", "PrivateTest", "PublicTest", "Training", "PrivateTest"])
    split = usage_split(usage)
    assert {k: v.tolist() for k, v in split.items()} == {
        "train": [0, 3],
        "val": [2],
        "test": [1, 4],
    }
    with pytest.raises(FerError) as err:
        usage_split(np.array(["Training", "PrivateTest"]))
    assert str(err.value) == (
        "data.split: usage needs images of every FER2013 usage; none is PublicTest "
        "(a source without usage: use data.split: stratified)"
    )
    with pytest.raises(FerError, match="none is Training, PublicTest, PrivateTest"):
        usage_split(np.array(["", ""]))  # a folder source without usage


def test_split_stage_with_usage(tmp_path, monkeypatch):
    from conftest import synthetic_images, write_zip

    from ferstudy.cli import main
    from ferstudy.core import paths
    from ferstudy.core.files import load_dataset, load_split

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER2013_PATH", str(write_zip(tmp_path / "f.zip", *synthetic_images(10))))
    (tmp_path / "params.yaml").write_text("data: {source: kaggle, split: usage}\n")
    assert main(["acquire"]) == 0 and main(["split"]) == 0
    usage = load_dataset(paths.DATASET_FILE).usage
    split = load_split(paths.SPLIT_FILE)
    for name, value in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")):
        assert len(split[name]) and set(usage[split[name]]) == {value}
    assert sum(len(v) for v in split.values()) == len(usage)
