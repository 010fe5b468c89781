"""Voxel-level calibration of predicted class probabilities: ECE, class-wise ECE, NLL, Brier score
and reliability diagrams.

Every voxel is one prediction: a probability vector over the ``K`` classes and an integer reference
label. Probabilities come either class-first, ``(K, *spatial)`` with labels ``(*spatial)`` (the
layout of :func:`uncol.inference.predict_probabilities`), or as a table ``(N, K)`` with labels
``(N,)``. An optional boolean ``mask`` of the labels' shape selects the voxels that count.

Binning (Guo et al., *On calibration of modern neural networks*, ICML 2017, the reference that
Lu, Hong and Yang, arXiv:2512.13101, Sec. 4.5.2 use for reliability diagrams): ``n_bins``
equal-width bins ``I_m = ((m-1)/M, m/M]`` on ``[0, 1]``, closed on the right, with a confidence of
exactly 0 put in the first bin. With ``n_m`` voxels in bin ``m``, their summed confidence ``C_m``
and their number of correct predictions ``A_m``, the expected calibration error over ``N`` voxels is

    ECE = sum_m (n_m / N) |A_m / n_m - C_m / n_m| = sum_m |A_m - C_m| / N,

so empty bins contribute nothing and the value is exact when bins are pooled over cases: the
cumulative classes sum ``n_m``, ``C_m`` and ``A_m`` over cases rather than averaging case ECEs.

The functional forms return NaN when no voxel is selected (the value is undefined).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_N_BINS",
    "BrierScore",
    "ClasswiseExpectedCalibrationError",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "ReliabilityDiagram",
    "as_probability_voxels",
    "bin_edges",
    "compute_brier",
    "compute_classwise_ece",
    "compute_ece",
    "compute_nll",
    "reliability_diagram",
]

DEFAULT_N_BINS = 15
"""Number of equal-width confidence bins, as in Guo et al. (2017)."""

_SUM_TOLERANCE = 1e-3
"""How far a voxel's probabilities may sum from 1 (float32 softmax outputs sum to 1 within ~1e-6)."""


def as_probability_voxels(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check probabilities and labels and list the selected voxels, class-first.

    Two layouts are accepted: class-first ``probs`` ``(K, *spatial)`` with at least two spatial axes
    and ``labels`` ``(*spatial)``, or a table ``probs`` ``(N, K)`` with ``labels`` ``(N,)`` (a 2D
    ``probs`` with 1D labels is always read as a table). The probabilities are not copied when no
    mask is given and the layout allows a view.

    Args:
        probs: class probabilities, each voxel's summing to 1.
        labels: integer reference labels in ``[0, K)``.
        mask: optional array of the labels' shape; voxels where it is non-zero are kept.

    Returns:
        ``(p, y)``: probabilities ``(K, M)`` and labels ``(M,)`` (int64) of the ``M`` selected voxels.

    Raises:
        ValueError: on mismatched shapes, fewer than two classes, probabilities outside ``[0, 1]``,
            not finite or not summing to 1, or labels that are not integers in ``[0, K)``.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)):
        raise ValueError(f"probabilities must be numbers, got dtype {probs.dtype}")
    if probs.ndim == 2 and labels.ndim == 1:
        if probs.shape[0] != labels.shape[0]:
            raise ValueError(
                f"probabilities {probs.shape} read as a table (N, K) need labels of shape "
                f"({probs.shape[0]},), got {labels.shape}"
            )
        p = probs.T
    elif probs.ndim >= 3 and labels.ndim >= 2:
        if probs.shape[1:] != labels.shape:
            raise ValueError(
                f"probabilities {probs.shape} read as (K, *spatial) need labels of shape {probs.shape[1:]}, "
                f"got {labels.shape}"
            )
        p = probs.reshape(probs.shape[0], -1)
    else:
        raise ValueError(
            f"expected probabilities (K, *spatial) with labels (*spatial), or (N, K) with labels (N,); "
            f"got probabilities {probs.shape} and labels {labels.shape}"
        )
    k = p.shape[0]
    if k < 2:
        raise ValueError(f"need at least two classes, got probabilities with {k} class channel(s)")
    y = _check_labels(labels.reshape(-1), k)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != labels.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the labels' shape {labels.shape}")
        keep = mask.reshape(-1) != 0
        p = p[:, keep]
        y = y[keep]
    _check_probabilities(p)
    return p, y


def _check_labels(y: np.ndarray, k: int) -> np.ndarray:
    """Integer labels in ``[0, k)`` as int64."""
    if y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise ValueError(
                f"labels must be integer class labels, got dtype {y.dtype} with non-integer values"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"labels lie in [{y.min()}, {y.max()}] but the probabilities have {k} classes (0..{k - 1})"
        )
    return y.astype(np.int64, copy=False)


