"""The flipped stage caches exactly what the features stage computes for mirrored images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import synthetic_images, write_zip

from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.data.feature_cache import CachedFeatures, flipped_dir, load_flipped

ROOT = Path(__file__).resolve().parents[1]


def _pipeline(root: Path, images: np.ndarray, labels: np.ndarray, run: str, precision: str):
    root.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(runs=[run], seeds=[42], precision=precision)
    params["heads"]["runs"] = [run]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FER2013_PATH", str(write_zip(root / "f.zip", images, labels)))
        for stage in (
            ["acquire"],
            ["split"],
            ["pretrained_features", run],
            ["features", run],
            ["flipped", run],
        ):
            assert main(stage) == 0, stage


@pytest.mark.parametrize(
    ("run", "precision"), [("onet-pretrained", "fp32"), ("onet-random", "bf16")]
)
def test_flipped_features_are_the_features_of_mirrored_images(tmp_path, run, precision):
    images, labels = synthetic_images(per_class=12, seed=4)
    _pipeline(tmp_path / "a", images, labels, run, precision)
    _pipeline(tmp_path / "b", np.flip(images, axis=2), labels, run, precision)  # left-right
    run_id = paths.run_id(run, 42)
    a = CachedFeatures(tmp_path / "a" / paths.features_dir(run_id))
    b = CachedFeatures(tmp_path / "b" / paths.features_dir(run_id))
    assert np.array_equal(a.rows["train"], b.rows["train"])  # same split: same labels
    stored_a = np.load(tmp_path / "a" / flipped_dir(run_id) / "train.npy")
    assert stored_a.dtype == b.array("train").dtype
    assert np.array_equal(stored_a, b.array("train"))  # byte for byte
    assert not np.array_equal(stored_a, a.array("train"))  # the images are not symmetric


def test_flipped_features_decode_like_the_cached_ones(tmp_path, monkeypatch):
    images, labels = synthetic_images(per_class=12, seed=4)
    _pipeline(tmp_path / "a", images, labels, "onet-random", "bf16")
    monkeypatch.chdir(tmp_path / "a")
    run_id = paths.run_id("onet-random", 42)
    cache = CachedFeatures(paths.features_dir(run_id))
    flipped = load_flipped(run_id, cache)
    assert flipped.dtype == np.float32 and flipped.shape == cache.array("train").shape
