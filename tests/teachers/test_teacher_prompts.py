"""Prompts: boxes from masks and pseudo-labels, points from confident pixels; seeds and absent classes."""

from __future__ import annotations

import numpy as np
import pytest

from uncol.teachers import (
    boxes_from_mask,
    boxes_from_pseudo_label,
    points_from_uncertainty,
    volume_point_prompts,
)
from uncol.teachers.prompts import entropy, jitter_in_pixels


def _mask() -> np.ndarray:
    m = np.zeros((40, 50), np.int64)
    m[5:11, 10:21] = 1
    m[20:31, 30:41] = 3
    m[22, 2] = 3  # a second component of class 3: the box spans both
    return m


def test_tight_boxes_and_absent_class():
    p = boxes_from_mask(_mask(), num_classes=4)
    assert p.present.tolist() == [True, False, True]
    assert p.boxes[0].tolist() == [10, 5, 20, 10]
    assert p.boxes[2].tolist() == [2, 20, 40, 30]
    assert p.boxes[1].tolist() == [0, 0, 0, 0]
    assert p.num_foreground == 3


def test_jitter_is_outward_bounded_and_seeded():
    m = _mask()
    tight = boxes_from_mask(m, 4)
    a = boxes_from_mask(m, 4, jitter_px=5, rng=np.random.default_rng(7))
    b = boxes_from_mask(m, 4, jitter_px=5, rng=np.random.default_rng(7))
    c = boxes_from_mask(m, 4, jitter_px=5, rng=np.random.default_rng(8))
    assert np.array_equal(a.boxes, b.boxes) and not np.array_equal(a.boxes, c.boxes)
    d = a.boxes[0] - tight.boxes[0]
    assert (d[:2] <= 0).all() and (d[2:] >= 0).all() and np.abs(d).max() <= 5
    assert (a.boxes[:, 0] >= 0).all() and (a.boxes[:, 2] <= 49).all() and (a.boxes[:, 3] <= 39).all()
    assert np.array_equal(a.boxes[1], np.zeros(4))  # absent class: still no box


def test_jitter_scaled_from_1024():
    # 20 px at 1024 is 5 px on LiteMedSAM's 256 canvas, i.e. 10 px of a 512 px image.
    assert jitter_in_pixels(20, 256, (512, 300), keep_aspect=True) == (10.0, 10.0)
    assert jitter_in_pixels(20, 1024, (512, 256), keep_aspect=False) == (10.0, 5.0)


def test_pseudo_label_boxes_drop_speckle():
    probs = np.zeros((3, 30, 30), np.float32)
    probs[0] = 1.0
    probs[:, 5:15, 5:15] = [[[0.1]], [[0.8]], [[0.1]]]
    probs[:, 25, 25] = [0.1, 0.1, 0.8]  # one stray pixel of class 2
    p = boxes_from_pseudo_label(probs, 3, min_pixels=10)
    assert p.present.tolist() == [True, False]
    assert p.boxes[0].tolist() == [5, 5, 14, 14]
    assert boxes_from_pseudo_label(probs.argmax(0), 3, min_pixels=1).present.tolist() == [True, True]


def test_points_from_low_uncertainty_pixels():
    rng = np.random.default_rng(0)
    probs = np.full((3, 32, 32), 0.0, np.float32)
    probs[0] = 1.0
    probs[:, 4:20, 4:20] = np.array([0.05, 0.9, 0.05])[:, None, None]
    probs[:, 4:20, 12:20] = np.array([0.3, 0.45, 0.25])[:, None, None]  # uncertain half of class 1
    p = points_from_uncertainty(probs, 5, rng, low_fraction=0.5)
    assert p.boxes is None and p.present.tolist() == [True, False]
    pts = p.points[0][p.point_labels[0] == 1]
    assert len(pts) == 5
    ent = entropy(probs)
    for x, y in pts.astype(int):
        assert probs[:, y, x].argmax() == 1 and ent[y, x] <= np.quantile(ent[4:20, 4:20], 0.5) + 1e-9
    assert (p.point_labels[1] == -1).all()
    again = points_from_uncertainty(probs, 5, np.random.default_rng(0), low_fraction=0.5)
    assert np.array_equal(again.points, p.points)


def test_volume_points_per_slice():
    probs = np.zeros((2, 4, 16, 16), np.float32)
    probs[0] = 1.0
    probs[:, 1:3, 4:12, 4:12] = np.array([0.1, 0.9])[:, None, None, None]
    prompts = volume_point_prompts(probs, axis=0, n_points=2, rng=np.random.default_rng(1))
    assert len(prompts) == 4 and [p.present[0] for p in prompts] == [False, True, True, False]
    with pytest.raises(ValueError):
        volume_point_prompts(probs[0], axis=0, n_points=2, rng=np.random.default_rng(1))
