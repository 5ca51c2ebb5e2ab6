"""The benchmark runs end to end on a tiny dataset and reports the naive/cached ratio."""

import json

from conftest import synthetic_images, write_zip

from ferstudy.cli import main


def test_bench_small(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER2013_PATH", str(write_zip(tmp_path / "f.zip", *synthetic_images(20))))
    (tmp_path / "params.yaml").write_text("lr: 0.001\nbatch_size: 16\ndata: {source: kaggle}\n")
    assert main(["acquire"]) == 0 and main(["split"]) == 0
    assert (
        main(
            [
                "bench",
                "--subset",
                "60",
                "--epochs",
                "2",
                "--batches",
                "1",
                "--backbones",
                "openface",
                "--out",
                "b.json",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "b.json").read_text())
    assert set(result["forward_images_per_second"]) == {"openface"}
    assert result["forward_images_per_second"]["openface"]["fp32"] > 0
    c = result["cached_vs_naive"]
    assert c["images"] >= 50 and c["speedup"] > 0 and c["naive_total_seconds"] > 0
    assert c["features_vs_forward"] > 0 and c["forward_alone_images_per_second"] > 0
    assert "Speed-up" in capsys.readouterr().out
