"""Properties of UnCoL's pseudo-label fusion rule on random teacher outputs (hypothesis).

test_pseudo_labels.py checks the rule on hand-picked pixels; these check, for any pair of probability
maps and threshold: a pixel is supervised iff at least one teacher is confident (its entropy, computed
here independently, is below the threshold); the fused probabilities are a distribution there and zero
elsewhere, a convex combination of the two teachers' that leans towards the less uncertain one; a
single confident teacher is taken as it is; the hard labels are their argmax; swapping the teachers
swaps source codes 1 and 2 and changes nothing else, since the weights are symmetric; and raising the
threshold never shrinks the supervised region.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import xlogy

from uncol.methods.uncol.pseudo_labels import PseudoLabels, fuse_pseudo_labels

SETTINGS = settings(max_examples=50, deadline=None, database=None)
# Entropies this close to the threshold are left out: float rounding may put them on either side.
MARGIN = 1e-6


@st.composite
def distributions(draw: st.DrawFn, k: int, n: int) -> np.ndarray:
    """``(k, n)`` class distributions: softmax of random logits, with some one-hot and uniform pixels."""
    logits = np.array([[draw(st.floats(-8.0, 8.0)) for _ in range(n)] for _ in range(k)])
    probs = np.exp(logits - logits.max(axis=0))
    probs /= probs.sum(axis=0)
    for j in range(n):
        kind = draw(st.sampled_from(["soft", "soft", "soft", "one-hot", "uniform"]))
        if kind == "one-hot":
            probs[:, j] = np.eye(k)[draw(st.integers(0, k - 1))]
        elif kind == "uniform":
            probs[:, j] = 1.0 / k
    return probs


@st.composite
def teacher_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Probabilities ``(1, K, N)`` of the generalized and the specialized teacher, and a threshold."""
    k, n = draw(st.integers(2, 4)), draw(st.integers(1, 12))
    general, special = draw(distributions(k, n)), draw(distributions(k, n))
    threshold = draw(st.floats(0.01, 1.0)) * math.log(k)
    return torch.from_numpy(general)[None], torch.from_numpy(special)[None], threshold


def entropy(p: torch.Tensor) -> np.ndarray:
    """Shannon entropy over the class axis, computed without uncol's own helper."""
    return -xlogy(p.numpy(), p.numpy()).sum(axis=1)


def confident(p: torch.Tensor, threshold: float) -> np.ndarray:
    """Below the threshold, and never uniform (a uniform map is no opinion, even at threshold ln K)."""
    h = entropy(p)
    k = p.shape[1]
    limit = min(threshold, math.log(k) * (1 - 1e-5))
    assume(np.all(np.abs(h - limit) > MARGIN))
    return h < limit


def fuse(pg: torch.Tensor, ps: torch.Tensor, threshold: float) -> PseudoLabels:
    return fuse_pseudo_labels(pg, ps, threshold)


@SETTINGS
@given(teacher_pairs())
def test_supervised_where_a_teacher_is_confident_and_a_distribution_there(pair: tuple[torch.Tensor, torch.Tensor, float]) -> None:
    pg, ps, threshold = pair
    conf_g, conf_s = confident(pg, threshold), confident(ps, threshold)
    out = fuse(pg, ps, threshold)
    mask = out.mask.numpy()
    assert np.array_equal(mask, conf_g | conf_s)
    assert np.array_equal(out.source.numpy(), conf_g.astype(np.int8) + 2 * conf_s.astype(np.int8))
    probs = out.probs.numpy()
    sums = probs.sum(axis=1)
    np.testing.assert_allclose(sums[mask], 1.0, atol=1e-9)
    assert np.all(probs[:, :, ~mask[0]] == 0.0)
    assert np.all(probs >= 0.0)
    labels = out.labels.numpy()
    assert np.all(labels[~mask] == 0)
    assert np.array_equal(labels[mask], probs.argmax(axis=1)[mask])


@SETTINGS
@given(teacher_pairs())
def test_fused_probabilities_combine_the_teachers(pair: tuple[torch.Tensor, torch.Tensor, float]) -> None:
    pg, ps, threshold = pair
    conf_g, conf_s = confident(pg, threshold)[0], confident(ps, threshold)[0]
    out = fuse(pg, ps, threshold).probs[0].numpy()
    g, s = pg[0].numpy(), ps[0].numpy()
    h_g, h_s = entropy(pg)[0], entropy(ps)[0]
    for j in range(g.shape[1]):
        if conf_g[j] and not conf_s[j]:
            np.testing.assert_allclose(out[:, j], g[:, j], rtol=0, atol=1e-12)  # the one confident teacher
        elif conf_s[j] and not conf_g[j]:
            np.testing.assert_allclose(out[:, j], s[:, j], rtol=0, atol=1e-12)
        elif conf_g[j] and conf_s[j]:
            lo, hi = np.minimum(g[:, j], s[:, j]), np.maximum(g[:, j], s[:, j])
            assert np.all(out[:, j] >= lo - 1e-12) and np.all(out[:, j] <= hi + 1e-12)  # convex combination
            # The less uncertain teacher weighs at least half: the fused map is at least as close to it.
            near_g, near_s = np.abs(out[:, j] - g[:, j]).sum(), np.abs(out[:, j] - s[:, j]).sum()
            if h_g[j] < h_s[j] - MARGIN:
                assert near_g <= near_s + 1e-12
            elif h_s[j] < h_g[j] - MARGIN:
                assert near_s <= near_g + 1e-12


@SETTINGS
@given(teacher_pairs())
def test_swapping_the_teachers_swaps_only_the_source_codes(pair: tuple[torch.Tensor, torch.Tensor, float]) -> None:
    pg, ps, threshold = pair
    confident(pg, threshold), confident(ps, threshold)  # keep clear of the threshold, as above
    a, b = fuse(pg, ps, threshold), fuse(ps, pg, threshold)
    swapped = {0: 0, 1: 2, 2: 1, 3: 3}
    assert [swapped[int(v)] for v in a.source.flatten()] == [int(v) for v in b.source.flatten()]
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=1e-12)
    # Labels are equal wherever the fused argmax is not a tie that rounding may break either way.
    top2 = torch.topk(a.probs, 2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-9
    assert torch.equal(a.labels[clear], b.labels[clear])


@SETTINGS
@given(teacher_pairs(), st.floats(0.0, 1.0))
def test_a_higher_threshold_never_shrinks_the_supervised_region(
    pair: tuple[torch.Tensor, torch.Tensor, float], more: float
) -> None:
    pg, ps, threshold = pair
    higher = threshold + more * (math.log(pg.shape[1]) - threshold)
    strict, relaxed = fuse(pg, ps, threshold).mask, fuse(pg, ps, higher).mask
    assert torch.all(relaxed | ~strict)  # strict implies relaxed
