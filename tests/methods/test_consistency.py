"""Consistency losses, UA-MT's uncertainty gate and the teacher's layer modes (pure pieces, no training)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uncol.methods.consistency import (
    gated_softmax_mse,
    predictive_entropy,
    rampup,
    softmax_mse,
    threshold_scale,
    uncertainty_threshold,
)
from uncol.methods.layer_modes import has_dropout, layers_in_train_mode


def probs(*pixels: tuple[float, ...]) -> torch.Tensor:
    """A ``(1, K, N)`` probability map from per-pixel class probabilities."""
    return torch.tensor(pixels, dtype=torch.float32).T.unsqueeze(0)


def test_softmax_mse_is_zero_for_equal_maps_and_the_mean_squared_difference():
    p = torch.softmax(torch.randn(2, 3, 4, 4), dim=1)
    assert softmax_mse(p, p.clone()).item() == 0.0
    # (1 - 0.5)^2 and (0 - 0.5)^2 on one pixel, 0 on the other: 0.5 / 4 elements.
    a, b = probs((1.0, 0.0), (0.3, 0.7)), probs((0.5, 0.5), (0.3, 0.7))
    assert softmax_mse(a, b).item() == pytest.approx(0.125)


def test_gated_mse_known_value_and_normalisation():
    student = probs((1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    teacher = probs((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0))
    mask = torch.tensor([[True, False, True]])
    # confident pixels: squared differences 1 + 1 + 0 (pixel 0) and 0 (pixel 2); divided by 2 x 2 pixels
    assert gated_softmax_mse(student, teacher, mask).item() == pytest.approx(2.0 / 4.0)
    assert gated_softmax_mse(student, student.clone(), mask).item() == 0.0
    # Two classes, every pixel confident: the plain mean over classes and pixels, as Mean Teacher's.
    s2 = torch.softmax(torch.randn(2, 2, 5, 5), dim=1)
    t2 = torch.softmax(torch.randn(2, 2, 5, 5), dim=1)
    full = torch.ones(2, 5, 5, dtype=torch.bool)
    assert gated_softmax_mse(s2, t2, full).item() == pytest.approx(softmax_mse(s2, t2).item(), rel=1e-5)


def test_gated_mse_sends_gradients_to_the_student_only_and_survives_an_empty_mask():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    teacher = torch.softmax(torch.randn(1, 3, 4), dim=1).requires_grad_(True)
    loss = gated_softmax_mse(torch.softmax(logits, dim=1), teacher, torch.tensor([[True, True, False, False]]))
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert teacher.grad is None
    empty = gated_softmax_mse(torch.softmax(logits, dim=1), teacher, torch.zeros(1, 4, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad


def test_threshold_schedule_with_ln2_and_lnk_bases():
    ln2, ln4 = math.log(2), math.log(4)
    start_ramp = rampup(0, 100)  # the Gaussian ramp starts at exp(-5), not 0
    assert start_ramp == pytest.approx(math.exp(-5))
    assert rampup(100, 100) == 1.0 and rampup(250, 100) == 1.0 and rampup(3, 0) == 1.0
    assert uncertainty_threshold(start_ramp, 4) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln2)
    assert uncertainty_threshold(1.0, 4) == pytest.approx(ln2)  # ln 2 whatever K, as the authors' code
    assert uncertainty_threshold(0.0, 4, base="lnK") == pytest.approx(0.75 * ln4)
    assert uncertainty_threshold(1.0, 4, base="lnK") == pytest.approx(ln4)
    assert uncertainty_threshold(0.5, 3, start=0.5, end=0.9, base="lnK") == pytest.approx(0.7 * math.log(3))
    assert threshold_scale("ln2", 2) == threshold_scale("lnK", 2)
    with pytest.raises(ValueError):
        threshold_scale("log10", 4)  # type: ignore[arg-type]


def test_predictive_entropy_and_the_confident_mask_of_a_known_map():
    # T = 2 passes over 3 pixels: certain, split between the passes (mean 0.5/0.5), and steadily 0.9/0.1.
    samples = torch.stack([probs((1.0, 0.0), (1.0, 0.0), (0.9, 0.1)), probs((1.0, 0.0), (0.0, 1.0), (0.9, 0.1))])
    h = predictive_entropy(samples)
    h_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert h.shape == (1, 3)
    assert h[0].tolist() == pytest.approx([0.0, math.log(2), h_09], abs=1e-6)
    mask = h < uncertainty_threshold(0.0, 2)  # 0.75 ln 2 = 0.52 nats
    assert mask[0].tolist() == [True, False, True]
    assert (h < uncertainty_threshold(1.0, 2))[0].tolist() == [True, False, True]  # ln 2 itself is not below ln 2


def test_layers_in_train_mode_switches_only_the_chosen_kinds_and_restores_them():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Conv2d(2, 2, 1)).eval()
    assert has_dropout(net) and not has_dropout(nn.Sequential(nn.Dropout(0.0), nn.Linear(2, 2)))
    with layers_in_train_mode(net, norm=True, dropout=False):
        assert net[1].training and not net[2].training and not net[0].training
    with layers_in_train_mode(net, norm=False, dropout=True):
        assert not net[1].training and net[2].training
    assert not any(m.training for m in net.modules())
    x = torch.randn(4, 1, 8, 8) * 3 + 2
    with torch.no_grad():
        eval_out = net(x)
        with layers_in_train_mode(net, norm=True, dropout=False):
            batch_stats_out = net(x)
    assert not torch.allclose(eval_out, batch_stats_out)  # batch statistics, not the running ones
