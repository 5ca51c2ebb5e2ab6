"""Fidelity to the study: feature health, BatchNormalization recalibration, Metric[0], scores."""

import numpy as np
import pytest
import tensorflow as tf

from ferstudy.analysis import fidelity, rates
from ferstudy.analysis.health import degenerate_reason, feature_health, health_summary
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.transfer import (
    build_classifier,
    flatten_boundary,
    frozen_batchnorm_layers,
    image_transform,
    recalibrate_batchnorm,
    split_frozen_tail,
)

# --------------------------------------------------------------------------- health


def test_health_numbers_of_a_known_matrix():
    x = np.array([[1.0, 2.0, 5.0], [3.0, 2.0, 5.0]])
    h = feature_health(x)
    assert h["rms"] == pytest.approx(np.sqrt((1 + 4 + 25 + 9 + 4 + 25) / 6))
    assert h["across_image_std"] == pytest.approx(1 / 3)  # stds 1, 0, 0
    assert h["constant_fraction"] == pytest.approx(2 / 3)
    assert h["top1_variance"] == pytest.approx(1.0)  # one direction of change


@pytest.mark.parametrize(
    "scale, degenerate", [(0.0, True), (1e-20, True), (5e-4, True), (1.0, False)]
)
def test_tiny_or_constant_features_are_flagged(scale, degenerate):
    x = scale * np.random.default_rng(0).normal(size=(64, 32))
    h = feature_health(x)
    reason = degenerate_reason(h, init="random", frozen_bn="inference", frozen_batchnorm_layers=3)
    assert (reason is not None) == degenerate
    if degenerate:
        assert "BatchNormalization" in reason and "recalibrated" in reason


def test_features_that_vary_less_than_rounding_are_flagged():
    x = 10.0 + 5e-3 * np.random.default_rng(0).normal(size=(64, 32))  # 0.05 % of their size
    reason = degenerate_reason(
        feature_health(x), init="pretrained", frozen_bn="inference", frozen_batchnorm_layers=0
    )
    assert reason is not None and "% of their size" in reason


# --------------------------------------------------------------------------- BN recalibration


def _mobilenet_cut():
    model = build_backbone("mobilenet", "random", 64, seed=42)
    cut = split_frozen_tail(build_classifier(model), 4)
    return cut, image_transform(get_backbone("mobilenet").preprocess, 64)


def test_random_mobilenet_features_die_in_inference_mode_and_live_recalibrated():
    """The issue's measurement: random MobileNet's frozen output is ~0 with BN statistics
    0/1; recalibrating them (AdaBN) gives features with signal, and the health flag agrees."""
    images = np.random.default_rng(0).integers(0, 256, size=(64, 48, 48), dtype=np.uint8)
    cut, transform = _mobilenet_cut()
    x = transform(tf.constant(images))
    bn = len(frozen_batchnorm_layers(cut.frozen))
    assert bn == 26
    before = flatten_boundary(cut.frozen(x, training=False)).numpy()
    h = health_summary(
        before, init="random", frozen_bn="inference", frozen_batchnorm_layers=bn, calibration=None
    )
    assert h["degenerate"] and h["rms"] < 1e-6
    assert recalibrate_batchnorm(cut.frozen, [x[:32], x[32:]]) == 64
    after = flatten_boundary(cut.frozen(x, training=False)).numpy()
    h = health_summary(
        after,
        init="random",
        frozen_bn="recalibrated",
        frozen_batchnorm_layers=bn,
        calibration={"images": 64},
    )
    assert not h["degenerate"] and h["rms"] > 0.05
    assert all(not layer.trainable for layer in frozen_batchnorm_layers(cut.frozen))


def test_recalibration_sets_the_statistics_of_the_first_layer_exactly():
    """With one batch, the first BN's moving mean/variance are its input's batch moments."""
    images = np.random.default_rng(1).integers(0, 256, size=(16, 48, 48), dtype=np.uint8)
    cut, transform = _mobilenet_cut()
    x = transform(tf.constant(images))
    first = frozen_batchnorm_layers(cut.frozen)[0]
    probe = tf.keras.Model(cut.frozen.inputs, first.input)
    mean, var = tf.nn.moments(probe(x, training=False), axes=[0, 1, 2])
    recalibrate_batchnorm(cut.frozen, [x])
    np.testing.assert_allclose(first.moving_mean.numpy(), mean.numpy(), rtol=1e-4, atol=1e-6)
    # the fused kernel keeps the unbiased variance, as cuDNN and PyTorch do
    n = int(np.prod(probe.output_shape[:3][1:])) * 16
    np.testing.assert_allclose(
        first.moving_variance.numpy(), var.numpy() * n / (n - 1), rtol=1e-3, atol=1e-6
    )


# --------------------------------------------------------------------------- Metric[0], fidelity


