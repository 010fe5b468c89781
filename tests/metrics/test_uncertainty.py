"""Uncertainty scores from probabilities and MC-dropout samples, and the MC-dropout helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from uncol.errors import UncolError
from uncol.metrics import (
    NoDropoutError,
    compute_energy,
    compute_entropy,
    compute_max_softmax_uncertainty,
    compute_mc_variance,
    compute_mutual_information,
    compute_predictive_entropy,
    compute_uncertainty_maps,
    dropout_layers,
    has_dropout,
    mc_dropout_mode,
    mc_dropout_probabilities,
)


def test_entropy_and_max_softmax_known_values() -> None:
    # Columns: one-hot, uniform over 3, (0.5, 0.25, 0.25).
    probs = np.array([[1.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.25], [0.0, 1 / 3, 0.25]])
    np.testing.assert_allclose(compute_entropy(probs), [0.0, math.log(3), 1.5 * math.log(2)])
    np.testing.assert_allclose(compute_max_softmax_uncertainty(probs), [0.0, 2 / 3, 0.5])
    # The class axis can be chosen: an (N, K) table gives the same values.
    np.testing.assert_allclose(compute_entropy(probs.T, class_axis=1), compute_entropy(probs))
    volume = np.broadcast_to(probs[:, :, None, None], (3, 3, 2, 2))  # (K, *spatial)
    assert compute_entropy(volume).shape == (3, 2, 2)


def test_energy() -> None:
    logits = np.array([[0.0, 10.0, 2.0], [0.0, -10.0, 2.0]])  # (K=2, 3 voxels)
    expected = [-math.log(2), -(10 + math.log1p(math.exp(-20))), -(2 + math.log(2))]
    np.testing.assert_allclose(compute_energy(logits), expected)
    np.testing.assert_allclose(
        compute_energy(logits, temperature=2.0), -2 * np.log(np.exp(logits / 2).sum(0))
    )
    assert compute_energy(logits)[1] < compute_energy(logits)[0]  # a confident voxel has lower energy
    with pytest.raises(ValueError, match="temperature"):
        compute_energy(logits, temperature=0.0)


def test_mc_scores_when_passes_agree_and_disagree() -> None:
    # Voxel 0: every pass says (0.7, 0.3). Voxel 1: passes alternate one-hot (1, 0) and (0, 1).
    samples = np.zeros((4, 2, 2))
    samples[:, :, 0] = [0.7, 0.3]
    samples[0::2, :, 1] = [1.0, 0.0]
    samples[1::2, :, 1] = [0.0, 1.0]
    h = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    np.testing.assert_allclose(compute_predictive_entropy(samples), [h, math.log(2)])
    np.testing.assert_allclose(compute_mc_variance(samples), [0.0, 0.25])  # var of {1, 0, 1, 0}
    # Agreeing passes: no epistemic part; disagreeing one-hot passes: all of ln 2 is epistemic.
    np.testing.assert_allclose(compute_mutual_information(samples), [0.0, math.log(2)], atol=1e-12)


def test_mutual_information_by_hand() -> None:
    # Two passes (0.9, 0.1) and (0.5, 0.5): mean (0.7, 0.3).
    samples = np.array([[[0.9], [0.1]], [[0.5], [0.5]]])

    def h(p: list[float]) -> float:
        return -sum(x * math.log(x) for x in p)

    expected = h([0.7, 0.3]) - (h([0.9, 0.1]) + h([0.5, 0.5])) / 2
    assert compute_mutual_information(samples)[0] == pytest.approx(expected)
    assert compute_mc_variance(samples)[0] == pytest.approx(0.04)  # both classes: var of {0.9, 0.5}


def test_uncertainty_maps() -> None:
    rng = np.random.default_rng(0)
    samples = np.moveaxis(rng.dirichlet(np.ones(3), size=(5, 4, 6)), -1, 1)  # (T, K, 4, 6)
    probs = samples.mean(axis=0)
    maps = compute_uncertainty_maps(probs)
    assert set(maps) == {"entropy", "max_softmax"}
    maps = compute_uncertainty_maps(probs, samples)
    assert set(maps) == {
        "entropy",
        "max_softmax",
        "mc_predictive_entropy",
        "mc_variance",
        "mc_mutual_information",
    }
    assert all(m.shape == (4, 6) for m in maps.values())
    np.testing.assert_allclose(maps["mc_predictive_entropy"], maps["entropy"])  # probs is the MC mean here
    assert np.all(maps["mc_mutual_information"] > 0)
    with pytest.raises(ValueError, match="do not match"):
        compute_uncertainty_maps(probs[:, :3], samples)
    with pytest.raises(ValueError, match=r"\(T, K, \*spatial\)"):
        compute_mc_variance(probs[0])


class _Net(nn.Module):
    """A tiny 2D segmentation network: conv, batch norm, ReLU, optional channel dropout, conv."""

    def __init__(self, p: float | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout2d(p) if p is not None else nn.Identity()
        self.head = nn.Conv2d(8, 3, 1)
        self.norm_modes: list[bool] = []
        self.norm.register_forward_hook(lambda m, i, o: self.norm_modes.append(m.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.norm(self.conv(x)))))


def _input() -> torch.Tensor:
    return torch.randn(2, 1, 6, 5, generator=torch.Generator().manual_seed(0))


def test_mc_dropout_with_dropout() -> None:
    torch.manual_seed(0)
    net = _Net(0.5)
    net.norm.running_mean.fill_(0.3)
    net.train()
    stats_before = (net.norm.running_mean.clone(), int(net.norm.num_batches_tracked))
    assert dropout_layers(net) == ["drop"] and has_dropout(net)
    samples = mc_dropout_probabilities(net, _input(), passes=6, seed=1)
    assert samples.shape == (6, 2, 3, 6, 5) and samples.dtype == np.float32
    np.testing.assert_allclose(samples.sum(axis=2), 1.0, rtol=1e-5)
    # Dropout was active: the passes differ, so MC mutual information is positive somewhere.
    assert not np.allclose(samples[0], samples[1])
    assert compute_mutual_information(samples[:, 0]).max() > 1e-4
    # Batch norm stayed in evaluation mode: it ran with training=False and its statistics did not move.
    assert net.norm_modes == [False] * 6
    assert torch.equal(net.norm.running_mean, stats_before[0])
    assert int(net.norm.num_batches_tracked) == stats_before[1]
    # Every module is back in the mode it had (training here).
    assert all(m.training for m in net.modules())
    # The seed makes the passes reproducible without touching the global random state.
    state = torch.get_rng_state()
    again = mc_dropout_probabilities(net, _input(), passes=6, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(samples, again)
    assert not np.array_equal(samples, mc_dropout_probabilities(net, _input(), passes=6, seed=2))


def test_mc_dropout_mode_restores_mixed_modes_even_on_error() -> None:
    net = _Net(0.2)
    net.eval()
    net.head.train()  # an unusual mix, restored exactly
    before = {name: m.training for name, m in net.named_modules()}
    with mc_dropout_mode(net) as inside:
        assert inside is net
        assert net.drop.training and not net.norm.training and not net.head.training and not net.training
    assert {name: m.training for name, m in net.named_modules()} == before
    with pytest.raises(RuntimeError, match="boom"), mc_dropout_mode(net):
        raise RuntimeError("boom")
    assert {name: m.training for name, m in net.named_modules()} == before


@pytest.mark.parametrize("p", [None, 0.0])
def test_mc_dropout_without_dropout_raises(p: float | None) -> None:
    net = _Net(p)  # no dropout module, or one with p = 0 (MONAI builds those when dropout is 0)
    net.train()
    assert dropout_layers(net) == [] and not has_dropout(net)
    with pytest.raises(NoDropoutError, match="_Net has no dropout layer") as info:
        mc_dropout_probabilities(net, _input(), passes=3)
    assert isinstance(info.value, UncolError) and isinstance(info.value, ValueError)
    assert all(m.training for m in net.modules())  # nothing was changed


def test_mc_dropout_passes_must_be_at_least_two() -> None:
    with pytest.raises(ValueError, match="passes"):
        mc_dropout_probabilities(_Net(0.5), _input(), passes=1)
