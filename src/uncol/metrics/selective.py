"""How well a voxel-wise uncertainty map points at the wrong voxels: error-detection AUROC/AUPRC and
selective prediction (risk-coverage curves, AURC, excess AURC).

Inputs are an uncertainty map (higher = less certain) and a boolean map of the voxels the
prediction gets wrong (e.g. ``probs.argmax(0) != labels``), of the same shape, with an optional
mask of the voxels that count. The "positives" are the wrong voxels.

**Ties.** Every quantity here depends only on the multiset of (uncertainty, wrong) pairs, never on
the order of voxels that share an uncertainty value:

* AUROC is the Mann-Whitney statistic with tied scores given their average rank, i.e.
  ``P(u_wrong > u_right) + P(u_wrong = u_right) / 2``.
* AUPRC is the average precision ``sum_n (R_n - R_{n-1}) P_n`` with one threshold per distinct
  uncertainty value (no interpolation), so a tied group enters or leaves as a whole.
* The risk-coverage curve has one point per distinct uncertainty value (the end of each tied group).
* AURC is the mean selective risk over the coverages ``k/N``, ``k = 1..N`` (Geifman, Uziel and
  El-Yaniv, *Bias-reduced uncertainty estimation for deep neural classifiers*, ICLR 2019). Inside a
  tied group the risk at an intermediate ``k`` is its expectation over every order of the group
  (errors spread evenly through it), so AURC is the mean AURC over all tie-breaking orders.

Lu, Hong and Yang (arXiv:2512.13101) report the AUROC of uncertainty against voxel error
(Sec. 4.5.1) and risk-coverage curves (Sec. 4.5.3, after Corbière et al., NeurIPS 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "RiskCoverageCurve",
    "UncertaintyErrorMetric",
    "UncertaintyErrorScores",
    "compute_aurc",
    "compute_eaurc",
    "compute_error_detection_auprc",
    "compute_error_detection_auroc",
    "compute_oracle_aurc",
    "compute_uncertainty_error_scores",
    "risk_coverage_curve",
]

DEFAULT_MAX_VOXELS = 4_000_000
"""Voxels :class:`UncertaintyErrorMetric` keeps (about 70 MB); below it the dataset scores are exact."""


@dataclass(frozen=True)
class _Groups:
    """Voxels grouped by distinct uncertainty, in increasing order of uncertainty."""

    values: np.ndarray  # distinct uncertainty values, increasing
    wrong: np.ndarray  # number of wrong voxels per value (float64)
    right: np.ndarray  # number of right voxels per value (float64)

    @property
    def n(self) -> int:
        return int(self.wrong.sum() + self.right.sum())

    @property
    def n_wrong(self) -> int:
        return int(self.wrong.sum())


def _as_pairs(
    uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 uncertainty and boolean error arrays of the selected voxels."""
    u = np.asarray(uncertainty)
    e = np.asarray(errors)
    if u.shape != e.shape:
        raise ValueError(f"uncertainty shape {u.shape} differs from errors shape {e.shape}")
    if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
        raise ValueError(f"uncertainty must be numbers, got dtype {u.dtype}")
    if e.dtype != bool:
        if not (np.issubdtype(e.dtype, np.number) and np.all((e == 0) | (e == 1))):
            raise ValueError("errors must be a boolean map (or 0/1) of the wrong voxels")
        e = e != 0
    u = u.reshape(-1)
    e = e.reshape(-1)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != np.shape(uncertainty):
            raise ValueError(f"mask shape {m.shape} differs from uncertainty shape {np.shape(uncertainty)}")
        keep = m.reshape(-1) != 0
        u, e = u[keep], e[keep]
    if not np.all(np.isfinite(u)):
        raise ValueError("uncertainty must be finite (found NaN or inf)")
    return u.astype(np.float64, copy=False), e


