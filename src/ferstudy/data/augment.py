"""On-the-fly augmentation of 48x48 grayscale faces: flips, small shifts, rotations and scale.

Every random draw is stateless, a function of ``(seed, epoch, batch)`` alone, so an epoch's
augmented batches are the same whether a run is uninterrupted or resumed from a checkpoint,
and the same on every machine that runs the same TensorFlow kernels.

One affine map per image (rotation about the centre, isotropic scale, shift) is applied with
TensorFlow's projective-transform kernel, bilinear, borders filled by reflection (a face's
edge continues instead of a black band the test images never have).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    """What to draw per training image (0 turns a transform off)."""

    flip: bool = True  # horizontal flip with probability 1/2
    shift: float = 0.1  # shift drawn up to this fraction of the side per axis (input frame)
    rotation: float = 10.0  # rotate up to this many degrees either way
    scale: float = 0.1  # scale by a factor in [1 - scale, 1 + scale]

    @property
    def active(self) -> bool:
        return self.flip or bool(self.shift or self.rotation or self.scale)


def affine_transforms(
    batch: int, size: int, augmentation: Augmentation, seed: tf.Tensor
) -> tf.Tensor:
    """``(batch, 8)`` projective transforms mapping each output pixel to its input pixel.

    The output pixel ``p`` reads the input at ``R(angle) (p - c) / s + c - t``: the image is
    turned by ``angle`` (either way: the draw is symmetric), scaled by ``s`` about its centre
    ``c``, and its content moves by ``s R(-angle) t``, the drawn shift ``t`` taken in the
    input's frame (so by at most ``(1 + scale) * sqrt(2) * shift * side``).
    """
    draws = tf.random.stateless_uniform((batch, 4), seed=seed, minval=-1.0, maxval=1.0)
    angle = draws[:, 0] * augmentation.rotation * math.pi / 180.0
    scale = 1.0 + draws[:, 1] * augmentation.scale
    shift = draws[:, 2:] * augmentation.shift * size
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a2 = c - (cos * c - sin * c) - shift[:, 0]
    b2 = c - (sin * c + cos * c) - shift[:, 1]
    zeros = tf.zeros_like(cos)
    return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)


def augment(images: tf.Tensor, augmentation: Augmentation, seed: tf.Tensor) -> tf.Tensor:
    """Augment a batch of ``(batch, H, W)`` images (any dtype) -> float32 ``(batch, H, W)``.

    ``seed``: an int32/int64 tensor of shape ``(2,)``, e.g. ``[run seed, epoch * 1000000 +
    batch]``; the same seed gives the same batch.
    """
    x = tf.cast(images, tf.float32)[..., None]
    batch, size = tf.shape(x)[0], x.shape[1]
    flip_seed, affine_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if augmentation.flip:
        flip = tf.random.stateless_uniform((batch, 1, 1, 1), seed=flip_seed) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    if augmentation.shift or augmentation.rotation or augmentation.scale:
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=affine_transforms(batch, size, augmentation, affine_seed),
            output_shape=tf.shape(x)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
    return x[..., 0]
