"""Surface-distance metrics on binary masks: 95th-percentile Hausdorff distance (HD95) and average
surface distance (ASD).

The surface of a mask is the set of its voxels that have at least one face-neighbour outside it
(``mask XOR erosion(mask)`` with a connectivity-1 cross and everything outside the array counted as
background), the same definition as medpy and MONAI. Distances from each surface voxel of one mask
to the nearest surface voxel of the other come from an exact Euclidean distance transform in physical
units (``spacing``).

Two conventions are implemented (see ``docs/metrics.md``):

* ``"standard"``: HD95 is the larger of the two directed 95th percentiles and ASD is the average
  *symmetric* surface distance, both in physical units.
* ``"medpy"``: what ``medpy.metric.binary.hd95``/``asd`` return when called without a voxel spacing,
  as the published semi-supervised code bases do: the 95th percentile of the pooled distances of
  both directions, and the *directed* mean distance prediction -> reference, in voxel units.

Both return NaN when either mask is empty (the value is undefined); the case-level policy in
:mod:`uncol.metrics.case_metrics` decides what is reported instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from uncol.metrics.overlap import CumulativeMetric, as_mask_pair

__all__ = [
    "CONVENTIONS",
    "AverageSurfaceDistanceMetric",
    "HausdorffDistance95Metric",
    "compute_asd",
    "compute_directed_surface_distances",
    "compute_hd95",
    "compute_surface_metrics",
    "validate_convention",
    "validate_spacing",
]

CONVENTIONS = ("standard", "medpy")


def validate_convention(convention: str) -> str:
    """Check a metric convention name.

    Args:
        convention: ``"standard"`` or ``"medpy"``.

    Returns:
        The convention, unchanged.

    Raises:
        ValueError: for any other value.
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown metric convention {convention!r}; expected one of {', '.join(CONVENTIONS)}"
        )
    return convention


def validate_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Check a voxel spacing against the number of dimensions of the masks.

    Args:
        spacing: physical size of one voxel along each array axis, or ``None`` for 1.0 per axis.
        ndim: number of dimensions of the masks.

    Returns:
        The spacing as a tuple of floats of length ``ndim``.

    Raises:
        ValueError: if the length differs from ``ndim`` or a value is not a finite number > 0.
    """
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be a sequence of {ndim} numbers, got {spacing!r}") from None
    if len(values) != ndim:
        raise ValueError(f"spacing {values} has {len(values)} values but the masks are {ndim}D")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be finite and > 0, got {values}")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: the voxels removed by one erosion with a cross."""
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    # border_value=0: a mask voxel on the array border counts as surface, as in medpy and MONAI.
    return mask ^ ndimage.binary_erosion(mask, structure=cross, border_value=0)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union.

    Surfaces and distances are unchanged by the crop: every surface voxel lies inside the box, and
    everything outside it is background, which is exactly what the erosion's ``border_value=0``
    assumes. It makes the distance transforms proportional to the objects' size instead of the
    volume's.
    """
    union = a | b
    slices = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=other))
        if hits.size == 0:
            return a, b
        slices.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box = tuple(slices)
    return a[box], b[box]


def _directed(surface_a: np.ndarray, surface_b: np.ndarray, sampling: tuple[float, ...] | None) -> np.ndarray:
    """Distances from each voxel of ``surface_a`` to the nearest voxel of ``surface_b``."""
    n_a = int(np.count_nonzero(surface_a))
    if n_a == 0:
        return np.zeros(0, dtype=np.float64)
    if not surface_b.any():
        # No partner surface at all: every distance is infinite (callers treat this as undefined).
        return np.full(n_a, np.inf, dtype=np.float64)
    # The EDT measures the distance to the nearest zero, so the target surface must be the zeros.
    dt = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    return np.asarray(dt[surface_a], dtype=np.float64)


def _both_directions(
    pred: np.ndarray, ref: np.ndarray, sampling: tuple[float, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances pred -> ref and ref -> pred of two non-empty boolean masks."""
    p, r = _crop_to_union(pred, ref)
    sp, sr = _surface(p), _surface(r)
    return _directed(sp, sr, sampling), _directed(sr, sp, sampling)