def _curves(train_acc, val_acc):
    train_acc, val_acc = np.array(train_acc, float), np.array(val_acc, float)
    return {
        "train/accuracy": train_acc,
        "val/accuracy": val_acc,
        "train/loss": 2 - train_acc,
        "val/loss": 2 - val_acc,
    }


def test_metric0_readings():
    curves = _curves([0.1, 0.3, 0.4, 0.6, 0.7], [0.1, 0.2, 0.2, 0.3, 0.3])
    untrained = rates.run_metrics(curves, window=2)
    assert untrained["MCR"]["accuracy"] == {"1-2": 0.15, "3-4": 0.15}
    epoch1 = rates.run_metrics(curves, window=2, metric0="epoch1")
    assert epoch1["MCR"]["accuracy"] == {"1-2": 0.05, "3-4": 0.15}  # (0 + 0.1) / 2
    assert epoch1["MOFR"]["accuracy"] == {"1-2": 0.05, "3-4": 0.1}  # gaps .1 .1 .2 .3 .4
    assert epoch1["untrained_val_accuracy"] == 0.1  # the epoch-0 log itself is kept


def test_fidelity_counts_signs_with_a_zero_band_and_rmse():
    paper = {
        (2, "onet", "random", "1-5"): 0.02,
        (2, "onet", "random", "6-10"): -0.01,
        (2, "onet", "random", "11-15"): 0.0005,  # counts as 0
        (3, "onet", "random", "1-5"): -0.2,
    }
    rows = [
        {"table": 2, "backbone": "onet", "init": "random", "epochs": "1-5", "value": 0.03},
        {"table": 2, "backbone": "onet", "init": "random", "epochs": "6-10", "value": 0.01},
        {"table": 2, "backbone": "onet", "init": "random", "epochs": "11-15", "value": -0.0009},
        {"table": 3, "backbone": "onet", "init": "random", "epochs": "1-5", "value": -0.1},
        {"table": 3, "backbone": "onet", "init": "random", "epochs": "6-10", "value": -0.1},
    ]
    f = fidelity.fidelity(rows, paper)
    run = f["runs"]["onet-random"]
    assert run["table2"]["signs_agree"] == 2 and run["table2"]["rates"] == 3
    assert run["table3"] == {"rates": 1, "signs_agree": 1, "sign_agreement": 1.0, "rmse": 0.1}
    expected = np.sqrt(np.mean(np.square([0.01, 0.02, 0.0014, 0.1])))
    assert f["total"]["rmse"] == pytest.approx(expected, abs=1e-6)
    assert f["random"]["signs_agree"] == 3 and f["pretrained"]["rates"] == 0


def test_the_committed_variant_reproduces_the_issues_count():
    """The earlier reference run (inference BN, fc7 cut): 25 of 64 signs, as measured."""
    from ferstudy.reporting.protocol import load_variants

    old = {v["label"]: v for v in load_variants()}["inference-BN, fc7"]
    assert old["fidelity"]["untrained"]["random"]["signs_agree"] == 25
    assert old["fidelity"]["untrained"]["random"]["rates"] == 64


def test_pretrained_runs_are_scored_on_their_familys_rows_apart():
    from ferstudy.analysis.fidelity import family_fidelity, fidelity

    paper = {
        (2, "vggface", "pretrained", "1-5"): 0.05,
        (2, "openface", "pretrained", "1-5"): -0.02,
        (2, "mobilenet", "pretrained", "1-5"): 0.03,
        (2, "openface", "random", "1-5"): 0.01,
    }
    rows = [
        {"table": 2, "backbone": "facenet", "init": "pretrained", "epochs": "1-5", "value": 0.04},
        {
            "table": 2,
            "backbone": "mobilenetv2",
            "init": "pretrained",
            "epochs": "1-5",
            "value": -0.01,
        },
        {"table": 2, "backbone": "onet", "init": "pretrained", "epochs": "1-5", "value": 0.02},
        {"table": 2, "backbone": "openface", "init": "random", "epochs": "1-5", "value": 0.01},
    ]
    families = family_fidelity(rows, paper)
    assert set(families) == {"face recognition", "ImageNet"}  # ONet's family has no study row
    face = families["face recognition"]
    assert (face["ours"], face["study"], face["rates"], face["signs_agree"]) == (
        ["facenet-pretrained"],
        ["openface", "vggface"],
        2,
        1,
    )
    assert face["rmse"] == round(((0.04 - 0.05) ** 2 / 2 + (0.04 + 0.02) ** 2 / 2) ** 0.5, 6)
    image = families["ImageNet"]
    assert (image["ours"], image["study"], image["signs_agree"]) == (
        ["mobilenetv2-pretrained"],
        ["mobilenet"],
        0,
    )
    scored = fidelity(rows, paper)
    assert scored["total"]["rates"] == 1  # like for like: only openface-random's row
    assert scored["pretrained_by_family"] == families
