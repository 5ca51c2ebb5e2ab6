"""The tail on cached features is the full model on images: same loss, same gradients."""

import numpy as np
import pytest
import tensorflow as tf

from ferstudy import CLASSES
from ferstudy.data.feature_cache import extractor
from ferstudy.models.registry import build_backbone, get_backbone
from ferstudy.models.transfer import build_classifier, image_transform, split_frozen_tail

keras = tf.keras


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(8, 48, 48), dtype=np.uint8)


def _loss_and_grads(model, x, y, weights):
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    return float(loss), [g.numpy() for g in tape.gradient(loss, weights)]


@pytest.mark.parametrize(
    ("name", "size", "expected_shapes"),
    [
        ("mobilenet", 32, [(1, 1, 1024)]),
        ("resnet50", 32, [(1, 1, 512), (1, 1, 2048)]),  # cut crosses a skip connection
        ("openface", 96, [(736,)]),
    ],
)
def test_tail_on_features_equals_full_model(name, size, expected_shapes, images):
    classifier = build_classifier(build_backbone(name, "random", size, seed=1))
    cut = split_frozen_tail(classifier, 4)
    assert cut.boundary_shapes == expected_shapes
    transform = image_transform(get_backbone(name).preprocess, size)
    features = extractor(cut.frozen, transform)(tf.constant(images))
    y = tf.one_hot(np.arange(len(images)) % len(CLASSES), len(CLASSES))
    weights = cut.tail.trainable_weights
    assert weights and all(any(w is v for v in classifier.trainable_weights) for w in weights)
    loss_tail, grads_tail = _loss_and_grads(cut.tail, features, y, weights)
    loss_full, grads_full = _loss_and_grads(classifier, transform(images), y, weights)
    assert loss_tail == pytest.approx(loss_full, rel=1e-5)
    for a, b in zip(grads_tail, grads_full):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the frozen part is all that is not trainable in the classifier
    assert {w.name for w in classifier.trainable_weights} == {w.name for w in weights}


def test_study_trainable_layers_and_parameter_counts():
    counts = {"openface": 3_743_280, "resnet50": 23_587_712, "mobilenet": 3_228_864}
    for name, expected in counts.items():
        size = get_backbone(name).native_input_size
        assert build_backbone(name, "random", size, seed=0).count_params() == expected
    cut = split_frozen_tail(build_classifier(build_backbone("mobilenet", "random", 32, 0)), 4)
    assert cut.trainable_layer_names == [
        "conv_dw_13_relu",
        "conv_pw_13",
        "conv_pw_13_bn",
        "conv_pw_13_relu",
    ]


def test_random_init_is_seeded():
    a = build_backbone("mobilenet", "random", 32, seed=3).get_weights()
    b = build_backbone("mobilenet", "random", 32, seed=3).get_weights()
    c = build_backbone("mobilenet", "random", 32, seed=4).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_bf16_falls_back_to_fp32_for_backbones_without_bf16_kernels(images):
    from ferstudy.core import runtime

    assert runtime.set_precision("bf16", bf16_supported=get_backbone("openface").bf16) == "fp32"
    cut = split_frozen_tail(build_classifier(build_backbone("openface", "random", 96, 0)), 4)
    transform = image_transform(get_backbone("openface").preprocess, 96)
    assert extractor(cut.frozen, transform)(tf.constant(images)).dtype == tf.float32
    assert runtime.set_precision("bf16") == "bf16"
    cut = split_frozen_tail(build_classifier(build_backbone("mobilenet", "random", 32, 0)), 4)
    transform = image_transform(get_backbone("mobilenet").preprocess, 32)
    assert extractor(cut.frozen, transform)(tf.constant(images)).dtype == tf.uint16  # bf16 bits
    runtime.set_precision("fp32")


@pytest.mark.parametrize("side", [1, 3])
def test_pointwise_matmul_has_conv2ds_outputs_and_gradients(side):
    from ferstudy.models.transfer import PointwiseMatmul

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, side, side, 6)).astype("float32"))
    conv = tf.keras.layers.Conv2D(5, 1)
    matmul = PointwiseMatmul(5, 1)
    conv.build(x.shape)
    matmul.build(x.shape)
    matmul.set_weights(conv.get_weights())
    results = []
    for layer in (conv, matmul):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y))
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_variables])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_pointwise_as_matmul_swaps_only_1x1_convolutions_on_a_1x1_map():
    from ferstudy.models.transfer import PointwiseMatmul, pointwise_as_matmul

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((3, 3, 4))
    x = tf.keras.layers.Conv2D(8, 1, name="on_3x3")(inputs)
    x = tf.keras.layers.Conv2D(8, 3, name="to_1x1")(x)
    x = tf.keras.layers.Conv2D(6, 1, name="fc7")(x)
    x = tf.keras.layers.Conv2D(5, 1, name="fc8")(x)
    model = tf.keras.Model(inputs, x)
    converted = pointwise_as_matmul(model)
    kinds = {layer.name: type(layer).__name__ for layer in converted.layers[1:]}
    assert kinds == {
        "on_3x3": "Conv2D", "to_1x1": "Conv2D", "fc7": "PointwiseMatmul", "fc8": "PointwiseMatmul"
    }  # fmt: skip
    assert isinstance(converted.get_layer("fc8"), PointwiseMatmul)
    images = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype("float32")
    np.testing.assert_allclose(converted(images), model(images), rtol=1e-5, atol=1e-6)
    assert pointwise_as_matmul(converted) is converted  # nothing left to swap


@pytest.mark.parametrize(
    ("name", "size", "xla"),
    [
        ("mobilenet", 64, False),
        ("resnet50", 64, False),
        ("mobilenet", 32, True),
        ("onet", 48, True),
    ],
)
def test_the_train_stage_compiles_tails_of_matmuls_alone_with_xla(name, size, xla):
    """XLA fuses Adam's update of a tail of matmuls, but its CPU convolutions are slower than
    oneDNN's: MobileNet's and ResNet-50's tails, convolutions over a 2 x 2 map at 64 px (7 x 7
    at full size), train without it; at 32 px their map is 1 x 1 and MobileNet's last
    convolution a matmul."""
    from ferstudy.stages.train import compile_tail

    cut = split_frozen_tail(build_classifier(build_backbone(name, "random", size, seed=0)), 4)
    compile_tail(cut.tail, keras.optimizers.Adam(1e-4))
    assert cut.tail.jit_compile is xla


def test_a_pointwise_matmul_is_no_convolution_kernel():
    from ferstudy.models.transfer import pointwise_as_matmul, runs_convolutions

    inputs = tf.keras.Input((1, 1, 4))
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(5, 1, name="fc7")(inputs))
    assert runs_convolutions(model)
    assert not runs_convolutions(pointwise_as_matmul(model))
    inputs = tf.keras.Input((4, 4, 2))
    depthwise = tf.keras.layers.DepthwiseConv2D(3, padding="same")(inputs)
    assert runs_convolutions(tf.keras.Model(inputs, tf.keras.layers.Dense(3)(depthwise)))
