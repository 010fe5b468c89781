"""Dice and Jaccard against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uncol.metrics import DiceMetric, JaccardMetric, compute_dice, compute_jaccard


def _box(shape: tuple[int, ...], start: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return mask


@pytest.mark.parametrize("k", [1, 3, 7])
def test_shifted_boxes_2d(k: int) -> None:
    # Two 10x6 boxes, the second shifted by k rows: overlap (10-k)*6, union (10+k)*6.
    a = _box((30, 20), (5, 5), (10, 6))
    b = _box((30, 20), (5 + k, 5), (10, 6))
    assert compute_dice(a, b) == pytest.approx(2 * (10 - k) * 6 / (2 * 60))
    assert compute_jaccard(a, b) == pytest.approx((10 - k) / (10 + k))


def test_shifted_boxes_3d() -> None:
    a = _box((12, 12, 12), (2, 2, 2), (4, 5, 6))
    b = _box((12, 12, 12), (2, 2, 4), (4, 5, 6))  # shifted 2 along the last axis
    inter, size = 4 * 5 * 4, 4 * 5 * 6
    assert compute_dice(a, b) == pytest.approx(2 * inter / (2 * size))
    assert compute_jaccard(a, b) == pytest.approx(inter / (2 * size - inter))


def test_identical_disjoint_and_empty() -> None:
    a = _box((8, 8), (1, 1), (3, 3))
    b = _box((8, 8), (5, 5), (2, 2))
    empty = np.zeros((8, 8), dtype=bool)
    assert compute_dice(a, a) == 1.0
    assert compute_jaccard(a, a) == 1.0
    assert compute_dice(a, b) == 0.0
    assert compute_jaccard(a, b) == 0.0
    assert compute_dice(a, empty) == 0.0
    assert compute_jaccard(empty, a) == 0.0
    # Undefined: the policy is applied by compute_case_metrics, not here.
    assert math.isnan(compute_dice(empty, empty))
    assert math.isnan(compute_jaccard(empty, empty))


def test_non_boolean_input_uses_nonzero_as_foreground() -> None:
    a = np.array([[0, 2], [3, 0]])
    b = np.array([[0, 1], [0, 0]], dtype=np.float32)
    assert compute_dice(a, b) == pytest.approx(2 * 1 / 3)


def test_shape_and_ndim_errors() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        compute_dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2D or 3D"):
        compute_jaccard(np.zeros(4), np.zeros(4))


def test_cumulative_classes() -> None:
    a = _box((10, 10), (0, 0), (4, 4))
    b = _box((10, 10), (0, 2), (4, 4))  # Dice 0.5
    empty = np.zeros((10, 10), dtype=bool)
    dice = DiceMetric()
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(0.5)
    assert math.isnan(dice(empty, empty))
    mean, std = dice.aggregate()
    assert mean == pytest.approx(0.75)  # the NaN case is ignored
    assert std == pytest.approx(0.25)  # population std of (1, 0.5)
    assert len(dice.values) == 3
    dice.reset()
    assert all(math.isnan(v) for v in dice.aggregate())

    jac = JaccardMetric()
    jac(a, b)
    assert jac.aggregate() == pytest.approx((1 / 3, 0.0))
