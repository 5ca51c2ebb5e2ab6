"""ONet backbone: same trunk activations as mtcnn's own ONet, shape checks, seeded init."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ferstudy.core.errors import FerError
from ferstudy.models.onet import build_onet, load_pretrained, mtcnn_onet, preprocess


def _mtcnn_trunk_and_heads(crops: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """mtcnn's ONet on what mtcnn's ONet stage feeds it for these crops (whole-image boxes).

    Returns the output of its ``prelu5`` layer, captured during its own call, and its heads.
    """
    from mtcnn.stages import StageONet
    from mtcnn.utils.images import extract_patches, standarize_batch

    net = StageONet().model  # built and loaded by mtcnn itself
    normalized, _, _ = standarize_batch(list(crops), normalize=True)
    n, h, w = crops.shape[:3]
    boxes = np.array([[i, 0, 0, w, h] for i in range(n)], dtype=np.float64)  # [id, x1, y1, x2, y2]
    patches = extract_patches(normalized, boxes, expected_size=(48, 48))
    captured = []
    call = net.prelu5.call
    net.prelu5.call = lambda x, *a, **k: captured.append(call(x, *a, **k)) or captured[-1]
    heads = [out.numpy() for out in net(patches)]
    assert len(captured) == 1
    return captured[0].numpy(), heads


def test_pretrained_trunk_matches_mtcnn() -> None:
    crops = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 3)).astype(np.float32)
    want, heads = _mtcnn_trunk_and_heads(crops)
    model = build_onet(48)
    load_pretrained(model)
    got = model(preprocess(tf.constant(crops))).numpy()
    assert got.shape == (8, 256)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # and mtcnn's heads on our trunk give mtcnn's outputs (mtcnn_onet: our copy of its loading)
    net = mtcnn_onet()
    for head, expected in zip((net.fc6_1, net.fc6_2, net.fc6_3), heads):
        np.testing.assert_allclose(head(got).numpy(), expected, atol=1e-5, rtol=0)


def test_wrong_shape_is_refused() -> None:
    model = build_onet(56)  # fc5 then takes 4x4x128 = 2048 inputs, mtcnn's takes 1152
    with pytest.raises(FerError, match=r"fc5.*\(2048, 256\).*\(1152, 256\)"):
        load_pretrained(model)


def test_seeded_random_init() -> None:
    def weights(seed: int) -> list[np.ndarray]:
        tf.keras.utils.set_random_seed(seed)
        return build_onet(48).get_weights()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])  # conv1 kernel
    assert not np.array_equal(a[-3], c[-3])  # fc5 kernel
