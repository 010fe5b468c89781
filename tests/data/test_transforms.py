from __future__ import annotations

import numpy as np
import pytest

from uncol.config import AugmentConfig
from uncol.data.transforms import (
    apply_augment,
    crop,
    normalize_intensity,
    pad_to_size,
    resize_image,
    resize_label,
    sample_augment,
    sample_crop_start,
)


def test_normalize_modes():
    rng = np.random.default_rng(0)
    img = rng.normal(50, 10, size=(1, 16, 16)).astype(np.float32)
    z = normalize_intensity(img, "zscore")
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    m = normalize_intensity(img, "minmax")
    assert m.min() == 0 and abs(m.max() - 1) < 1e-6
    assert np.array_equal(normalize_intensity(img, "none"), img)
    const = np.full((1, 4, 4), 3.0, np.float32)
    assert np.all(normalize_intensity(const, "zscore") == 0)  # no division by zero
    with pytest.raises(ValueError):
        normalize_intensity(img, "bogus")


def test_resize_label_is_nearest_and_keeps_classes():
    lab = np.zeros((10, 10), np.int64)
    lab[2:5, 3:8] = 2
    out = resize_label(lab, (20, 20))
    assert out.shape == (20, 20)
    assert set(np.unique(out)) == {0, 2}
    assert (out == 2).sum() == 4 * 15
    assert resize_image(np.ones((1, 10, 10), np.float32), (5, 7)).shape == (1, 5, 7)


def test_pad_and_crop_roundtrip():
    img = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    lab = np.ones((5, 6), np.int64)
    pimg, plab, pads = pad_to_size(img, lab, (8, 6))
    assert pimg.shape == (2, 8, 6) and pads == [(1, 2), (0, 0)]
    assert plab[0].sum() == 0 and plab[1].sum() == 6
    cimg, clab = crop(pimg, plab, (1, 0), (5, 6))
    assert np.array_equal(cimg, img) and np.array_equal(clab, lab)


def test_foreground_oversampling_centres_on_foreground():
    lab = np.zeros((64, 64), np.int64)
    lab[60, 60] = 1
    rng = np.random.default_rng(0)
    start = sample_crop_start(lab, (64, 64), (16, 16), rng, foreground_prob=1.0)
    assert start == [48, 48]


def test_augment_is_deterministic_and_keeps_alignment():
    cfg = AugmentConfig(flip=True, rotate90=True, rotate_degrees=0.0, intensity=False)
    img = np.zeros((1, 12, 12), np.float32)
    lab = np.zeros((12, 12), np.int64)
    img[0, 1:4, 2:6] = 1.0
    lab[1:4, 2:6] = 1
    for seed in range(8):
        p1 = sample_augment(cfg, 2, np.random.default_rng(seed), square_plane=True)
        p2 = sample_augment(cfg, 2, np.random.default_rng(seed), square_plane=True)
        assert p1 == p2
        a_img, a_lab = apply_augment(img, lab, p1)
        assert np.array_equal(a_img[0] > 0.5, a_lab == 1)  # image and mask moved together


def test_rotation_keeps_alignment_3d():
    cfg = AugmentConfig(flip=True, rotate90=False, rotate_degrees=30.0, intensity=True, noise_std=0.0)
    img = np.zeros((1, 4, 20, 20), np.float32)
    lab = np.zeros((4, 20, 20), np.int64)
    img[0, :, 5:15, 8:12] = 1.0
    lab[:, 5:15, 8:12] = 1
    p = sample_augment(cfg, 3, np.random.default_rng(3), square_plane=True)
    a_img, a_lab = apply_augment(img, lab, p)
    assert a_img.shape == img.shape and a_lab.shape == lab.shape
    fg = a_lab == 1
    bright = a_img[0] > np.median(a_img[0])
    assert (fg & bright).sum() / max(1, fg.sum()) > 0.8
