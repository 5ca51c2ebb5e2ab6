"""Time one training step of a backbone's trainable tail, as built and against its floors.

usage: python scripts/tail_step.py [--backbone vggface] [--steps 10]

Variants, each at batch 64 on random cached features: the tail with 1x1 convolutions over a
1x1 map as matmuls, Adam, with XLA and without (the train stage uses XLA only for a tail
without convolution kernels, and the output says which it uses), the same with those layers as
convolution kernels (no XLA, then XLA), and the forward pass and gradients alone with XLA (no
optimizer update): the step's matmul work, its floor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import ferstudy  # noqa: F401  (before TensorFlow)
from ferstudy.models import registry, transfer
from ferstudy.tools.bench import machine


def _timed(step, steps: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000 * (time.perf_counter() - start) / steps


def tail_of(backbone: str, matmul: bool) -> transfer.FrozenTail:
    """The backbone's frozen part and tail under the study's recipe, at its native size."""
    entry = registry.get_backbone(backbone)
    transfer.keras.utils.set_random_seed(0)
    model = entry.build_architecture(entry.native_input_size, entry.check_descriptor(None))
    if matmul:
        model = transfer.pointwise_as_matmul(model)
    return transfer.split_frozen_tail(transfer.build_classifier(model), entry.trainable_layers(4))


def step_ms(backbone: str, matmul: bool, optimizer: str, xla: bool, steps: int) -> float:
    """ms per training step; ``optimizer`` "none": forward and gradients only (the floor)."""
    import tensorflow as tf  # after ferstudy, which sets TF_USE_LEGACY_KERAS

    keras = tf.keras
    cut = tail_of(backbone, matmul)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, cut.feature_size)).astype("float32")
    y = np.eye(7, dtype="float32")[rng.integers(0, 7, 64)]
    if optimizer == "none":
        loss = keras.losses.CategoricalCrossentropy()
        variables = cut.tail.trainable_variables

        @tf.function(jit_compile=xla)
        def gradients(x, y):
            with tf.GradientTape() as tape:
                value = loss(y, cut.tail(x, training=True))
            return [tf.reduce_sum(g) for g in tape.gradient(value, variables)]

        return _timed(lambda: [g.numpy() for g in gradients(x, y)], steps)
    cut.tail.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", jit_compile=xla
    )
    return _timed(lambda: cut.tail.train_on_batch(x, y), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vggface")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(machine())
    xla = not transfer.runs_convolutions(tail_of(args.backbone, matmul=True).tail)
    print(f"the train stage compiles {args.backbone}'s tail {'with' if xla else 'without'} XLA")
    rows = {
        "matmul, Adam, XLA": (True, "adam", True),
        "matmul, Adam, no XLA": (True, "adam", False),
        "convolution kernels, Adam, no XLA": (False, "adam", False),
        "convolution kernels, Adam, XLA": (False, "adam", True),
        "floor: forward and gradients alone, XLA": (True, "none", True),
    }
    times = {name: step_ms(args.backbone, *setting, args.steps) for name, setting in rows.items()}
    floor = times["floor: forward and gradients alone, XLA"]
    for name, ms in times.items():
        print(f"| {name} | {ms:.0f} | {ms / floor:.2f} |")


if __name__ == "__main__":
    main()
