"""Voxel-wise uncertainty maps of one whole case: from its probabilities, and from MC dropout.

The deterministic maps (entropy, maximum softmax) come from the probabilities that
:func:`uncol.inference.predict_probabilities` returns. The MC-dropout maps (variance and mutual
information; Gal and Ghahramani, ICML 2016) come from ``T`` whole-case passes of the same inference
with only the dropout modules active (:func:`uncol.metrics.uncertainty.mc_dropout_mode`). The passes
are folded into running sums as they come instead of being stacked, so memory stays at a few copies
of one prediction whatever ``T`` (a stacked ``(T, K, *spatial)`` array of a large CT volume would
not fit).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from uncol.config import Config
from uncol.data.types import CaseData
from uncol.inference import predict_probabilities
from uncol.metrics import compute_entropy, compute_max_softmax_uncertainty, mc_dropout_mode

__all__ = ["DETERMINISTIC_SCORES", "MC_SCORES", "deterministic_maps", "mc_dropout_maps"]

#: Scores computed from one prediction's probabilities.
DETERMINISTIC_SCORES = ("entropy", "max_softmax")
#: Scores computed from MC-dropout passes (only for networks with dropout).
MC_SCORES = ("mc_variance", "mc_mutual_information")


def deterministic_maps(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Entropy and maximum-softmax uncertainty of a case's probabilities.

    Args:
        probs: class probabilities ``(K, *spatial)``.

    Returns:
        ``{"entropy", "max_softmax"}`` maps of shape ``(*spatial)`` (float32).
    """
    return {
        "entropy": compute_entropy(probs).astype(np.float32, copy=False),
        "max_softmax": compute_max_softmax_uncertainty(probs).astype(np.float32, copy=False),
    }


def mc_dropout_maps(
    network: nn.Module, data: CaseData, cfg: Config, device: torch.device, passes: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """MC-dropout variance and mutual information of one whole case.

    Each pass is the whole-case inference of :func:`uncol.inference.predict_probabilities` (slice by
    slice or by sliding window, at the case's original size) with only the dropout modules in
    training mode. With ``p_t`` the probabilities of pass ``t`` and ``p̄`` their mean, the maps are
    ``mean_k Var_t(p_{t,k})`` (population variance) and ``H(p̄) - mean_t H(p_t)``, as
    :func:`uncol.metrics.compute_mc_variance` and :func:`uncol.metrics.compute_mutual_information`
    define them.

    Args:
        network: the network; it must have a dropout module with probability above 0.
        data: the loaded case.
        cfg: the run's configuration.
        device: device to run on.
        passes: number of passes ``T >= 2``.
        seed: seed of the dropout masks; the passes run in a forked random state, so the global
            random state is left as it was and the maps are reproducible.

    Returns:
        ``{"mc_variance", "mc_mutual_information"}`` maps of shape ``(*spatial)`` (float32).

    Raises:
        NoDropoutError: if the network has no dropout module with probability above 0.
        ValueError: if ``passes < 2``.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 2:
        raise ValueError(f"passes must be an integer >= 2, got {passes!r}")
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    sum_p: np.ndarray | None = None
    sum_p2: np.ndarray | None = None
    sum_h: np.ndarray | None = None
    with torch.random.fork_rng(devices=devices), mc_dropout_mode(network):
        torch.manual_seed(seed)
        for _ in range(passes):
            p = predict_probabilities(network, data, cfg, device).astype(np.float64)
            h = compute_entropy(p)
            if sum_p is None or sum_p2 is None or sum_h is None:
                sum_p, sum_p2, sum_h = p, p * p, h
            else:
                sum_p += p
                sum_p2 += p * p
                sum_h += h
    assert sum_p is not None and sum_p2 is not None and sum_h is not None  # passes >= 2
    mean_p = sum_p / passes
    # E[p^2] - E[p]^2 can round a hair below 0 where every pass agrees.
    variance = np.maximum(sum_p2 / passes - mean_p * mean_p, 0.0).mean(axis=0)
    mutual_information = np.maximum(compute_entropy(mean_p) - sum_h / passes, 0.0)
    return {
        "mc_variance": variance.astype(np.float32),
        "mc_mutual_information": mutual_information.astype(np.float32),
    }
