from __future__ import annotations

import math

import pytest
import torch

from uncol.methods.ramps import gaussian_rampup
from uncol.methods.uncertainty import entropy
from uncol.methods.uncol.pseudo_labels import entropy_threshold, fuse_pseudo_labels


def probs(*rows: list[float]) -> torch.Tensor:
    """(1, K, N) probability map from per-pixel class distributions."""
    return torch.tensor(rows, dtype=torch.float64).T.unsqueeze(0)


def test_rampup_and_threshold_schedule():
    assert gaussian_rampup(0.0) == pytest.approx(math.exp(-5))
    assert gaussian_rampup(1.0) == 1.0 and gaussian_rampup(2.0) == 1.0
    values = [gaussian_rampup(t / 10) for t in range(11)]
    assert values == sorted(values)
    k = 4
    # UA-MT's reference code: ln 2 nats whatever K; lnK: a fraction of the largest entropy.
    assert entropy_threshold(0.0, k) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert entropy_threshold(0.0, k, base="lnK") == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(k))
    assert entropy_threshold(1.0, k, base="lnK") == pytest.approx(math.log(k))
    for base in ("ln2", "lnK"):
        ts = [entropy_threshold(t / 10, k, base=base) for t in range(11)]
        assert ts == sorted(ts)  # the filter relaxes over training


def test_entropy_values():
    p = probs([1.0, 0.0], [0.5, 0.5])
    h = entropy(p)
    assert h[0, 0] == pytest.approx(0.0, abs=1e-6) and h[0, 1] == pytest.approx(math.log(2))


def test_fusion_rule_both_one_none_confident():
    # pixel 0: both confident; 1: only generalized; 2: only specialized; 3: neither
    pg = probs([0.95, 0.05], [0.95, 0.05], [0.5, 0.5], [0.5, 0.5])
    ps = probs([0.15, 0.85], [0.5, 0.5], [0.02, 0.98], [0.55, 0.45])
    thr = 0.5
    out = fuse_pseudo_labels(pg, ps, thr)
    assert out.mask.tolist() == [[True, True, True, False]]
    assert out.source.tolist() == [[3, 1, 2, 0]]
    hg, hs = entropy(pg)[0, 0], entropy(ps)[0, 0]
    w = hs / (hg + hs)
    expected0 = w * pg[0, :, 0] + (1 - w) * ps[0, :, 0]
    torch.testing.assert_close(out.probs[0, :, 0], expected0)
    torch.testing.assert_close(out.probs[0, :, 1], pg[0, :, 1])
    torch.testing.assert_close(out.probs[0, :, 2], ps[0, :, 2])
    assert torch.all(out.probs[0, :, 3] == 0)
    assert out.labels.tolist() == [[int(expected0.argmax()), 0, 1, 0]]
    f = out.fractions()
    assert f == {"frac_none": 0.25, "frac_general": 0.25, "frac_special": 0.25, "frac_both": 0.25}


def test_fusion_ties_weight_equally():
    pg = probs([0.9, 0.1], [1.0, 0.0])
    ps = probs([0.1, 0.9], [0.0, 1.0])  # same entropies as pg, opposite classes
    out = fuse_pseudo_labels(pg, ps, threshold=0.6)
    torch.testing.assert_close(out.probs[0, :, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(out.probs[0, :, 1], torch.tensor([0.5, 0.5], dtype=torch.float64))  # both zero entropy


def test_lower_entropy_teacher_dominates_and_shapes_checked():
    pg = probs([0.99, 0.01])
    ps = probs([0.3, 0.7])
    out = fuse_pseudo_labels(pg, ps, threshold=1.0)
    assert out.labels.item() == 0  # the much more certain generalized teacher wins
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_pseudo_labels(pg, probs([0.5, 0.5], [0.5, 0.5]), 1.0)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_a_uniform_teacher_is_never_confident(k):
    # Uniform maps mean "no opinion" (nothing prompted, a slice not seen, a class-gated pixel); their
    # entropy equals ln K up to float rounding, which must not count as below the top threshold ln K.
    uniform = torch.full((1, k, 4, 4), 1.0 / k)
    sharp = torch.zeros(1, k, 4, 4)
    sharp[:, 1] = 0.9
    sharp[:, 0] = 0.1
    for threshold in (math.log(k), 0.75 * math.log(k)):
        out = fuse_pseudo_labels(uniform, sharp, threshold)
        assert out.fractions()["frac_general"] == 0 and out.fractions()["frac_both"] == 0
        assert out.fractions()["frac_special"] == 1


def test_class_gate_leaves_the_generalized_teacher_no_vote_on_failed_classes():
    from uncol.methods.uncol.pseudo_labels import gate_classes

    p_g = probs([0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1])
    p_s = probs([0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8])
    voting = torch.tensor([True, True, False])  # class 2 failed on the labeled data
    gated = gate_classes(p_g, p_s, voting)
    assert torch.equal(gated[..., 0], p_g[..., 0])  # both name voting classes: kept
    assert torch.allclose(gated[..., 1], torch.full((1, 3), 1 / 3, dtype=gated.dtype))  # it names class 2
    assert torch.allclose(gated[..., 2], torch.full((1, 3), 1 / 3, dtype=gated.dtype))  # the EMA names class 2
    fused = fuse_pseudo_labels(gated, p_s, math.log(3))
    assert fused.source.tolist() == [[3, 2, 2]]
