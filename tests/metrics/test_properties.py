"""Properties of the segmentation metrics on random masks (hypothesis).

Example-based tests (test_overlap.py, test_surface.py) pin values on hand-made shapes; these check
what must hold for *every* pair of masks: Dice and Jaccard are symmetric, lie in [0, 1] and are tied by
J = D / (2 - D); no metric changes when both masks are padded with background; HD95 and ASD scale
linearly with a uniform change of the voxel size; the distances are symmetric where their definition
is (HD95 in both conventions, the standard ASD) and the medpy ASD is the directed mean it claims to be.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from uncol.metrics import (
    compute_dice,
    compute_directed_surface_distances,
    compute_jaccard,
    compute_surface_metrics,
)

# Small arrays and few examples: the whole file runs in seconds. No example database: nothing is
# written into the repository (a failure prints the example that reproduces it).
SETTINGS = settings(max_examples=50, deadline=None, database=None)

shapes = st.one_of(
    st.tuples(st.integers(2, 9), st.integers(2, 9)),
    st.tuples(st.integers(2, 5), st.integers(2, 5), st.integers(2, 5)),
)


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks of one random 2D or 3D shape."""
    shape = draw(shapes)
    return draw(arrays(bool, shape)), draw(arrays(bool, shape))


@st.composite
def spacings(draw: st.DrawFn, ndim: int) -> tuple[float, ...]:
    return tuple(draw(st.floats(0.25, 4.0)) for _ in range(ndim))


def same(a: float, b: float, rel: float = 1e-9) -> bool:
    """Equal, NaN included (both undefined counts as equal)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


@SETTINGS
@given(mask_pairs())
def test_overlap_is_symmetric_bounded_and_dice_and_jaccard_agree(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    dice, jaccard = compute_dice(a, b), compute_jaccard(a, b)
    assert same(dice, compute_dice(b, a)) and same(jaccard, compute_jaccard(b, a))
    if not a.any() and not b.any():
        assert math.isnan(dice) and math.isnan(jaccard)  # undefined, never silently 0 or 1
        return
    assert 0.0 <= jaccard <= dice <= 1.0
    assert same(jaccard, dice / (2.0 - dice))
    assert (dice == 1.0) == np.array_equal(a, b)


@SETTINGS
@given(mask_pairs(), st.data())
def test_metrics_ignore_background_padding(pair: tuple[np.ndarray, np.ndarray], data: st.DataObject) -> None:
    a, b = pair
    widths = [(data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(a.ndim)]
    pa, pb = np.pad(a, widths), np.pad(b, widths)
    spacing = data.draw(spacings(a.ndim))
    assert same(compute_dice(a, b), compute_dice(pa, pb))
    assert same(compute_jaccard(a, b), compute_jaccard(pa, pb))
    for convention in ("standard", "medpy"):
        before = compute_surface_metrics(a, b, spacing, convention)
        after = compute_surface_metrics(pa, pb, spacing, convention)
        assert same(before[0], after[0]) and same(before[1], after[1]), (convention, before, after)


@SETTINGS
@given(mask_pairs(), st.data())
def test_distances_scale_linearly_with_a_uniform_spacing(pair: tuple[np.ndarray, np.ndarray], data: st.DataObject) -> None:
    a, b = pair
    assume(a.any() and b.any())
    spacing = data.draw(spacings(a.ndim))
    factor = data.draw(st.floats(0.1, 10.0))
    hd, asd = compute_surface_metrics(a, b, spacing)
    hd_scaled, asd_scaled = compute_surface_metrics(a, b, tuple(factor * s for s in spacing))
    assert math.isclose(hd_scaled, factor * hd, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(asd_scaled, factor * asd, rel_tol=1e-9, abs_tol=1e-12)
    # The medpy convention works in voxels, as the published code calls it: the spacing changes nothing.
    assert compute_surface_metrics(a, b, spacing, "medpy") == compute_surface_metrics(a, b, None, "medpy")


@SETTINGS
@given(mask_pairs(), st.data())
def test_distance_definitions_are_symmetric_where_they_claim_to_be(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    a, b = pair
    spacing = data.draw(spacings(a.ndim))
    hd_ab, asd_ab = compute_surface_metrics(a, b, spacing)
    hd_ba, asd_ba = compute_surface_metrics(b, a, spacing)
    assert same(hd_ab, hd_ba) and same(asd_ab, asd_ba)
    m_ab, m_ba = compute_surface_metrics(a, b, None, "medpy"), compute_surface_metrics(b, a, None, "medpy")
    assert same(m_ab[0], m_ba[0])  # pooled percentile: symmetric
    if not (a.any() and b.any()):
        assert all(math.isnan(v) for v in (hd_ab, asd_ab, *m_ab))  # undefined when either is empty
        return
    # medpy's ASD is directed: the mean distance from the prediction's surface to the reference's.
    assert same(m_ab[1], float(compute_directed_surface_distances(a, b).mean()))
    d_ab = compute_directed_surface_distances(a, b, spacing)
    d_ba = compute_directed_surface_distances(b, a, spacing)
    assert 0.0 <= hd_ab <= max(d_ab.max(), d_ba.max()) + 1e-12  # a percentile of the Hausdorff distances
    assert same(asd_ab, float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size)))
    if np.array_equal(a, b):
        assert hd_ab == 0.0 and asd_ab == 0.0
