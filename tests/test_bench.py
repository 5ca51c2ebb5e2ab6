"""The benchmark runs end to end on a tiny dataset and reports the naive/cached ratio and
each stage against its floor; the FLOP counter and the matmul rate alone."""

import json

import tensorflow as tf
from conftest import synthetic_images, write_zip

from ferstudy.cli import main
from ferstudy.tools.bench import matmul_gflops, tail_training_flops

keras = tf.keras
L = keras.layers


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
                "--tail-backbone",
                "onet",
                "--tail-images",
                "32",
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
    f = result["floors"]
    assert f["features_vs_forward"] == c["features_vs_forward"]
    assert f["matmul_gflops"]["fp32"] > 0 and f["matmul_gflops"]["bf16"] > 0
    assert f["tail"]["backbone"] == "onet" and f["tail"]["images"] == 32
    assert f["tail_gflops"] > 0 and f["tail"]["training_flops_per_image"] > 0
    assert f["tail_vs_matmul_fp32"] == round(f["tail_gflops"] / f["matmul_gflops"]["fp32"], 3)
    k = f["checkpoint"]
    assert k["checkpoint_seconds"] > 0 and k["megabytes"] > 0 and k["epoch_seconds"] > 0
    assert k["scheduled_share"] <= k["per_epoch_share"]
    assert (
        set(f["targets"])
        == set(f["met"])
        == {
            "features_vs_forward",
            "tail_vs_matmul_fp32",
            "checkpoint_share",
        }
    )
    assert not list(tmp_path.glob(".ferstudy/checkpoints/*")), "a checkpoint left the scratch"
    out = capsys.readouterr().out
    assert "Speed-up" in out and "| stage | measured | floor | ratio | target | met |" in out


def test_tail_training_flops_by_hand():
    inp = keras.Input((8, 8, 3))
    conv = L.Conv2D(4, 3)  # 3x3, 3 -> 4 channels, output 6x6
    x = L.DepthwiseConv2D(3)(conv(inp))  # 3x3 on 4 channels, output 4x4
    model = keras.Model(inp, L.Dense(5)(L.Flatten()(x)))  # 4*4*4 = 64 -> 5
    conv_f, depthwise_f, dense_f = 2 * 3 * 3 * 3 * 4 * 6 * 6, 2 * 3 * 3 * 4 * 4 * 4, 2 * 64 * 5
    # forward + weights' gradient everywhere; input gradient only below a trainable layer
    assert tail_training_flops(model) == 2 * conv_f + 3 * depthwise_f + 3 * dense_f == 20928
    conv.trainable = False  # forward only; nothing trainable above the depthwise layer
    assert tail_training_flops(model) == conv_f + 2 * depthwise_f + 3 * dense_f


def test_matmul_gflops_tiny():
    assert matmul_gflops("fp32", 32, 16, 8, repeats=2) > 0
    assert matmul_gflops("bf16", 32, 16, 8, repeats=2) > 0
