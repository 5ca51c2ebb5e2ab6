"""On-the-fly augmentation: reproducible from its seed, and each transform does what it says."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ferstudy.data.augment import Augmentation, affine_transforms, augment

NONE = Augmentation(flip=False, shift=0.0, rotation=0.0, scale=0.0)


def _images(n: int = 16, size: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)


def _seed(a: int, b: int) -> tf.Tensor:
    return tf.constant([a, b], tf.int64)


def test_same_seed_same_batch_other_seed_other_batch():
    images, aug = _images(), Augmentation()
    first = augment(images, aug, _seed(42, 7)).numpy()
    assert np.array_equal(first, augment(images, aug, _seed(42, 7)).numpy())
    assert not np.array_equal(first, augment(images, aug, _seed(42, 8)).numpy())
    assert first.shape == images.shape and first.dtype == np.float32


def test_nothing_drawn_is_the_identity():
    images = _images()
    assert not NONE.active
    out = augment(images, NONE, _seed(1, 1)).numpy()
    assert np.array_equal(out, images.astype(np.float32))


def test_flip_mirrors_about_half_the_images_and_leaves_the_rest():
    images = _images(200)
    out = augment(images, Augmentation(flip=True, shift=0, rotation=0, scale=0), _seed(3, 0))
    out = out.numpy()
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 70 <= sum(mirrored) <= 130


def _dot(size: int, y: int, x: int) -> np.ndarray:
    image = np.zeros((1, size, size), np.uint8)
    image[0, y, x] = 255
    return image


def _where(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted centre (row, column) of an image."""
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    total = image.sum()
    return float((yy * image).sum() / total), float((xx * image).sum() / total)


def test_rotation_and_scale_keep_the_centre():
    size = 49  # the centre is pixel (24, 24)
    aug = Augmentation(flip=False, shift=0.0, rotation=30.0, scale=0.2)
    for b in range(5):
        out = augment(_dot(size, 24, 24), aug, _seed(5, b)).numpy()[0]
        assert _where(out) == pytest.approx((24.0, 24.0), abs=0.01)


def test_rotation_turns_an_off_centre_point_by_at_most_its_limit():
    size, radius = 49, 16
    aug = Augmentation(flip=False, shift=0.0, rotation=20.0, scale=0.0)
    angles = []
    for b in range(20):
        out = augment(_dot(size, 24, 24 + radius), aug, _seed(9, b)).numpy()[0]
        y, x = _where(out)
        assert np.hypot(y - 24, x - 24) == pytest.approx(radius, abs=0.7)  # rotation: radius kept
        angles.append(np.degrees(np.arctan2(y - 24, x - 24)))
    assert max(abs(a) for a in angles) <= 20.5
    assert max(angles) - min(angles) > 10  # it does rotate, both ways


def test_shift_moves_a_point_by_at_most_the_fraction():
    size, limit = 48, 0.1
    aug = Augmentation(flip=False, shift=limit, rotation=0.0, scale=0.0)
    moves = []
    for b in range(20):
        out = augment(_dot(size, 20, 20), aug, _seed(11, b)).numpy()[0]
        y, x = _where(out)
        moves.append((y - 20, x - 20))
    moves = np.array(moves)
    assert np.abs(moves).max() <= limit * size + 0.01
    assert np.abs(moves).max() > 1.0


def test_transform_rows_are_affine():
    t = affine_transforms(4, 48, Augmentation(), _seed(0, 0)).numpy()
    assert t.shape == (4, 8) and np.all(t[:, 6:] == 0)
