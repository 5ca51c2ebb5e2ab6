"""A killed feature extraction resumes after its last recorded rows, on the same batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import synthetic_images, write_zip

from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.data import extraction, feature_cache
from ferstudy.data.feature_cache import CachedFeatures, extract_to_file

ROOT = Path(__file__).resolve().parents[1]
RUN = "onet-random"


class Killed(Exception):
    """Stands for the kill of a stage mid-way."""


@tf.function
def _batch_dependent(images: tf.Tensor) -> tf.Tensor:
    """Rows that depend on the batch they are computed in: misaligned batches show."""
    flat = tf.reshape(tf.cast(images, tf.float32), (tf.shape(images)[0], -1))
    return flat + tf.cast(tf.shape(images)[0], tf.float32)


def test_extraction_resumes_after_the_rows_it_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4), dtype=np.uint8)
    extract_to_file(_batch_dependent, images, tmp_path / "whole.npy", 3, "whole")
    batches: list[int] = []

    def dies_at_the_third_batch(x):
        batches.append(int(x.shape[0]))
        if len(batches) == 4:  # the probe of one image, then batches of 3, 3 and the kill
            raise Killed
        return _batch_dependent(x)

    path = tmp_path / "f.npy"
    with pytest.raises(Killed):
        extract_to_file(dies_at_the_third_batch, images, path, 3, "f", fingerprint="a")
    batches.clear()
    extract_to_file(dies_at_the_third_batch, images, path, 3, "f", fingerprint="a")
    assert batches == [1, 3, 1]  # the probe, then rows 6-8 and 9 only
    assert np.array_equal(np.load(path), np.load(tmp_path / "whole.npy"))

    batches.clear()  # other weights or images: everything again
    extract_to_file(_batch_dependent, images, path, 3, "f", fingerprint="b")
    batches.clear()
    extract_to_file(_batch_dependent, images, path, 3, "f", fingerprint="a")
    assert np.array_equal(np.load(path), np.load(tmp_path / "whole.npy"))


def test_a_record_left_from_an_earlier_file_is_never_trusted(tmp_path, monkeypatch):
    """A finished file's record survives the file (its folder deleted by a failure): the next
    file, killed before its first record, must not be taken for finished."""
    monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", "1000")
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4), dtype=np.uint8)
    path = tmp_path / "f.npy"
    extract_to_file(_batch_dependent, images, path, 3, "f", fingerprint="a")
    whole = np.load(path)
    path.unlink()
    batches: list[int] = []

    def counted(x):
        batches.append(int(x.shape[0]))
        return _batch_dependent(x)

    def dies_at_the_second_batch(x):
        if len(batches) == 2:  # the probe and one batch done
            raise Killed
        return counted(x)

    with pytest.raises(Killed):
        extract_to_file(dies_at_the_second_batch, images, path, 3, "f", fingerprint="a")
    batches.clear()
    extract_to_file(counted, images, path, 3, "f", fingerprint="a")
    assert batches == [1, 3, 3, 3, 1]  # everything again
    assert np.array_equal(np.load(path), whole)


def _project(root: Path) -> None:
    root.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(runs=[RUN], seeds=[42])
    params["heads"]["runs"] = [RUN]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    images, labels = synthetic_images(per_class=12, seed=4)
    write_zip(root / "f.zip", images, labels)


def test_a_killed_features_stage_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FERSTUDY_CHECKPOINT_SECONDS", "0")
    run_id = paths.run_id(RUN, 42)
    for name in ("whole", "killed"):
        _project(tmp_path / name)
        monkeypatch.chdir(tmp_path / name)
        monkeypatch.setenv("FER2013_PATH", str(tmp_path / name / "f.zip"))
        for stage in (["acquire"], ["split"]):
            assert main(stage) == 0
    monkeypatch.chdir(tmp_path / "whole")
    assert main(["features", RUN]) == 0

    monkeypatch.chdir(tmp_path / "killed")
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "killed" / "f.zip"))

    def killed_at_the_test_split(extract, images, path, *args, **kwargs):
        if path.name == "test.npy":
            raise Killed
        return extract_to_file(extract, images, path, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(extraction, "extract_to_file", killed_at_the_test_split)
        with pytest.raises(Killed):
            main(["features", RUN])
    assert not paths.features_dir(run_id).exists()
    assert (paths.partial_features_dir(run_id) / "val.npy.progress.json").is_file()

    seen: list[int] = []
    real_extractor = feature_cache.extractor

    def counting_extractor(frozen, transform):
        extract = real_extractor(frozen, transform)

        def counted(images):
            seen.append(int(images.shape[0]))
            return extract(images)

        return counted

    monkeypatch.setattr(extraction, "extractor", counting_extractor)
    assert main(["features", RUN]) == 0
    cache = CachedFeatures(paths.features_dir(run_id))
    assert sum(seen) - 3 == len(cache.labels["test"])  # 3 probes of one image, then test only
    assert not paths.partial_features_dir(run_id).exists()
    whole = CachedFeatures(tmp_path / "whole" / paths.features_dir(run_id))
    for name in ("train", "val", "test"):
        assert np.array_equal(cache.array(name), whole.array(name)), name
