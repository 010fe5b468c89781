"""ECE, class-wise ECE, NLL, Brier score and reliability diagrams on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uncol.metrics import (
    BrierScore,
    ClasswiseExpectedCalibrationError,
    ExpectedCalibrationError,
    NegativeLogLikelihood,
    compute_brier,
    compute_classwise_ece,
    compute_ece,
    compute_nll,
    reliability_diagram,
)


def _sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One label per row of ``probs`` (N, K), drawn from that row's distribution."""
    u = rng.random(probs.shape[0])
    return np.minimum((u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


def _two_class(conf: float, n: int, n_correct: int, predicted: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` voxels predicting class ``predicted`` with confidence ``conf``; the first ``n_correct`` right."""
    probs = np.tile([conf, 1 - conf] if predicted == 0 else [1 - conf, conf], (n, 1))
    labels = np.full(n, 1 - predicted)
    labels[:n_correct] = predicted
    return probs, labels


def test_perfectly_calibrated_ece_near_zero() -> None:
    # Labels drawn from the predicted distribution: in every bin the number of correct voxels A_m
    # minus the summed confidence C_m is a sum of n_m independent zero-mean terms of variance <= 1/4,
    # so E|A_m - C_m| <= sqrt(n_m)/2 and, by Cauchy-Schwarz, E[ECE] <= sqrt(M/N)/2 (0.0043 here). The
    # tolerance is twice that expectation bound (the generator is fixed, so the value is reproducible).
    rng = np.random.default_rng(1234)
    n, k, n_bins = 200_000, 3, 15
    probs = rng.dirichlet(np.full(k, 0.7), size=n)
    labels = _sample_labels(rng, probs)
    tol = math.sqrt(n_bins / n)
    assert compute_ece(probs, labels, n_bins) < tol
    assert max(compute_classwise_ece(probs, labels, n_bins)) < tol
    # The same labels against sharpened (over-confident) probabilities are far from calibrated.
    sharp = probs**3 / (probs**3).sum(axis=1, keepdims=True)
    assert compute_ece(sharp, labels, n_bins) > 10 * tol


def test_over_confident_ece_is_the_confidence_accuracy_gap() -> None:
    # 10 voxels at confidence 0.9 with 6 right (gap 0.3), 10 at 0.7 with 5 right (gap 0.2).
    p1, y1 = _two_class(0.9, 10, 6, predicted=0)
    p2, y2 = _two_class(0.7, 10, 5, predicted=1)
    probs, labels = np.concatenate([p1, p2]), np.concatenate([y1, y2])
    assert compute_ece(p1, y1) == pytest.approx(0.3)
    assert compute_ece(probs, labels, n_bins=10) == pytest.approx((10 * 0.3 + 10 * 0.2) / 20)
    diagram = reliability_diagram(probs, labels, n_bins=10)
    np.testing.assert_allclose(diagram.edges, np.linspace(0, 1, 11))
    assert diagram.counts.tolist() == [0, 0, 0, 0, 0, 0, 10, 0, 10, 0]  # 0.7 in (0.6, 0.7], 0.9 in (0.8, 0.9]
    assert diagram.confidence[6] == pytest.approx(0.7) and diagram.accuracy[6] == pytest.approx(0.5)
    assert diagram.confidence[8] == pytest.approx(0.9) and diagram.accuracy[8] == pytest.approx(0.6)
    assert np.isnan(diagram.confidence[0]) and np.isnan(diagram.accuracy[0])  # empty bins
    assert diagram.ece == pytest.approx(0.25)


def test_under_confident_ece() -> None:
    # Confidence 0.6, every voxel right: accuracy 1, gap 0.4.
    probs, labels = _two_class(0.6, 8, 8)
    assert compute_ece(probs, labels) == pytest.approx(0.4)
    diagram = reliability_diagram(probs, labels, n_bins=5)
    assert diagram.counts.tolist() == [0, 0, 8, 0, 0]  # 0.6 is in (0.4, 0.6]: bins are closed on the right
    assert diagram.accuracy[2] == 1.0


def test_bins_are_closed_on_the_right() -> None:
    # Confidences exactly on the edges of 4 bins go to the bin they close; 1.0 to the last.
    conf = np.array([0.5, 0.75, 1.0, 0.5 + 1e-9])
    probs = np.stack([conf, 1 - conf], axis=1)
    diagram = reliability_diagram(probs, np.zeros(4, dtype=int), n_bins=4)
    assert diagram.counts.tolist() == [0, 1, 2, 1]


def test_classwise_ece_by_hand() -> None:
    # Two voxels, K=3: p = (0.5, 0.3, 0.2) with label 0 and (0.1, 0.6, 0.3) with label 2; 10 bins.
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    labels = np.array([0, 2])
    # Class 0: p 0.5 (target 1) and 0.1 (target 0) in different bins: (|1-0.5| + |0-0.1|)/2 = 0.3.
    # Class 1: 0.3 (0) and 0.6 (0): (0.3 + 0.6)/2 = 0.45.
    # Class 2: 0.2 (0) and 0.3 (1) in bins (0.1, 0.2] and (0.2, 0.3]: (0.2 + 0.7)/2 = 0.45.
    assert compute_classwise_ece(probs, labels, n_bins=10) == pytest.approx([0.3, 0.45, 0.45])
    # With one bin, class 2 pools both voxels: |1 - 0.5| / 2 = 0.25.
    assert compute_classwise_ece(probs, labels, n_bins=1)[2] == pytest.approx(0.25)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_nll_and_brier_of_one_hot_and_uniform(k: int) -> None:
    rng = np.random.default_rng(k)
    labels = rng.integers(0, k, size=(6, 7))
    one_hot = np.moveaxis(np.eye(k)[labels], -1, 0)  # (K, 6, 7)
    assert compute_nll(one_hot, labels) == 0.0
    assert compute_brier(one_hot, labels) == 0.0
    assert compute_ece(one_hot, labels) == 0.0
    uniform = np.full((k, 6, 7), 1.0 / k)
    assert compute_nll(uniform, labels) == pytest.approx(math.log(k))
    assert compute_brier(uniform, labels) == pytest.approx((k - 1) / k)
    wrong = np.moveaxis(np.eye(k)[(labels + 1) % k], -1, 0)
    assert compute_brier(wrong, labels) == pytest.approx(2.0)
    assert compute_nll(wrong, labels, eps=1e-6) == pytest.approx(-math.log(1e-6))
    assert compute_ece(wrong, labels) == pytest.approx(1.0)


def test_nll_and_brier_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    labels = np.array([0, 1])
    assert compute_nll(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.25)) / 2)
    brier_1 = 0.3**2 + 0.2**2 + 0.1**2
    brier_2 = 0.25**2 + 0.75**2 + 0.5**2
    assert compute_brier(probs, labels) == pytest.approx((brier_1 + brier_2) / 2)


def test_layouts_3d_and_table_agree() -> None:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(4), size=(5, 6, 3)).astype(np.float32)  # (5, 6, 3, K)
    labels = rng.integers(0, 4, size=(5, 6, 3))
    class_first = np.moveaxis(probs, -1, 0)  # (K, 5, 6, 3)
    table = probs.reshape(-1, 4)
    for fn in (compute_ece, compute_nll, compute_brier):
        assert fn(class_first, labels) == pytest.approx(fn(table, labels.reshape(-1)))
    assert compute_classwise_ece(class_first, labels) == pytest.approx(
        compute_classwise_ece(table, labels.reshape(-1))
    )


def test_mask_selects_voxels_and_empty_mask_is_nan() -> None:
    p1, y1 = _two_class(0.9, 10, 6)
    p2, y2 = _two_class(0.6, 10, 10)
    probs, labels = np.concatenate([p1, p2]), np.concatenate([y1, y2])
    first = np.arange(20) < 10
    assert compute_ece(probs, labels, mask=first) == pytest.approx(0.3)
    assert compute_nll(probs, labels, mask=~first) == pytest.approx(-math.log(0.6))
    assert compute_brier(probs, labels, mask=first) == pytest.approx(compute_brier(p1, y1))
    # Masked-out voxels are not validated (e.g. NaN outside the region of interest).
    probs_nan = probs.copy()
    probs_nan[~first] = np.nan
    assert compute_ece(probs_nan, labels, mask=first) == pytest.approx(0.3)
    none = np.zeros(20, dtype=bool)
    for fn in (compute_ece, compute_nll, compute_brier):
        assert math.isnan(fn(probs, labels, mask=none))
    assert all(math.isnan(v) for v in compute_classwise_ece(probs, labels, mask=none))
    assert reliability_diagram(probs, labels, mask=none).counts.sum() == 0


def test_invalid_inputs() -> None:
    probs = np.full((3, 4, 4), 1 / 3)
    labels = np.zeros((4, 4), dtype=int)
    with pytest.raises(ValueError, match="labels of shape"):
        compute_ece(probs, np.zeros((4, 5), dtype=int))
    with pytest.raises(ValueError, match="sum to 1"):
        compute_ece(probs * 0.9, labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_nll(np.array([[1.5, -0.5], [0.5, 0.5]]), np.zeros(2, dtype=int))  # sums to 1, out of range
    with pytest.raises(ValueError, match="lie in"):
        compute_brier(probs, labels + 3)
    with pytest.raises(ValueError, match="integer"):
        compute_ece(probs, labels + 0.5)
    with pytest.raises(ValueError, match="n_bins"):
        compute_ece(probs, labels, n_bins=0)
    with pytest.raises(ValueError, match="mask shape"):
        compute_ece(probs, labels, mask=np.ones(16, dtype=bool))
    with pytest.raises(ValueError, match="expected probabilities"):
        compute_ece(np.full((3, 4), 1 / 3), np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match="finite"):
        compute_ece(np.full((4, 2), np.nan), np.zeros(4, dtype=int))


def test_dataset_ece_pools_bins_not_case_values() -> None:
    # Case A over-confident (0.9 conf, 0.6 acc), case B under-confident in the same bin (0.9 conf,
    # 1.0 acc after adding right voxels): the case ECEs are 0.3 and 0.1 but pooled the bin is
    # 20 voxels of confidence 0.9 and 16 right, so the dataset ECE is |0.8 - 0.9| = 0.1.
    pa, ya = _two_class(0.9, 10, 6)
    pb, yb = _two_class(0.9, 10, 10)
    metric = ExpectedCalibrationError(n_bins=10)
    assert metric(pa, ya) == pytest.approx(0.3)
    assert metric(pb, yb) == pytest.approx(0.1)
    assert metric.values == pytest.approx([0.3, 0.1])
    assert metric.aggregate() == pytest.approx(0.1)
    assert metric.aggregate() == pytest.approx(
        compute_ece(np.concatenate([pa, pb]), np.concatenate([ya, yb]), 10)
    )
    diagram = metric.reliability_diagram()
    assert diagram.counts[8] == 20 and diagram.accuracy[8] == pytest.approx(0.8)
    metric.reset()
    assert math.isnan(metric.aggregate()) and metric.values == []


def test_cumulative_classes_equal_the_concatenated_dataset() -> None:
    rng = np.random.default_rng(3)
    cases = []
    for shape in [(8, 8), (5, 9), (4, 4)]:
        probs = np.moveaxis(rng.dirichlet(np.ones(3), size=shape), -1, 0)
        cases.append((probs, rng.integers(0, 3, size=shape)))
    all_probs = np.concatenate([p.reshape(3, -1) for p, _ in cases], axis=1).T
    all_labels = np.concatenate([y.reshape(-1) for _, y in cases])
    ece, cw, nll, brier = (
        ExpectedCalibrationError(8),
        ClasswiseExpectedCalibrationError(8),
        NegativeLogLikelihood(),
        BrierScore(),
    )
    for probs, labels in cases:
        assert cw(probs, labels) == pytest.approx(compute_classwise_ece(probs, labels, 8))
        assert nll(probs, labels) == pytest.approx(compute_nll(probs, labels))
        assert brier(probs, labels) == pytest.approx(compute_brier(probs, labels))
        ece(probs, labels)
    assert ece.aggregate() == pytest.approx(compute_ece(all_probs, all_labels, 8))
    assert cw.aggregate() == pytest.approx(compute_classwise_ece(all_probs, all_labels, 8))
    # Voxel-weighted: differs from the mean of the case means because the cases differ in size.
    assert nll.aggregate() == pytest.approx(compute_nll(all_probs, all_labels))
    assert nll.aggregate() != pytest.approx(float(np.mean(nll.values)))
    assert brier.aggregate() == pytest.approx(compute_brier(all_probs, all_labels))
    with pytest.raises(ValueError, match="classes"):
        cw(np.full((2, 3, 3), 0.5), np.zeros((3, 3), dtype=int))
    for metric in (cw, nll, brier):
        metric.reset()
        assert metric.values == []
    assert cw.aggregate() == [] and math.isnan(nll.aggregate()) and math.isnan(brier.aggregate())