def compute_directed_surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Distances from each surface voxel of ``a`` to the nearest surface voxel of ``b``.

    Args:
        a: source mask (non-zero = foreground), 2D or 3D.
        b: target mask, same shape.
        spacing: voxel size along each axis (physical units); ``None`` means 1.0 per axis.

    Returns:
        1D float64 array with one distance per surface voxel of ``a`` (in the order of
        ``np.nonzero``); empty when ``a`` is empty, all ``inf`` when ``b`` is empty.

    Raises:
        ValueError: on a shape mismatch or an invalid spacing.
    """
    a_b, b_b = as_mask_pair(a, b)
    sampling = validate_spacing(spacing, a_b.ndim)
    a_c, b_c = _crop_to_union(a_b, b_b)
    return _directed(_surface(a_c), _surface(b_c), sampling)


def _hd95_from(d_pr: np.ndarray, d_rp: np.ndarray, convention: str) -> float:
    """HD95 from the two directed distance sets."""
    if convention == "medpy":
        return float(np.percentile(np.hstack((d_pr, d_rp)), 95))
    return float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))


def _asd_from(d_pr: np.ndarray, d_rp: np.ndarray, convention: str) -> float:
    """ASD from the two directed distance sets."""
    if convention == "medpy":
        return float(d_pr.mean())
    return float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))


def compute_surface_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    convention: str = "standard",
) -> tuple[float, float]:
    """HD95 and ASD together, computing the surface distances only once.

    Args:
        pred: predicted mask (non-zero = foreground), 2D or 3D.
        ref: reference mask, same shape.
        spacing: voxel size along each axis; ``None`` means 1.0. Validated but not used in the
            ``"medpy"`` convention, which works in voxel units.
        convention: ``"standard"`` or ``"medpy"`` (see :func:`compute_hd95` and :func:`compute_asd`).

    Returns:
        ``(hd95, asd)``; both NaN when either mask is empty.

    Raises:
        ValueError: on a shape mismatch, an invalid spacing or an unknown convention.
    """
    validate_convention(convention)
    p, r = as_mask_pair(pred, ref)
    sampling = validate_spacing(spacing, p.ndim)
    if not p.any() or not r.any():
        return math.nan, math.nan
    # medpy is called without voxelspacing by the published code, i.e. in voxel units.
    d_pr, d_rp = _both_directions(p, r, None if convention == "medpy" else sampling)
    return _hd95_from(d_pr, d_rp, convention), _asd_from(d_pr, d_rp, convention)


def compute_hd95(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    convention: str = "standard",
) -> float:
    """95th-percentile Hausdorff distance between two masks.

    Args:
        pred: predicted mask (non-zero = foreground), 2D or 3D.
        ref: reference mask, same shape.
        spacing: voxel size along each axis; ``None`` means 1.0. Validated but not used in the
            ``"medpy"`` convention, which works in voxel units.
        convention: ``"standard"``: ``max(p95(d(pred->ref)), p95(d(ref->pred)))``; ``"medpy"``:
            ``p95`` of both directed distance sets pooled together (``medpy.metric.binary.hd95``).

    Returns:
        HD95, or NaN when either mask is empty.

    Raises:
        ValueError: on a shape mismatch, an invalid spacing or an unknown convention.
    """
    return compute_surface_metrics(pred, ref, spacing, convention)[0]


def compute_asd(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    convention: str = "standard",
) -> float:
    """Average surface distance between two masks.

    Args:
        pred: predicted mask (non-zero = foreground), 2D or 3D.
        ref: reference mask, same shape.
        spacing: voxel size along each axis; ``None`` means 1.0. Validated but not used in the
            ``"medpy"`` convention, which works in voxel units.
        convention: ``"standard"``: average *symmetric* surface distance
            ``(sum d(pred->ref) + sum d(ref->pred)) / (n_pred + n_ref)``; ``"medpy"``: the directed
            mean ``mean d(pred->ref)`` (``medpy.metric.binary.asd``).

    Returns:
        ASD, or NaN when either mask is empty.

    Raises:
        ValueError: on a shape mismatch, an invalid spacing or an unknown convention.
    """
    return compute_surface_metrics(pred, ref, spacing, convention)[1]


class _SurfaceMetric(CumulativeMetric):
    """Cumulative surface metric with a default spacing that each call may override."""

    def __init__(self, spacing: Sequence[float] | None, convention: str) -> None:
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.convention = validate_convention(convention)
        super().__init__(lambda pred, ref: self._compute(pred, ref, self.spacing))

    def __call__(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
        """Score one case and remember the value.

        Args:
            pred: predicted mask.
            ref: reference mask.
            spacing: this case's voxel spacing; defaults to the one given to the constructor.

        Returns:
            The case's value (NaN when undefined).
        """
        case_spacing = self.spacing if spacing is None else spacing
        value = float(self._compute(pred, ref, case_spacing))
        self.values.append(value)
        return value

    def _compute(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None) -> float:
        raise NotImplementedError


class HausdorffDistance95Metric(_SurfaceMetric):
    """Cumulative HD95 (see :func:`compute_hd95`).

    Args:
        spacing: default voxel spacing of the cases.
        convention: ``"standard"`` or ``"medpy"``.
    """

    def __init__(self, spacing: Sequence[float] | None = None, convention: str = "standard") -> None:
        super().__init__(spacing, convention)

    def _compute(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None) -> float:
        return compute_hd95(pred, ref, spacing=spacing, convention=self.convention)


class AverageSurfaceDistanceMetric(_SurfaceMetric):
    """Cumulative ASD (see :func:`compute_asd`).

    Args:
        spacing: default voxel spacing of the cases.
        convention: ``"standard"`` or ``"medpy"``.
    """

    def __init__(self, spacing: Sequence[float] | None = None, convention: str = "standard") -> None:
        super().__init__(spacing, convention)

    def _compute(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None) -> float:
        return compute_asd(pred, ref, spacing=spacing, convention=self.convention)