def _check_probabilities(p: np.ndarray) -> None:
    """Check a ``(K, M)`` probability array: finite, in ``[0, 1]``, columns summing to 1."""
    if p.size == 0:
        return
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities must be finite (found NaN or inf)")
    lo, hi = float(p.min()), float(p.max())
    if lo < -_SUM_TOLERANCE or hi > 1 + _SUM_TOLERANCE:
        raise ValueError(f"probabilities must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}] (logits?)")
    sums = p.sum(axis=0, dtype=np.float64)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > _SUM_TOLERANCE:
        raise ValueError(
            f"each voxel's probabilities must sum to 1 over the class axis (axis 0 of (K, *spatial), "
            f"axis 1 of (N, K)); found a sum off by {worst:.4g}"
        )


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return int(n_bins)


def bin_edges(n_bins: int = DEFAULT_N_BINS) -> np.ndarray:
    """Edges of ``n_bins`` equal-width bins on ``[0, 1]``.

    Args:
        n_bins: number of bins.

    Returns:
        ``n_bins + 1`` increasing edges from 0 to 1.
    """
    return np.linspace(0.0, 1.0, _check_n_bins(n_bins) + 1)


def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each value for right-closed bins ``((m-1)/M, m/M]``; 0 goes to the first bin."""
    idx = np.searchsorted(bin_edges(n_bins), values, side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


def _binned_sums(values: np.ndarray, hits: np.ndarray, n_bins: int) -> np.ndarray:
    """``(3, n_bins)`` float64 rows: voxel count, summed value, summed hits per bin."""
    idx = _bin_index(values, n_bins)
    return np.stack(
        [
            np.bincount(idx, minlength=n_bins).astype(np.float64),
            np.bincount(idx, weights=values.astype(np.float64, copy=False), minlength=n_bins),
            np.bincount(idx, weights=hits.astype(np.float64), minlength=n_bins),
        ]
    )


def _top_label_sums(
    probs: np.ndarray, labels: np.ndarray, n_bins: int, mask: np.ndarray | None
) -> np.ndarray:
    p, y = as_probability_voxels(probs, labels, mask)
    n_bins = _check_n_bins(n_bins)
    if y.size == 0:
        return np.zeros((3, n_bins))
    return _binned_sums(p.max(axis=0), p.argmax(axis=0) == y, n_bins)


def _classwise_sums(
    probs: np.ndarray, labels: np.ndarray, n_bins: int, mask: np.ndarray | None
) -> np.ndarray:
    p, y = as_probability_voxels(probs, labels, mask)
    n_bins = _check_n_bins(n_bins)
    return np.stack([_binned_sums(p[c], y == c, n_bins) for c in range(p.shape[0])])


def _ece_from_sums(sums: np.ndarray) -> float:
    """ECE ``sum_m |A_m - C_m| / N`` from ``(3, n_bins)`` binned sums; NaN without voxels."""
    total = float(sums[0].sum())
    if total == 0:
        return math.nan
    return float(np.abs(sums[2] - sums[1]).sum() / total)


def compute_ece(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_N_BINS, mask: np.ndarray | None = None
) -> float:
    """Top-label expected calibration error over voxels.

    Each voxel's confidence is its largest class probability and it is correct when that class (the
    argmax; the lowest index on ties) equals the label. See the module docstring for the binning.

    Args:
        probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
        labels: integer labels ``(*spatial)`` or ``(N,)``.
        n_bins: number of equal-width confidence bins on ``[0, 1]``.
        mask: optional voxel selection (non-zero = counted), the labels' shape.

    Returns:
        ECE in ``[0, 1]``; NaN when no voxel is selected.

    Raises:
        ValueError: on invalid inputs (see :func:`as_probability_voxels`) or ``n_bins < 1``.
    """
    return _ece_from_sums(_top_label_sums(probs, labels, n_bins, mask))


def compute_classwise_ece(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_N_BINS, mask: np.ndarray | None = None
) -> list[float]:
    """One-vs-rest expected calibration error of every class, background included.

    For class ``c`` every selected voxel counts: its "confidence" is ``p_c`` and its "accuracy" is
    ``1[label == c]``, binned as in :func:`compute_ece`. The mean of the returned list is the
    class-wise ECE of Kull et al. (*Beyond temperature scaling*, NeurIPS 2019); drop entry 0 to
    average over foreground classes only.

    Args:
        probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
        labels: integer labels ``(*spatial)`` or ``(N,)``.
        n_bins: number of equal-width probability bins on ``[0, 1]``.
        mask: optional voxel selection (non-zero = counted), the labels' shape.

    Returns:
        ``K`` values in ``[0, 1]``, one per class; all NaN when no voxel is selected.

    Raises:
        ValueError: on invalid inputs or ``n_bins < 1``.
    """
    return [_ece_from_sums(s) for s in _classwise_sums(probs, labels, n_bins, mask)]


def _nll_sum(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, eps: float) -> tuple[float, int]:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    p, y = as_probability_voxels(probs, labels, mask)
    p_true = np.take_along_axis(p, y[None, :], axis=0)[0].astype(np.float64)
    return float(-np.log(np.maximum(p_true, eps)).sum()), int(y.size)


def compute_nll(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-12
) -> float:
    """Mean negative log-likelihood (natural log) of the reference labels, ``-mean log p_label``.

    Args:
        probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
        labels: integer labels ``(*spatial)`` or ``(N,)``.
        mask: optional voxel selection (non-zero = counted), the labels' shape.
        eps: probabilities of the true class below ``eps`` count as ``eps``, so that one voxel whose
            float32 probability underflowed to 0 adds ``-ln(eps)`` (27.6 for 1e-12), not infinity.

    Returns:
        NLL in nats, ``>= 0``; ``ln K`` for uniform predictions, 0 for one-hot correct ones; NaN when
        no voxel is selected.

    Raises:
        ValueError: on invalid inputs or ``eps <= 0``.
    """
    total, n = _nll_sum(probs, labels, mask, eps)
    return total / n if n else math.nan


def _brier_sum(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None) -> tuple[float, int]:
    p, y = as_probability_voxels(probs, labels, mask)
    p = p.astype(np.float64)
    # sum_k (p_k - 1[y = k])^2 = sum_k p_k^2 - 2 p_y + 1
    p_true = np.take_along_axis(p, y[None, :], axis=0)[0]
    per_voxel = np.einsum("km,km->m", p, p) - 2.0 * p_true + 1.0
    return float(per_voxel.sum()), int(y.size)


def compute_brier(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Multi-class Brier score: mean over voxels of ``sum_k (p_k - 1[label = k])^2``.

    This is Brier's original (1950) multi-class score, in ``[0, 2]``; some libraries divide it by
    ``K``, this one does not.

    Args:
        probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
        labels: integer labels ``(*spatial)`` or ``(N,)``.
        mask: optional voxel selection (non-zero = counted), the labels' shape.

    Returns:
        The score: 0 for one-hot correct predictions, ``(K-1)/K`` for uniform ones, 2 for one-hot
        wrong ones; NaN when no voxel is selected.

    Raises:
        ValueError: on invalid inputs.
    """
    total, n = _brier_sum(probs, labels, mask)
    return total / n if n else math.nan


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin data of a (top-label) reliability diagram.

    Attributes:
        edges: ``n_bins + 1`` bin edges on ``[0, 1]``.
        counts: number of voxels in each bin (int64).
        confidence: mean confidence of each bin; NaN for an empty bin.
        accuracy: fraction of correct voxels in each bin; NaN for an empty bin.
        ece: the expected calibration error of these bins (NaN without voxels).
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float

    @classmethod
    def from_sums(cls, sums: np.ndarray) -> ReliabilityDiagram:
        """Build the diagram from ``(3, n_bins)`` rows: count, summed confidence, summed correct.

        Args:
            sums: binned sums as accumulated by :class:`ExpectedCalibrationError`.

        Returns:
            The diagram.
        """
        counts = sums[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(counts > 0, sums[1] / counts, np.nan)
            accuracy = np.where(counts > 0, sums[2] / counts, np.nan)
        return cls(
            edges=bin_edges(sums.shape[1]),
            counts=np.rint(counts).astype(np.int64),
            confidence=confidence,
            accuracy=accuracy,
            ece=_ece_from_sums(sums),
        )


def reliability_diagram(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_N_BINS, mask: np.ndarray | None = None
) -> ReliabilityDiagram:
    """Per-bin confidence, accuracy and count of the top-label prediction (as in :func:`compute_ece`).

    Plot ``accuracy`` against ``confidence`` (or against the bin centres); a calibrated model lies
    on the diagonal.

    Args:
        probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
        labels: integer labels ``(*spatial)`` or ``(N,)``.
        n_bins: number of equal-width confidence bins on ``[0, 1]``.
        mask: optional voxel selection (non-zero = counted), the labels' shape.

    Returns:
        The :class:`ReliabilityDiagram`; its ``ece`` equals :func:`compute_ece` on the same input.

    Raises:
        ValueError: on invalid inputs or ``n_bins < 1``.
    """
    return ReliabilityDiagram.from_sums(_top_label_sums(probs, labels, n_bins, mask))


class ExpectedCalibrationError:
    """Top-label ECE per case, and over a whole dataset from bins pooled over cases.

    Calling the object scores one case (returned and stored in :attr:`values`) and adds its binned
    counts, confidences and correct predictions to running sums, so :meth:`aggregate` is the exact
    ECE of all voxels seen, not a mean of case ECEs.

    Args:
        n_bins: number of equal-width confidence bins on ``[0, 1]``.
    """

    def __init__(self, n_bins: int = DEFAULT_N_BINS) -> None:
        self.n_bins = _check_n_bins(n_bins)
        self.values: list[float] = []
        self._sums = np.zeros((3, self.n_bins))

    def __call__(self, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Score one case and add its voxels to the dataset bins.

        Args:
            probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
            labels: integer labels ``(*spatial)`` or ``(N,)``.
            mask: optional voxel selection (non-zero = counted).

        Returns:
            The case's ECE (NaN when no voxel is selected).
        """
        sums = _top_label_sums(probs, labels, self.n_bins, mask)
        self._sums += sums
        value = _ece_from_sums(sums)
        self.values.append(value)
        return value

    def aggregate(self) -> float:
        """ECE of every voxel seen so far (NaN when none)."""
        return _ece_from_sums(self._sums)

    def reliability_diagram(self) -> ReliabilityDiagram:
        """Reliability diagram of every voxel seen so far."""
        return ReliabilityDiagram.from_sums(self._sums.copy())

    def reset(self) -> None:
        """Forget every case."""
        self.values.clear()
        self._sums[:] = 0.0


class ClasswiseExpectedCalibrationError:
    """One-vs-rest ECE of every class per case, and over a dataset from pooled bins.

    Args:
        n_bins: number of equal-width probability bins on ``[0, 1]``.
    """

    def __init__(self, n_bins: int = DEFAULT_N_BINS) -> None:
        self.n_bins = _check_n_bins(n_bins)
        self.values: list[list[float]] = []
        self._sums: np.ndarray | None = None

    def __call__(self, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> list[float]:
        """Score one case and add its voxels to the dataset bins.

        Args:
            probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
            labels: integer labels ``(*spatial)`` or ``(N,)``.
            mask: optional voxel selection (non-zero = counted).

        Returns:
            The case's per-class ECE (see :func:`compute_classwise_ece`).

        Raises:
            ValueError: when the number of classes differs from earlier cases.
        """
        sums = _classwise_sums(probs, labels, self.n_bins, mask)
        if self._sums is None:
            self._sums = sums
        elif self._sums.shape != sums.shape:
            raise ValueError(f"this case has {sums.shape[0]} classes, earlier ones had {self._sums.shape[0]}")
        else:
            self._sums = self._sums + sums
        value = [_ece_from_sums(s) for s in sums]
        self.values.append(value)
        return value

    def aggregate(self) -> list[float]:
        """Per-class ECE of every voxel seen so far (an empty list before the first case)."""
        return [] if self._sums is None else [_ece_from_sums(s) for s in self._sums]

    def reset(self) -> None:
        """Forget every case."""
        self.values.clear()
        self._sums = None


_VoxelSum = Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[float, int]]


class _PooledVoxelMean:
    """A per-voxel score averaged per case and pooled over every voxel of every case.

    Args:
        fn: ``(probs, labels, mask) -> (sum of the per-voxel scores, number of voxels)``.
    """

    def __init__(self, fn: _VoxelSum) -> None:
        self._fn = fn
        self.values: list[float] = []
        self._total = 0.0
        self._count = 0

    def __call__(self, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Score one case and add its voxels to the pooled mean.

        Args:
            probs: class probabilities ``(K, *spatial)`` or ``(N, K)``.
            labels: integer labels ``(*spatial)`` or ``(N,)``.
            mask: optional voxel selection (non-zero = counted).

        Returns:
            The case's mean (NaN when no voxel is selected).
        """
        total, count = self._fn(probs, labels, mask)
        self._total += total
        self._count += count
        value = total / count if count else math.nan
        self.values.append(value)
        return value

    def aggregate(self) -> float:
        """Mean over every voxel seen so far (voxel-weighted, not a mean of case means); NaN when none."""
        return self._total / self._count if self._count else math.nan

    def reset(self) -> None:
        """Forget every case."""
        self.values.clear()
        self._total = 0.0
        self._count = 0


class NegativeLogLikelihood(_PooledVoxelMean):
    """Cumulative NLL (see :func:`compute_nll`), pooled over the voxels of all cases.

    Args:
        eps: floor of the true-class probability.

    Raises:
        ValueError: if ``eps <= 0``.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        super().__init__(functools.partial(_nll_sum, eps=eps))
        self.eps = eps


class BrierScore(_PooledVoxelMean):
    """Cumulative multi-class Brier score (see :func:`compute_brier`), pooled over the voxels of all cases."""

    def __init__(self) -> None:
        super().__init__(_brier_sum)
