"""Overlap metrics on binary masks: Dice and Jaccard.

Each metric has a functional form (``compute_*``) and a small cumulative class that scores cases one
by one and aggregates them, in the style of MONAI's metric classes.

The functional forms return NaN when both masks are empty: the value is undefined there, and what to
report instead (skip the case, or call it perfect) is a policy decided one level up, in
:mod:`uncol.metrics.case_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "CumulativeMetric",
    "DiceMetric",
    "JaccardMetric",
    "as_mask_pair",
    "compute_dice",
    "compute_jaccard",
]


def as_mask_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert two arrays to boolean masks (non-zero = foreground) and check they are comparable.

    Args:
        pred: predicted mask, 2D or 3D.
        ref: reference mask, same shape as ``pred``.

    Returns:
        The two masks as boolean arrays.

    Raises:
        ValueError: if the shapes differ or the masks are not 2D or 3D.
    """
    pred_b = np.asarray(pred) != 0
    ref_b = np.asarray(ref) != 0
    if pred_b.shape != ref_b.shape:
        raise ValueError(f"prediction shape {pred_b.shape} differs from reference shape {ref_b.shape}")
    if pred_b.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {pred_b.ndim}D arrays of shape {pred_b.shape}")
    return pred_b, ref_b


def compute_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2|P∩R| / (|P| + |R|)``.

    Args:
        pred: predicted mask (non-zero = foreground), 2D or 3D.
        ref: reference mask, same shape.

    Returns:
        Dice in ``[0, 1]``; NaN when both masks are empty.
    """
    p, r = as_mask_pair(pred, ref)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return math.nan
    inter = int(np.count_nonzero(p & r))
    # Same arithmetic as medpy.metric.binary.dc so the medpy convention reproduces it bit for bit.
    return 2.0 * inter / float(total)


def compute_jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index (IoU) ``|P∩R| / |P∪R|``.

    Args:
        pred: predicted mask (non-zero = foreground), 2D or 3D.
        ref: reference mask, same shape.

    Returns:
        Jaccard in ``[0, 1]``; NaN when both masks are empty.
    """
    p, r = as_mask_pair(pred, ref)
    union = int(np.count_nonzero(p | r))
    if union == 0:
        return math.nan
    return float(np.count_nonzero(p & r)) / float(union)


class CumulativeMetric:
    """Scores cases one at a time and aggregates them.

    Calling the object scores one case, stores the value and returns it. :meth:`aggregate` gives the
    mean and population standard deviation of the stored values, ignoring NaN (undefined) ones.

    Args:
        fn: function ``(pred, ref) -> float`` computing the metric of one case.
    """

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], float]) -> None:
        self._fn = fn
        self.values: list[float] = []

    def __call__(self, pred: np.ndarray, ref: np.ndarray) -> float:
        """Score one case and remember the value.

        Args:
            pred: predicted mask.
            ref: reference mask.

        Returns:
            The case's value (NaN when undefined).
        """
        value = float(self._fn(pred, ref))
        self.values.append(value)
        return value

    def aggregate(self) -> tuple[float, float]:
        """Mean and population std (ddof=0) of the defined values so far.

        Returns:
            ``(mean, std)``; both NaN when no defined value was recorded.
        """
        defined = np.asarray([v for v in self.values if not math.isnan(v)], dtype=np.float64)
        if defined.size == 0:
            return math.nan, math.nan
        return float(defined.mean()), float(defined.std())

    def reset(self) -> None:
        """Forget every recorded value."""
        self.values.clear()


class DiceMetric(CumulativeMetric):
    """Cumulative Dice coefficient (see :func:`compute_dice`)."""

    def __init__(self) -> None:
        super().__init__(compute_dice)


class JaccardMetric(CumulativeMetric):
    """Cumulative Jaccard index (see :func:`compute_jaccard`)."""

    def __init__(self) -> None:
        super().__init__(compute_jaccard)
