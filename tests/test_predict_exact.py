"""The predictor computes exactly what the evaluation did, for an fp32 run.

A tiny pipeline runs to the evaluate stage; its test images are then written as PNG files
and classified by ``ferstudy predict --no-detect`` in a fresh interpreter. Every image gets
the class and the probabilities (to 1e-6, the precision of the JSON output) that evaluate
stored for it in ``test_probabilities.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_ferstudy, synthetic_images, write_zip
from PIL import Image

from ferstudy import CLASSES
from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.core.files import load_dataset


@pytest.fixture(scope="module", params=["onet-random", "onet-pretrained"])
def evaluated(request, tmp_path_factory):
    """A project whose run has been trained (fp32) and evaluated."""
    run = request.param
    root = tmp_path_factory.mktemp(run)
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params.update(runs=[run], epochs=3, lr=0.01, batch_size=16, precision="fp32")
    params["heads"]["runs"] = [run]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FER2013_PATH", str(write_zip(root / "f.zip", *synthetic_images(15, seed=2))))
        for stage in (
            ["acquire"],
            ["split"],
            ["pretrained_features", run],
            ["features", run],
            ["train", run],
            ["evaluate", run],
        ):
            assert main(stage) == 0, stage
    return run, root


def test_predict_cli_equals_evaluate(evaluated, tmp_path):
    run, root = evaluated
    with np.load(root / paths.eval_dir(f"{run}/seed42") / "test_probabilities.npz") as npz:
        rows, expected = npz["rows"], npz["probabilities"]
    images = load_dataset(root / paths.DATASET_FILE).images[rows]
    folder = tmp_path / "faces"
    folder.mkdir()
    for row, img in zip(rows, images):
        Image.fromarray(img).save(folder / f"row_{row}.png")
    out = tmp_path / "results.jsonl"
    model = str(root / paths.model_dir(f"{run}/seed42"))
    proc = run_ferstudy("predict", str(folder), "--model", model, "--no-detect", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(rows) > 0
    by_row = {int(Path(r["file"]).stem.split("_")[1]): r for r in records}
    assert sorted(by_row) == sorted(int(r) for r in rows)
    got = np.zeros_like(expected)
    for i, row in enumerate(rows):
        rec = by_row[int(row)]
        assert rec["status"] == "ok" and rec["box"] is None
        assert list(rec["probabilities"]) == list(CLASSES)
        got[i] = list(rec["probabilities"].values())
        assert rec["emotion"] == CLASSES[int(expected[i].argmax())], rec
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # not a trivial agreement: the model's answers differ across the test images
    assert len({int(p.argmax()) for p in expected}) > 1
    assert np.ptp(expected, axis=0).max() > 0.05
