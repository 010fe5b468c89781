"""Statistics of the benchmark tables: seed spread, paired case differences, bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile bootstrap interval.

    Attributes:
        mean: mean of the values.
        low: lower bound of the interval.
        high: upper bound.
        n: number of values (test cases).
    """

    mean: float
    low: float
    high: float
    n: int


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1, ``None`` for a single value) of seed results."""
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def defined_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not ``None`` (``None`` when there are none)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def bootstrap_mean(
    values: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. per-case differences).

    The cases are resampled with replacement ``resamples`` times by a generator seeded with ``seed``,
    so the same values always give the same interval.

    Returns:
        The interval, or ``None`` when there is no value.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(arr.mean()), float(low), float(high), int(arr.size))


def paired_differences(
    method: Mapping[str, float | None], reference: Mapping[str, float | None]
) -> dict[str, float]:
    """``method - reference`` per case, over the cases where both values are defined."""
    return {
        case: float(v) - float(reference[case])
        for case, v in method.items()
        if v is not None and reference.get(case) is not None
    }


def pool_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per case, the mean of its differences over the seeds that have it."""
    cases: dict[str, list[float]] = {}
    for diffs in per_seed:
        for case, d in diffs.items():
            cases.setdefault(case, []).append(d)
    return {case: float(np.mean(ds)) for case, ds in cases.items()}