def _group(u: np.ndarray, e: np.ndarray) -> _Groups:
    values, inverse = np.unique(u, return_inverse=True)
    wrong = np.bincount(inverse.reshape(-1), weights=e.astype(np.float64), minlength=values.size)
    total = np.bincount(inverse.reshape(-1), minlength=values.size).astype(np.float64)
    return _Groups(values, wrong, total - wrong)


def _auroc(g: _Groups) -> float:
    n_wrong, n_right = float(g.wrong.sum()), float(g.right.sum())
    if n_wrong == 0 or n_right == 0:
        return math.nan
    right_below = np.cumsum(g.right) - g.right  # right voxels strictly less uncertain than each group
    return float(np.sum(g.wrong * (right_below + 0.5 * g.right)) / (n_wrong * n_right))


def _auprc(g: _Groups) -> float:
    n_wrong = float(g.wrong.sum())
    if n_wrong == 0:
        return math.nan
    # Thresholds from the most uncertain value down: flag every voxel at least that uncertain.
    tp = np.cumsum(g.wrong[::-1])
    flagged = np.cumsum((g.wrong + g.right)[::-1])
    return float(np.sum(g.wrong[::-1] / n_wrong * (tp / flagged)))


def _harmonic_diff(start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``H_{start+size} - H_start = sum_{j=1}^{size} 1/(start+j)`` (exact division for size 1)."""
    out = digamma(start + size + 1.0) - digamma(start + 1.0)
    single = size == 1
    out[single] = 1.0 / (start[single] + 1.0)
    return out


def _aurc(g: _Groups) -> float:
    total = g.wrong + g.right
    n = float(total.sum())
    if n == 0:
        return math.nan
    k0 = np.cumsum(total) - total  # voxels before each group
    e0 = np.cumsum(g.wrong) - g.wrong  # errors before each group
    r = g.wrong / total
    # Inside a group of size s with e errors, the expected number of errors among its first j voxels
    # is j r (r = e/s), so sum_{j=1..s} (e0 + j r)/(k0 + j) = s r + (e0 - r k0)(H_{k0+s} - H_{k0}).
    per_group = g.wrong + (e0 - r * k0) * _harmonic_diff(k0, total)
    return float(per_group.sum() / n)


def _oracle_aurc(n: int, n_wrong: int) -> float:
    """AURC of an ordering with every right voxel before every wrong one (see :func:`compute_oracle_aurc`)."""
    if n == 0:
        return math.nan
    n_right = n - n_wrong
    if n_wrong == 0:
        return 0.0
    harmonic = _harmonic_diff(np.array([float(n_right)]), np.array([float(n_wrong)]))[0]
    return float((n_wrong - n_right * harmonic) / n)


def compute_error_detection_auroc(
    uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """AUROC of the uncertainty as a score for "this voxel is wrong".

    The probability that a random wrong voxel is more uncertain than a random right one, ties
    counting one half (Mann-Whitney U with average ranks). 1 when every wrong voxel is more
    uncertain than every right one, 0.5 for an uncertainty unrelated to the errors, 0 when inverted.

    Args:
        uncertainty: voxel-wise uncertainty (higher = less certain).
        errors: boolean map of the wrong voxels, same shape.
        mask: optional voxel selection (non-zero = counted), same shape.

    Returns:
        AUROC in ``[0, 1]``; NaN when the selected voxels are all right or all wrong.

    Raises:
        ValueError: on mismatched shapes, non-finite uncertainty or non-boolean errors.
    """
    return _auroc(_group(*_as_pairs(uncertainty, errors, mask)))


def compute_error_detection_auprc(
    uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Area under the precision-recall curve of detecting wrong voxels, as average precision.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the thresholds "uncertainty >= v", one per distinct
    value ``v`` from the highest down, with ``P_n``/``R_n`` the precision/recall of the wrong voxels
    flagged at threshold ``n`` (no interpolation). A random score gives about the error rate, a
    perfect one 1.

    Args:
        uncertainty: voxel-wise uncertainty (higher = less certain).
        errors: boolean map of the wrong voxels, same shape.
        mask: optional voxel selection (non-zero = counted), same shape.

    Returns:
        Average precision in ``[0, 1]``; NaN when no selected voxel is wrong.

    Raises:
        ValueError: on mismatched shapes, non-finite uncertainty or non-boolean errors.
    """
    return _auprc(_group(*_as_pairs(uncertainty, errors, mask)))


@dataclass(frozen=True)
class RiskCoverageCurve:
    """A risk-coverage curve: one point per distinct uncertainty value, by increasing uncertainty.

    Keeping the voxels with uncertainty ``<= thresholds[i]`` keeps the fraction ``coverage[i]`` of
    the voxels, of which the fraction ``risk[i]`` is wrong. The last point has coverage 1 and the
    overall error rate as risk.

    Attributes:
        coverage: fraction of voxels kept, increasing to 1.
        risk: error rate of the kept voxels.
        thresholds: the uncertainty value that ends each point's group.
    """

    coverage: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray


def _curve(g: _Groups) -> RiskCoverageCurve:
    kept = np.cumsum(g.wrong + g.right)
    if kept.size == 0:
        return RiskCoverageCurve(np.zeros(0), np.zeros(0), np.zeros(0))
    return RiskCoverageCurve(kept / kept[-1], np.cumsum(g.wrong) / kept, g.values.copy())


def risk_coverage_curve(
    uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None
) -> RiskCoverageCurve:
    """Selective risk against coverage when voxels are kept from the least uncertain up.

    Voxels with equal uncertainty are kept or dropped together, so the curve does not depend on the
    order of tied voxels.

    Args:
        uncertainty: voxel-wise uncertainty (higher = less certain).
        errors: boolean map of the wrong voxels, same shape.
        mask: optional voxel selection (non-zero = counted), same shape.

    Returns:
        The :class:`RiskCoverageCurve` (empty arrays when no voxel is selected).

    Raises:
        ValueError: on mismatched shapes, non-finite uncertainty or non-boolean errors.
    """
    return _curve(_group(*_as_pairs(uncertainty, errors, mask)))


def compute_aurc(uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Area under the risk-coverage curve, ``AURC = (1/N) sum_{k=1}^{N} risk(k)``.

    ``risk(k)`` is the error rate of the ``k`` least uncertain voxels; inside a group of tied
    uncertainties it is the expectation over the group's orders (see the module docstring). Lower
    is better; an uncertainty unrelated to the errors gives about the error rate.

    Args:
        uncertainty: voxel-wise uncertainty (higher = less certain).
        errors: boolean map of the wrong voxels, same shape.
        mask: optional voxel selection (non-zero = counted), same shape.

    Returns:
        AURC in ``[0, 1]``; NaN when no voxel is selected.

    Raises:
        ValueError: on mismatched shapes, non-finite uncertainty or non-boolean errors.
    """
    return _aurc(_group(*_as_pairs(uncertainty, errors, mask)))


def compute_oracle_aurc(n_voxels: int, n_errors: int) -> float:
    """AURC of the oracle ordering, which keeps every right voxel before any wrong one.

    With ``m`` wrong voxels among ``N`` and ``n = N - m`` right ones, the risk is 0 up to ``k = n``
    and ``(k - n)/k`` after, so ``AURC* = (1/N) sum_{k=n+1}^{N} (1 - n/k) = (m - n (H_N - H_n)) / N``
    with ``H`` the harmonic numbers (computed with the digamma function). It is the lowest AURC any
    uncertainty can reach for these errors.

    Args:
        n_voxels: number of voxels ``N``.
        n_errors: number of wrong voxels ``m``.

    Returns:
        ``AURC*`` in ``[0, 1]``; NaN when ``n_voxels`` is 0.

    Raises:
        ValueError: unless ``0 <= n_errors <= n_voxels``.
    """
    if not 0 <= n_errors <= n_voxels:
        raise ValueError(f"need 0 <= n_errors <= n_voxels, got n_errors={n_errors}, n_voxels={n_voxels}")
    return _oracle_aurc(int(n_voxels), int(n_errors))


def compute_eaurc(uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Excess AURC: :func:`compute_aurc` minus the oracle's AURC for the same errors.

    Removes the part of AURC due to the error rate itself (Geifman et al., ICLR 2019), so models
    with different accuracies can be compared on how well their uncertainty ranks their errors.

    Args:
        uncertainty: voxel-wise uncertainty (higher = less certain).
        errors: boolean map of the wrong voxels, same shape.
        mask: optional voxel selection (non-zero = counted), same shape.

    Returns:
        E-AURC ``>= 0`` (0 for an oracle uncertainty); NaN when no voxel is selected.

    Raises:
        ValueError: on mismatched shapes, non-finite uncertainty or non-boolean errors.
    """
    g = _group(*_as_pairs(uncertainty, errors, mask))
    return _aurc(g) - _oracle_aurc(g.n, g.n_wrong)


@dataclass(frozen=True)
class UncertaintyErrorScores:
    """Every uncertainty-error score of one case or one dataset.

    Attributes:
        auroc: error-detection AUROC (:func:`compute_error_detection_auroc`).
        auprc: error-detection average precision (:func:`compute_error_detection_auprc`).
        aurc: area under the risk-coverage curve (:func:`compute_aurc`).
        eaurc: ``aurc - oracle_aurc`` (:func:`compute_eaurc`).
        oracle_aurc: the oracle's AURC for the same errors (:func:`compute_oracle_aurc`).
        error_rate: fraction of wrong voxels.
        n_voxels: number of voxels scored.
        n_errors: number of wrong voxels.
        n_used: voxels the ranking scores (AUROC, AUPRC, AURC, E-AURC) were computed from; below
            ``n_voxels`` when a dataset was subsampled by :class:`UncertaintyErrorMetric`.
    """

    auroc: float
    auprc: float
    aurc: float
    eaurc: float
    oracle_aurc: float
    error_rate: float
    n_voxels: int
    n_errors: int
    n_used: int


def _scores(g: _Groups, n_voxels: int, n_errors: int) -> UncertaintyErrorScores:
    aurc = _aurc(g)
    oracle = _oracle_aurc(g.n, g.n_wrong)
    return UncertaintyErrorScores(
        auroc=_auroc(g),
        auprc=_auprc(g),
        aurc=aurc,
        eaurc=aurc - oracle,
        oracle_aurc=oracle,
        error_rate=n_errors / n_voxels if n_voxels else math.nan,
        n_voxels=n_voxels,
        n_errors=n_errors,
        n_used=g.n,
    )


def compute_uncertainty_error_scores(
    uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None
) -> UncertaintyErrorScores:
    """AUROC, AUPRC, AURC, E-AURC and error rate of one uncertainty map, sorting the voxels once.

    Args:
        uncertainty: voxel-wise uncertainty (higher = less certain).
        errors: boolean map of the wrong voxels, same shape.
        mask: optional voxel selection (non-zero = counted), same shape.

    Returns:
        The :class:`UncertaintyErrorScores` (undefined values NaN, as in the single functions).

    Raises:
        ValueError: on mismatched shapes, non-finite uncertainty or non-boolean errors.
    """
    u, e = _as_pairs(uncertainty, errors, mask)
    return _scores(_group(u, e), int(e.size), int(np.count_nonzero(e)))


class UncertaintyErrorMetric:
    """Uncertainty-error scores per case, and over a dataset from a bounded uniform subsample.

    Calling the object scores one case exactly (returned and stored in :attr:`values`) and adds its
    voxels to the dataset pool. The pool keeps at most ``max_voxels`` (uncertainty, wrong) pairs: a
    uniform random subset, without replacement, of every voxel seen (each voxel draws a uniform key
    and the ``max_voxels`` smallest keys are kept, so memory stays bounded whatever the number of
    cases). :meth:`aggregate` and :meth:`risk_coverage_curve` use the pool.

    *Exactness*: while at most ``max_voxels`` voxels have been seen the pool holds all of them and
    the dataset scores are exact (equal to the functional forms on all voxels concatenated). Beyond,
    AUROC, AUPRC, AURC, E-AURC and the curve are estimates from ``max_voxels`` voxels (unbiased for
    AUROC; standard error of order ``1/sqrt(number of sampled wrong voxels)``), and ``error_rate``,
    ``n_voxels`` and ``n_errors`` stay exact. E-AURC subtracts the oracle AURC of the *same* sample,
    so an oracle uncertainty still scores 0.

    Args:
        max_voxels: the most voxels kept for the dataset scores.
        seed: seed of the subsampling keys (the result depends on it only beyond ``max_voxels``).

    Raises:
        ValueError: if ``max_voxels < 1``.
    """

    def __init__(self, max_voxels: int = DEFAULT_MAX_VOXELS, seed: int = 0) -> None:
        if isinstance(max_voxels, bool) or not isinstance(max_voxels, int | np.integer) or max_voxels < 1:
            raise ValueError(f"max_voxels must be an integer >= 1, got {max_voxels!r}")
        self.max_voxels = int(max_voxels)
        self.seed = seed
        self.values: list[UncertaintyErrorScores] = []
        self.reset()

    def reset(self) -> None:
        """Forget every case (the subsampling restarts from ``seed``)."""
        self.values = []
        self._rng = np.random.default_rng(self.seed)
        self._keys = np.zeros(0)
        self._u = np.zeros(0)
        self._e = np.zeros(0, dtype=bool)
        self.n_voxels = 0
        self.n_errors = 0

    def update(self, uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one case's voxels to the dataset pool without scoring the case.

        Args:
            uncertainty: voxel-wise uncertainty (higher = less certain).
            errors: boolean map of the wrong voxels, same shape.
            mask: optional voxel selection (non-zero = counted), same shape.
        """
        self._add(*_as_pairs(uncertainty, errors, mask))

    def _add(self, u: np.ndarray, e: np.ndarray) -> None:
        self.n_voxels += int(e.size)
        self.n_errors += int(np.count_nonzero(e))
        keys = self._rng.random(e.size)
        if self._keys.size >= self.max_voxels:
            # Only keys below the largest kept one can enter; drop the rest before concatenating.
            enter = keys < self._keys.max()
            keys, u, e = keys[enter], u[enter], e[enter]
        keys = np.concatenate([self._keys, keys])
        u = np.concatenate([self._u, u])
        e = np.concatenate([self._e, e])
        if keys.size > self.max_voxels:
            keep = np.argpartition(keys, self.max_voxels - 1)[: self.max_voxels]
            keys, u, e = keys[keep], u[keep], e[keep]
        self._keys, self._u, self._e = keys, u, e

    def __call__(
        self, uncertainty: np.ndarray, errors: np.ndarray, mask: np.ndarray | None = None
    ) -> UncertaintyErrorScores:
        """Score one case exactly and add its voxels to the dataset pool.

        Args:
            uncertainty: voxel-wise uncertainty (higher = less certain).
            errors: boolean map of the wrong voxels, same shape.
            mask: optional voxel selection (non-zero = counted), same shape.

        Returns:
            The case's :class:`UncertaintyErrorScores`.
        """
        u, e = _as_pairs(uncertainty, errors, mask)
        value = _scores(_group(u, e), int(e.size), int(np.count_nonzero(e)))
        self._add(u, e)
        self.values.append(value)
        return value

    @property
    def exact(self) -> bool:
        """Whether the pool still holds every voxel seen (dataset scores exact)."""
        return self.n_voxels <= self.max_voxels

    def aggregate(self) -> UncertaintyErrorScores:
        """Dataset-level scores of every voxel seen so far (see the class docstring on exactness)."""
        return _scores(_group(self._u, self._e), self.n_voxels, self.n_errors)

    def risk_coverage_curve(self) -> RiskCoverageCurve:
        """Dataset-level risk-coverage curve from the pool."""
        return _curve(_group(self._u, self._e))
