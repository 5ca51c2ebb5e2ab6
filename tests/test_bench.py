"""The benchmark runs end to end on a tiny dataset and reports the naive/cached ratio and
each stage against its floor; the FLOP counter and the matmul rate alone."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import synthetic_images, write_zip

from ferstudy.cli import main
from ferstudy.tools import bench
from ferstudy.tools.bench import matmul_gflops, tail_gemms, tail_training_flops

keras = tf.keras
L = keras.layers


def test_bench_small(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER2013_PATH", str(write_zip(tmp_path / "f.zip", *synthetic_images(20))))
    (tmp_path / "params.yaml").write_text(
        "lr: 0.001\nbatch_size: 16\ndata: {source: kaggle}\n"
        "backbone: {openface: {input_size: 96}, onet: {input_size: 48, fraction: 0.5}}\n"
        "finetune: {runs: [onet-pretrained], batch_size: 8}\n"
    )
    assert main(["acquire"]) == 0 and main(["split"]) == 0
    assert (
        main(
            [
                "bench",
                "--subset",
                "60",
                "--epochs",
                "1",
                "--backbone",
                "onet",
                "--batches",
                "1",
                "--backbones",
                "openface,onet",
                "--feature-images",
                "40",
                "--tail-images",
                "32",
                "--out",
                "b.json",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "b.json").read_text())
    assert set(result["forward_images_per_second"]) == {"openface", "onet"}
    assert result["forward_images_per_second"]["openface"]["fp32"] > 0
    c = result["cached_vs_naive"]
    assert c["images"] >= 50 and c["speedup"] > 0 and c["naive_total_seconds"] > 0
    f = result["floors"]
    assert f["matmul_gflops"]["fp32"] > 0 and f["matmul_gflops"]["bf16"] > 0
    assert set(f["backbones"]) == {"openface", "onet"}
    for name, b in f["backbones"].items():
        feats, tail, k = b["features"], b["tail"], b["checkpoint"]
        assert feats["images"] == 40 and feats["precision"] in ("fp32", "bf16")
        assert tail["feature_precision"] == feats["precision"]  # features stored as the stage does
        assert feats["ratio"] == pytest.approx(
            feats["stage_images_per_second"] / feats["forward_images_per_second"], abs=2e-3
        )
        assert tail["images"] == 32 and tail["batch_size"] == 16 and tail["step_ms"] > 0
        assert tail["matmuls"] == 5  # fc forward + weights; classifier forward, weights, input
        for p in ("fp32", "bf16"):
            floor = tail["matmul_ms"][p] + tail["optimizer_ms"]
            assert tail["floor_ms"][p] == pytest.approx(floor, abs=2e-3)
            assert tail["vs_floor"][p] == pytest.approx(floor / tail["step_ms"], rel=1e-3, abs=1e-3)
        assert k["checkpoint_seconds"] > 0 and k["megabytes"] > 0 and k["epoch_seconds"] > 0
        assert k["scheduled_share"] <= k["per_epoch_share"]
        assert set(b["met"]) == set(f["targets"])
        missed = {f"{name}: {key}" for key, ok in b["met"].items() if not ok}
        assert missed <= set(f["not_met"])
    assert (
        f["backbones"]["onet"]["tail"]["trainable_parameters"] == 1152 * 256 + 256 * 2 + 256 * 7 + 7
    )
    tuned = f["finetune"]["onet-pretrained"]
    assert tuned["batch_size"] == 8 and tuned["input_size"] == 48 and tuned["step_ms"] > 0
    # ONet's 4 convolutions, fc5 and the emotion classifier: forward, weights' and input
    # gradient each, but no input gradient for the first convolution
    assert tuned["matmuls"] == 3 * 6 - 1
    for p in ("fp32", "bf16"):
        floor = tuned["matmul_ms"][p] + tuned["optimizer_ms"]
        assert tuned["floor_ms"][p] == pytest.approx(floor, abs=2e-3)
    assert (tuned["met"] is False) == ("onet-pretrained: finetune_vs_floor_fp32" in f["not_met"])
    assert not list(tmp_path.glob(".ferstudy/checkpoints/*")), "a checkpoint left the scratch"
    out = capsys.readouterr().out
    assert "Speed-up" in out and "| backbone | feature stage / forward (img/s) |" in out


def test_tail_gemms_by_hand():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3)(inp)  # output 6x6: 36 rows per image, 3*3*3 = 27 inputs, 4 outputs
    x = L.DepthwiseConv2D(3)(x)  # output 4x4: 16 rows per image, 9 kernel pixels, 4 channels
    model = keras.Model(inp, L.Dense(5)(L.Flatten()(x)))  # 64 -> 5
    assert tail_gemms(model, 2) == [
        (72, 27, 4),  # conv forward
        (27, 72, 4),  # its weights' gradient; no input gradient (fed by the input)
        (32, 9, 4),  # depthwise forward
        (9, 32, 4),  # weights' gradient
        (32, 4, 9),  # input gradient: the conv below trains
        (2, 64, 5),
        (64, 2, 5),
        (2, 5, 64),
    ]
    assert tail_training_flops(model) * 2 == sum(2 * m * k * n for m, k, n in tail_gemms(model, 2))


def test_tail_gemms_walk_into_a_nested_model():
    inner_input = keras.Input((8, 8, 3))
    inner = keras.Model(inner_input, L.Conv2D(4, 3)(inner_input))  # 6x6x4, as a backbone
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, L.Dense(5)(L.Flatten()(inner(inp))))  # 144 -> 5, as a classifier
    assert tail_gemms(model, 2) == [
        (72, 27, 4),  # the nested conv: forward and weights' gradient, no input gradient
        (27, 72, 4),
        (2, 144, 5),
        (144, 2, 5),
        (2, 5, 144),  # the conv below trains
    ]


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
    assert matmul_gflops("fp32", 32, 16, 8) > 0
    assert matmul_gflops("bf16", 32, 16, 8) > 0


def test_the_gemm_program_computes_every_matmul_on_its_own_operands():
    gemms = [(2, 3, 4), (5, 1, 1), (2, 3, 4)]
    products = bench.gemm_program(gemms, "fp32")()
    assert [tuple(p.shape) for p in products] == [(m, n) for m, _, n in gemms]
    assert not np.allclose(products[0], products[2])  # same shape, other operands: not merged
    assert bench.gemm_seconds(gemms, "bf16") > 0 and bench.gemm_seconds([], "fp32") == 0
