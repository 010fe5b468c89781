"""Error-detection AUROC/AUPRC, risk-coverage curves, AURC and E-AURC on inputs with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import rankdata

from uncol.metrics import (
    UncertaintyErrorMetric,
    compute_aurc,
    compute_eaurc,
    compute_error_detection_auprc,
    compute_error_detection_auroc,
    compute_oracle_aurc,
    compute_uncertainty_error_scores,
    risk_coverage_curve,
)


def _aurc_of_order(errors_in_order: np.ndarray) -> float:
    """AURC of one fixed order of voxels (most certain first): the mean of the N selective risks."""
    k = np.arange(1, errors_in_order.size + 1)
    return float(np.mean(np.cumsum(errors_in_order) / k))


def test_tiny_risk_coverage_curve_by_hand() -> None:
    u = np.array([0.4, 0.1, 0.3, 0.2])
    e = np.array([True, False, False, True])
    curve = risk_coverage_curve(u, e)
    # Kept in order 0.1 (right), 0.2 (wrong), 0.3 (right), 0.4 (wrong).
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 1 / 2, 1 / 3, 1 / 2])
    np.testing.assert_allclose(curve.thresholds, [0.1, 0.2, 0.3, 0.4])
    assert compute_aurc(u, e) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    # Oracle (both right voxels first): risks 0, 0, 1/3, 1/2.
    assert compute_oracle_aurc(4, 2) == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert compute_eaurc(u, e) == pytest.approx(1 / 3 - 5 / 24)
    # Wrong voxels at 0.2 and 0.4, right at 0.1 and 0.3: 3 of the 4 pairs are ordered correctly.
    assert compute_error_detection_auroc(u, e) == pytest.approx(0.75)
    # Thresholds from the top: 0.4 -> P 1, R 1/2; 0.3 -> P 1/2; 0.2 -> P 2/3, R 1.
    assert compute_error_detection_auprc(u, e) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_oracle_aurc_closed_form_matches_the_sum() -> None:
    for n, m in [(1, 0), (1, 1), (10, 0), (10, 10), (10, 3), (997, 41), (5000, 4999)]:
        oracle_order = np.r_[np.zeros(n - m, dtype=bool), np.ones(m, dtype=bool)]
        assert compute_oracle_aurc(n, m) == pytest.approx(_aurc_of_order(oracle_order), abs=1e-12)
    assert math.isnan(compute_oracle_aurc(0, 0))
    with pytest.raises(ValueError, match="n_errors"):
        compute_oracle_aurc(3, 4)


def _errors(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return rng.random(n) < rate


def test_oracle_uncertainty() -> None:
    # Every wrong voxel more uncertain than every right one (ties inside each side are allowed).
    rng = np.random.default_rng(0)
    e = _errors(rng, 5000, 0.1)
    u = np.where(e, 1.0 + rng.random(e.size), rng.integers(0, 3, e.size) / 4)
    assert compute_error_detection_auroc(u, e) == 1.0
    assert compute_error_detection_auprc(u, e) == pytest.approx(1.0, abs=1e-12)
    assert compute_eaurc(u, e) == pytest.approx(0.0, abs=1e-12)
    assert compute_aurc(u, e) == pytest.approx(compute_oracle_aurc(e.size, int(e.sum())), abs=1e-12)
    # The oracle AURC is also what the uncertainty "1 if wrong else 0" gets: one tie group per side.
    assert compute_eaurc(e.astype(float), e) == pytest.approx(0.0, abs=1e-12)


def test_inverted_uncertainty() -> None:
    rng = np.random.default_rng(1)
    e = _errors(rng, 2000, 0.3)
    u = np.where(e, rng.random(e.size), 2.0 + rng.random(e.size))  # wrong voxels the *most* certain
    assert compute_error_detection_auroc(u, e) == 0.0
    # The worst ordering: all errors first, so the AURC is the largest possible for these errors.
    assert compute_aurc(u, e) == pytest.approx(_aurc_of_order(np.sort(e)[::-1]))
    assert compute_eaurc(u, e) > 0.5


def test_random_uncertainty() -> None:
    # Uncertainty independent of the errors. Under this null the AUROC has mean 1/2 and standard
    # deviation sqrt((n1 + n0 + 1) / (12 n1 n0)) (Mann-Whitney); we allow 4 of them. AURC and AP are
    # then about the error rate (every coverage has the overall risk in expectation).
    rng = np.random.default_rng(2)
    n, rate = 100_000, 0.2
    e = _errors(rng, n, rate)
    u = rng.random(n)
    n1, n0 = int(e.sum()), int((~e).sum())
    sd = math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
    scores = compute_uncertainty_error_scores(u, e)
    assert abs(scores.auroc - 0.5) < 4 * sd
    assert scores.auprc == pytest.approx(e.mean(), abs=0.01)
    assert scores.aurc == pytest.approx(e.mean(), abs=0.01)
    assert scores.eaurc > 0.1  # far from the oracle
    assert scores.error_rate == pytest.approx(e.mean())
    assert scores.n_voxels == scores.n_used == n and scores.n_errors == n1


def test_auroc_equals_average_rank_mann_whitney_and_brute_force() -> None:
    rng = np.random.default_rng(3)
    u = rng.integers(0, 6, 300).astype(float)  # many ties
    e = _errors(rng, 300, 0.35)
    n1, n0 = int(e.sum()), int((~e).sum())
    ranks = rankdata(u)  # average ranks for ties
    mann_whitney = (ranks[e].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    diff = u[e][:, None] - u[~e][None, :]
    pairs = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / (n1 * n0)
    assert compute_error_detection_auroc(u, e) == pytest.approx(mann_whitney)
    assert compute_error_detection_auroc(u, e) == pytest.approx(pairs)


def test_ties_do_not_depend_on_voxel_order() -> None:
    # u: one group of 3 at 0.0 with 1 error, one group of 2 at 1.0 with 1 error, one right voxel at 2.
    u = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0])
    e = np.array([True, False, False, False, True, False])
    curve = risk_coverage_curve(u, e)
    np.testing.assert_allclose(curve.coverage, [3 / 6, 5 / 6, 1.0])  # one point per tie group
    np.testing.assert_allclose(curve.risk, [1 / 3, 2 / 5, 2 / 6])
    # AURC is the mean over every order of the tied voxels.
    orders = []
    for a in itertools.permutations(e[:3]):
        for b in itertools.permutations(e[3:5]):
            orders.append(_aurc_of_order(np.r_[a, b, e[5:]]))
    assert compute_aurc(u, e) == pytest.approx(np.mean(orders))
    # Reordering the voxels changes nothing.
    perm = np.array([5, 3, 0, 4, 2, 1])
    for fn in (compute_aurc, compute_eaurc, compute_error_detection_auroc, compute_error_detection_auprc):
        assert fn(u[perm], e[perm]) == fn(u, e)
    # AP: thresholds 2 -> P 0, R 0; 1 -> P 1/3, R 1/2; 0 -> P 2/6, R 1.
    assert compute_error_detection_auprc(u, e) == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 6)


def test_all_tied() -> None:
    u = np.zeros(4)
    e = np.array([True, False, False, False])
    assert compute_error_detection_auroc(u, e) == 0.5
    assert compute_error_detection_auprc(u, e) == pytest.approx(0.25)
    all_orders = [_aurc_of_order(np.array(p)) for p in itertools.permutations(e)]
    assert compute_aurc(u, e) == pytest.approx(np.mean(all_orders))
    curve = risk_coverage_curve(u, e)
    assert curve.coverage.tolist() == [1.0] and curve.risk.tolist() == [0.25]


def test_large_tie_groups_match_the_expectation() -> None:
    # Big groups exercise the harmonic-number (digamma) form: compare with the per-voxel sum of the
    # expected risks, errors spread evenly through each group.
    rng = np.random.default_rng(4)
    u = rng.integers(0, 4, 20_000).astype(float)
    e = _errors(rng, u.size, 0.15) | (u == 3) & (rng.random(u.size) < 0.5)
    order = np.argsort(u, kind="stable")
    us, es = u[order], e[order].astype(float)
    expected_errors = np.zeros(u.size)
    start = 0
    for value in np.unique(us):
        size = int(np.sum(us == value))
        before = es[:start].sum()
        expected_errors[start : start + size] = (
            before + np.arange(1, size + 1) * es[start : start + size].mean()
        )
        start += size
    reference = float(np.mean(expected_errors / np.arange(1, u.size + 1)))
    assert compute_aurc(u, e) == pytest.approx(reference, rel=1e-10)


def test_undefined_values_and_mask() -> None:
    u = np.array([[0.1, 0.5], [0.3, 0.9]])
    e = np.array([[False, True], [False, False]])
    assert math.isnan(compute_error_detection_auroc(u, np.zeros_like(e)))  # no wrong voxel
    assert math.isnan(compute_error_detection_auroc(u, np.ones_like(e)))  # no right voxel
    assert math.isnan(compute_error_detection_auprc(u, np.zeros_like(e)))
    assert compute_error_detection_auprc(u, np.ones_like(e)) == 1.0
    assert compute_aurc(u, np.zeros_like(e)) == 0.0 and compute_eaurc(u, np.zeros_like(e)) == 0.0
    none = np.zeros_like(e)
    assert math.isnan(compute_aurc(u, e, mask=none)) and math.isnan(compute_eaurc(u, e, mask=none))
    assert risk_coverage_curve(u, e, mask=none).coverage.size == 0
    # The mask drops the 0.9 voxel: the wrong one becomes the most uncertain, AUROC 1.
    assert compute_error_detection_auroc(u, e) == pytest.approx(2 / 3)
    assert compute_error_detection_auroc(u, e, mask=u < 0.8) == 1.0
    assert compute_error_detection_auroc(u, e.astype(np.uint8)) == pytest.approx(2 / 3)  # 0/1 errors


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="differs"):
        compute_aurc(np.zeros(3), np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="finite"):
        compute_aurc(np.array([0.0, np.nan]), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        compute_error_detection_auroc(np.zeros(2), np.array([0, 2]))
    with pytest.raises(ValueError, match="mask shape"):
        compute_error_detection_auprc(np.zeros((2, 2)), np.zeros((2, 2), dtype=bool), mask=np.ones(4))
    with pytest.raises(ValueError, match="max_voxels"):
        UncertaintyErrorMetric(max_voxels=0)


def _cases(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for shape in [(20, 30), (15, 15), (40, 10)]:
        e = rng.random(shape) < 0.2
        u = np.where(e, rng.random(shape) + 0.3, rng.random(shape))
        out.append((u, e))
    return out


def test_accumulator_is_exact_below_the_limit() -> None:
    cases = _cases(np.random.default_rng(5))
    metric = UncertaintyErrorMetric(max_voxels=10_000)
    for u, e in cases:
        assert metric(u, e) == compute_uncertainty_error_scores(u, e)
    all_u = np.concatenate([u.ravel() for u, _ in cases])
    all_e = np.concatenate([e.ravel() for _, e in cases])
    assert metric.exact
    dataset = metric.aggregate()
    assert dataset == compute_uncertainty_error_scores(all_u, all_e)
    curve, reference = metric.risk_coverage_curve(), risk_coverage_curve(all_u, all_e)
    np.testing.assert_array_equal(curve.coverage, reference.coverage)
    np.testing.assert_array_equal(curve.risk, reference.risk)
    assert len(metric.values) == 3
    metric.reset()
    assert metric.values == [] and metric.n_voxels == 0 and math.isnan(metric.aggregate().aurc)


def test_accumulator_subsample_is_uniform_and_bounded() -> None:
    rng = np.random.default_rng(6)
    limit = 20_000
    metric = UncertaintyErrorMetric(max_voxels=limit, seed=0)
    # Case 1: 30k voxels with uncertainty 0; case 2: 90k with uncertainty 1 (all wrong), then
    # 30k more with uncertainty 2. A uniform sample keeps them in proportion 1 : 3 : 1.
    metric.update(np.zeros(30_000), np.zeros(30_000, dtype=bool))
    metric.update(np.ones(90_000), np.ones(90_000, dtype=bool))
    metric.update(np.full(30_000, 2.0), np.zeros(30_000, dtype=bool))
    assert not metric.exact
    scores = metric.aggregate()
    assert scores.n_used == limit and scores.n_voxels == 150_000 and scores.n_errors == 90_000
    assert scores.error_rate == 0.6  # exact, from the counts
    curve = metric.risk_coverage_curve()
    # Sample fractions: binomial sd <= sqrt(0.25 / 20000) = 0.0035; allow 4 sd.
    np.testing.assert_allclose(np.diff(np.r_[0.0, curve.coverage]), [0.2, 0.6, 0.2], atol=0.014)
    # Oracle-like uncertainty on the sample still has E-AURC computed against the same sample.
    again = UncertaintyErrorMetric(max_voxels=limit, seed=0)
    for _, e in _cases(rng) * 50:
        again.update(e.astype(float), e)
    assert again.aggregate().eaurc == pytest.approx(0.0, abs=1e-12)


def test_accumulator_estimate_is_close_and_reproducible() -> None:
    rng = np.random.default_rng(7)
    cases = [_cases(rng)[i % 3] for i in range(30)]
    all_u = np.concatenate([u.ravel() for u, _ in cases])
    all_e = np.concatenate([e.ravel() for _, e in cases])
    exact = compute_uncertainty_error_scores(all_u, all_e)

    def run(seed: int) -> tuple[float, float]:
        metric = UncertaintyErrorMetric(max_voxels=5_000, seed=seed)
        for u, e in cases:
            metric.update(u, e)
        s = metric.aggregate()
        return s.auroc, s.aurc

    auroc, aurc = run(0)
    assert run(0) == (auroc, aurc)
    assert run(1) != (auroc, aurc)
    # About 1000 sampled wrong voxels: the AUROC's standard error is below 0.01.
    assert auroc == pytest.approx(exact.auroc, abs=0.03)
    assert aurc == pytest.approx(exact.aurc, abs=0.03)
