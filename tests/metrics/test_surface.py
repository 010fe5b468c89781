"""HD95 and ASD against hand-computed shapes, a brute-force oracle, medpy and MONAI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from uncol.metrics import (
    AverageSurfaceDistanceMetric,
    HausdorffDistance95Metric,
    compute_asd,
    compute_directed_surface_distances,
    compute_hd95,
    compute_surface_metrics,
)


def _box(shape: tuple[int, ...], start: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return mask


def _ball(shape: tuple[int, ...], radius: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    return sum(g**2 for g in grids) <= radius**2


def _blobs(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.5, thr: float = 0.08
) -> np.ndarray:
    """Random irregular objects: smoothed noise, thresholded (touching the border at times)."""
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > thr


def _oracle_surface_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Physical coordinates of the voxels with a face neighbour outside the mask (or outside the array).

    Written with explicit shifts rather than a morphological erosion, so it is an independent check.
    """
    padded = np.pad(mask, 1, constant_values=False)
    surface = np.zeros_like(mask)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for step in (-1, 1):
            neighbour = np.roll(padded, step, axis=axis)[core]
            surface |= mask & ~neighbour
    return np.argwhere(surface) * np.asarray(spacing)


def _oracle_directed(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    return cdist(_oracle_surface_points(a, spacing), _oracle_surface_points(b, spacing)).min(axis=1)


# --- analytic shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(("axis", "k"), [(0, 2), (1, 2), (1, 5)])
def test_shifted_boxes_hd95_anisotropic(axis: int, k: int) -> None:
    # A 20x20 square shifted by k voxels along one axis: the whole leading edge of each square is
    # k*spacing[axis] from the other's surface (20 of 76 surface voxels, far above the top 5%),
    # and no surface voxel is farther, so HD95 = k*spacing[axis] in both directions.
    spacing = (1.0, 2.5)
    start = [10, 10]
    a = _box((50, 50), tuple(start), (20, 20))
    start[axis] += k
    b = _box((50, 50), tuple(start), (20, 20))
    assert compute_hd95(a, b, spacing) == pytest.approx(k * spacing[axis])
    assert compute_directed_surface_distances(a, b, spacing).max() == pytest.approx(k * spacing[axis])
    # Voxel units when no spacing is given.
    assert compute_hd95(a, b) == pytest.approx(k)


def test_shifted_boxes_3d_anisotropic() -> None:
    spacing = (1.0, 1.0, 3.0)
    a = _box((30, 30, 20), (5, 5, 4), (12, 12, 8))
    b = _box((30, 30, 20), (5, 5, 6), (12, 12, 8))  # shifted 2 slices = 6 mm
    assert compute_hd95(a, b, spacing) == pytest.approx(6.0)
    expected_asd = np.concatenate([_oracle_directed(a, b, spacing), _oracle_directed(b, a, spacing)]).mean()
    assert compute_asd(a, b, spacing) == pytest.approx(expected_asd)


def test_identical_masks_have_zero_distance() -> None:
    a = _box((20, 20), (3, 4), (7, 9))
    assert compute_hd95(a, a, (0.5, 2.0)) == 0.0
    assert compute_asd(a, a, (0.5, 2.0)) == 0.0


@pytest.mark.parametrize(("shape", "r1", "r2"), [((61, 61), 10.0, 17.0), ((41, 41, 41), 8.0, 13.0)])
def test_concentric_balls(shape: tuple[int, ...], r1: float, r2: float) -> None:
    # Every surface point of one ball is about r2 - r1 from the other's surface; voxelisation
    # moves each surface by less than a voxel.
    inner, outer = _ball(shape, r1), _ball(shape, r2)
    gap = r2 - r1
    for value in (compute_hd95(inner, outer), compute_asd(inner, outer), compute_hd95(outer, inner)):
        assert abs(value - gap) <= 1.0
    d = compute_directed_surface_distances(inner, outer)
    assert np.all(np.abs(d - gap) <= 1.0)


def test_concentric_balls_scaled_by_isotropic_spacing() -> None:
    inner, outer = _ball((41, 41, 41), 8.0), _ball((41, 41, 41), 13.0)
    assert compute_hd95(inner, outer, (2.0, 2.0, 2.0)) == pytest.approx(2.0 * compute_hd95(inner, outer))
    assert compute_asd(inner, outer, (2.0, 2.0, 2.0)) == pytest.approx(2.0 * compute_asd(inner, outer))


# --- brute-force oracle -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "spacing"), [((48, 40), (1.0, 2.5)), ((20, 24, 16), (0.8, 1.1, 3.0)), ((30, 30), (1.0, 1.0))]
)
def test_standard_matches_brute_force(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        a, b = _blobs(rng, shape), _blobs(rng, shape)
        d_ab, d_ba = _oracle_directed(a, b, spacing), _oracle_directed(b, a, spacing)
        np.testing.assert_allclose(np.sort(compute_directed_surface_distances(a, b, spacing)), np.sort(d_ab))
        hd95, asd = compute_surface_metrics(a, b, spacing)
        assert hd95 == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
        assert asd == pytest.approx((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size))
        # The medpy convention pools both directions and ignores the spacing.
        ones = (1.0,) * len(shape)
        pooled = np.concatenate([_oracle_directed(a, b, ones), _oracle_directed(b, a, ones)])
        assert compute_hd95(a, b, spacing, convention="medpy") == pytest.approx(np.percentile(pooled, 95))
        assert compute_asd(a, b, spacing, convention="medpy") == pytest.approx(
            _oracle_directed(a, b, ones).mean()
        )


def test_conventions_differ_on_asymmetric_shapes() -> None:
    # A 10x10 square in a corner of a 30x30 one: the directed p95 are 11 (small -> large) and
    # about 22 (large -> small); the pooled p95 (medpy) falls strictly between them, below the
    # standard max, and the directed mean (medpy ASD) differs from the symmetric mean.
    small = _box((40, 40), (8, 8), (10, 10))
    large = _box((40, 40), (5, 5), (30, 30))
    assert np.percentile(compute_directed_surface_distances(small, large), 95) == pytest.approx(11.0)
    assert 11.0 < compute_hd95(small, large, convention="medpy") < compute_hd95(small, large) - 0.5
    assert compute_asd(small, large, convention="medpy") != pytest.approx(compute_asd(small, large))


# --- undefined values and input validation ----------------------------------------------------


def test_empty_masks_are_nan() -> None:
    a = _box((10, 10), (2, 2), (3, 3))
    empty = np.zeros((10, 10), dtype=bool)
    for convention in ("standard", "medpy"):
        for p, r in ((a, empty), (empty, a), (empty, empty)):
            assert math.isnan(compute_hd95(p, r, convention=convention))
            assert math.isnan(compute_asd(p, r, convention=convention))
    assert compute_directed_surface_distances(empty, a).size == 0
    assert np.all(np.isinf(compute_directed_surface_distances(a, empty)))


@pytest.mark.parametrize(
    "spacing", [(1.0,), (1.0, 1.0, 1.0), (1.0, 0.0), (1.0, -2.0), (1.0, float("nan")), ("a", 1)]
)
def test_invalid_spacing(spacing: tuple) -> None:
    a = _box((10, 10), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="spacing"):
        compute_hd95(a, a, spacing)


def test_invalid_convention_and_shapes() -> None:
    a = _box((10, 10), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="convention"):
        compute_asd(a, a, convention="monai")
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(10, 11\)"):
        compute_hd95(a, np.zeros((10, 11)))


def test_cumulative_surface_classes() -> None:
    a = _box((50, 50), (10, 10), (20, 20))
    b = _box((50, 50), (10, 12), (20, 20))
    hd = HausdorffDistance95Metric(spacing=(1.0, 2.5))
    assert hd(a, b) == pytest.approx(5.0)
    assert hd(a, b, spacing=(1.0, 1.0)) == pytest.approx(2.0)  # per-case override
    assert hd.aggregate() == pytest.approx((3.5, 1.5))
    asd = AverageSurfaceDistanceMetric(convention="medpy")
    asd(a, b)
    asd(a, np.zeros_like(a))
    assert asd.values[0] == pytest.approx(compute_asd(a, b, convention="medpy"))
    assert math.isnan(asd.values[1])
    assert asd.aggregate()[0] == pytest.approx(asd.values[0])


# --- reference implementations ----------------------------------------------------------------

CASES = [((64, 56), (1.0, 2.5)), ((24, 28, 20), (0.7, 1.3, 3.0))]


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_medpy_convention_equals_medpy(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    mb = pytest.importorskip("medpy.metric.binary", reason="medpy is not installed or does not import")
    from uncol.metrics import compute_dice, compute_jaccard

    rng = np.random.default_rng(123)
    for _ in range(4):
        a, b = _blobs(rng, shape), _blobs(rng, shape)
        # The published code calls medpy without voxelspacing; ours must ignore the spacing.
        np.testing.assert_allclose(compute_hd95(a, b, spacing, convention="medpy"), mb.hd95(a, b), rtol=1e-6)
        np.testing.assert_allclose(compute_asd(a, b, spacing, convention="medpy"), mb.asd(a, b), rtol=1e-6)
        np.testing.assert_allclose(compute_dice(a, b), mb.dc(a, b), rtol=1e-6)
        np.testing.assert_allclose(compute_jaccard(a, b), mb.jc(a, b), rtol=1e-6)
        # With a spacing, medpy's directed mean and full Hausdorff check our distance transform.
        d_ab = compute_directed_surface_distances(a, b, spacing)
        d_ba = compute_directed_surface_distances(b, a, spacing)
        np.testing.assert_allclose(d_ab.mean(), mb.asd(a, b, voxelspacing=spacing), rtol=1e-6)
        np.testing.assert_allclose(max(d_ab.max(), d_ba.max()), mb.hd(a, b, voxelspacing=spacing), rtol=1e-6)


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_standard_convention_equals_monai(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")

    def one_hot(mask: np.ndarray) -> object:
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    rng = np.random.default_rng(321)
    for _ in range(4):
        a, b = _blobs(rng, shape), _blobs(rng, shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = monai_metrics.compute_hausdorff_distance(
                one_hot(a), one_hot(b), percentile=95, directed=False, spacing=list(spacing)
            )
            asd = monai_metrics.compute_average_surface_distance(
                one_hot(a), one_hot(b), symmetric=True, spacing=list(spacing)
            )
        # MONAI uses the same surface (erosion with a cross, outside = background) and exact
        # Euclidean distances, but returns float32: hence rtol 1e-5 rather than exact equality.
        np.testing.assert_allclose(compute_hd95(a, b, spacing), hd.item(), rtol=1e-5)
        np.testing.assert_allclose(compute_asd(a, b, spacing), asd.item(), rtol=1e-5)
