"""Voxel-wise uncertainty scores from class probabilities and from Monte Carlo dropout samples.

Higher always means more uncertain. All logarithms are natural (entropies in nats).

From one prediction, probabilities ``(K, *spatial)``:

* **entropy** ``H(p) = -sum_k p_k ln p_k`` (with ``0 ln 0 = 0``), in ``[0, ln K]``;
* **maximum softmax** uncertainty ``1 - max_k p_k`` (Hendrycks and Gimpel, ICLR 2017), in
  ``[0, 1 - 1/K]``;
* **energy** ``-T logsumexp(z / T)`` of the logits ``z`` (Liu et al., *Energy-based
  out-of-distribution detection*, NeurIPS 2020), unbounded.

From ``T`` stochastic forward passes with dropout active (Gal and Ghahramani, ICML 2016), samples
``(T, K, *spatial)`` with mean ``p̄ = mean_t p_t``:

* **predictive entropy** ``H(p̄)``;
* **MC variance** ``mean_k Var_t(p_{t,k})`` (population variance over the passes, averaged over
  classes);
* **mutual information** (BALD; Houlsby et al., arXiv:1112.5745, 2011; Gal, Islam and Ghahramani,
  ICML 2017) ``H(p̄) - mean_t H(p_t)``: the part of the predictive entropy due to disagreement
  between passes (epistemic), in ``[0, ln K]``.

These are the scores Lu, Hong and Yang (arXiv:2512.13101, Sec. 4.5.3) compare on risk-coverage
curves. MC dropout needs a network with dropout layers: :func:`mc_dropout_probabilities` raises
:class:`NoDropoutError` for one without, and :func:`has_dropout` lets a caller check first (and say
so in a report) instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp, xlogy

from uncol.errors import UncolError

if TYPE_CHECKING:  # torch is imported where it is used, so that ``import uncol.metrics`` stays light
    import torch
    from torch import nn

__all__ = [
    "NoDropoutError",
    "compute_energy",
    "compute_entropy",
    "compute_max_softmax_uncertainty",
    "compute_mc_variance",
    "compute_mutual_information",
    "compute_predictive_entropy",
    "compute_uncertainty_maps",
    "dropout_layers",
    "has_dropout",
    "mc_dropout_mode",
    "mc_dropout_probabilities",
]


def _dropout_types() -> tuple[type[nn.Module], ...]:
    """The ``torch.nn`` dropout modules that MC dropout switches on."""
    from torch import nn

    return (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class NoDropoutError(UncolError, ValueError):
    """MC dropout was asked of a network without any dropout layer of non-zero probability."""


def _as_float(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.ndim < 1:
        raise ValueError(f"{what} must have a class axis, got a scalar")
    return a


def compute_entropy(probs: np.ndarray, class_axis: int = 0) -> np.ndarray:
    """Shannon entropy ``-sum_k p_k ln p_k`` of each voxel's class probabilities.

    Args:
        probs: class probabilities, e.g. ``(K, *spatial)``.
        class_axis: the axis of the ``K`` classes (1 for an ``(N, K)`` table).

    Returns:
        Entropies (nats), the input's shape without the class axis; 0 for one-hot voxels, ``ln K``
        for uniform ones.
    """
    p = _as_float(probs, "probabilities")
    return -xlogy(p, p).sum(axis=class_axis)


def compute_max_softmax_uncertainty(probs: np.ndarray, class_axis: int = 0) -> np.ndarray:
    """``1 - max_k p_k``: one minus the confidence of the predicted class.

    Args:
        probs: class probabilities, e.g. ``(K, *spatial)``.
        class_axis: the axis of the ``K`` classes.

    Returns:
        Values in ``[0, 1 - 1/K]``, the input's shape without the class axis.
    """
    p = _as_float(probs, "probabilities")
    return 1.0 - p.max(axis=class_axis)


def compute_energy(logits: np.ndarray, class_axis: int = 0, temperature: float = 1.0) -> np.ndarray:
    """Energy score ``-T logsumexp(z / T)`` of the logits ``z``; higher means more uncertain.

    Unlike the other scores it needs the logits (the softmax discards their overall level).

    Args:
        logits: unnormalised class scores, e.g. ``(K, *spatial)``.
        class_axis: the axis of the ``K`` classes.
        temperature: the temperature ``T > 0``.

    Returns:
        Energies, the input's shape without the class axis.

    Raises:
        ValueError: if ``temperature <= 0``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    z = _as_float(logits, "logits")
    return -temperature * logsumexp(z / temperature, axis=class_axis)


def _check_samples(samples: np.ndarray) -> np.ndarray:
    s = _as_float(samples, "MC samples")
    if s.ndim < 3:
        raise ValueError(f"MC samples must be (T, K, *spatial), got shape {s.shape}")
    if s.shape[0] < 1 or s.shape[1] < 2:
        raise ValueError(f"MC samples (T, K, *spatial) need T >= 1 and K >= 2, got shape {s.shape}")
    return s


def compute_predictive_entropy(samples: np.ndarray) -> np.ndarray:
    """Entropy of the mean of ``T`` MC-dropout predictions, ``H(mean_t p_t)``.

    Args:
        samples: probabilities of ``T`` stochastic passes, ``(T, K, *spatial)``.

    Returns:
        Entropies (nats), shape ``(*spatial)``.

    Raises:
        ValueError: if ``samples`` is not ``(T, K, *spatial)``.
    """
    return compute_entropy(_check_samples(samples).mean(axis=0), class_axis=0)


def compute_mc_variance(samples: np.ndarray) -> np.ndarray:
    """Variance of the class probabilities over ``T`` MC-dropout passes, averaged over classes.

    ``mean_k (1/T) sum_t (p_{t,k} - mean_t p_{t,k})^2`` (population variance, ``ddof=0``).

    Args:
        samples: probabilities of ``T`` stochastic passes, ``(T, K, *spatial)``.

    Returns:
        Variances, shape ``(*spatial)``, in ``[0, 1/4]``; 0 when every pass agrees.

    Raises:
        ValueError: if ``samples`` is not ``(T, K, *spatial)``.
    """
    return _check_samples(samples).var(axis=0).mean(axis=0)


def compute_mutual_information(samples: np.ndarray) -> np.ndarray:
    """Mutual information between the prediction and the dropout mask (BALD).

    ``H(mean_t p_t) - mean_t H(p_t)``; it is non-negative by concavity of the entropy, and rounding
    below 0 is clipped.

    Args:
        samples: probabilities of ``T`` stochastic passes, ``(T, K, *spatial)``.

    Returns:
        Mutual information (nats), shape ``(*spatial)``; 0 when every pass agrees.

    Raises:
        ValueError: if ``samples`` is not ``(T, K, *spatial)``.
    """
    s = _check_samples(samples)
    expected = compute_entropy(s, class_axis=1).mean(axis=0)
    return np.maximum(compute_entropy(s.mean(axis=0), class_axis=0) - expected, 0.0)


def compute_uncertainty_maps(probs: np.ndarray, samples: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every probability-based uncertainty score of one case.

    Args:
        probs: class probabilities ``(K, *spatial)`` of the deterministic prediction.
        samples: optional MC-dropout probabilities ``(T, K, *spatial)`` of the same case.

    Returns:
        ``{"entropy", "max_softmax"}`` maps, plus ``{"mc_predictive_entropy", "mc_variance",
        "mc_mutual_information"}`` when ``samples`` is given; each of shape ``(*spatial)``.

    Raises:
        ValueError: if ``samples`` does not match ``probs``' shape behind its first axis.
    """
    probs = np.asarray(probs)
    maps = {"entropy": compute_entropy(probs), "max_softmax": compute_max_softmax_uncertainty(probs)}
    if samples is not None:
        s = _check_samples(samples)
        if s.shape[1:] != probs.shape:
            raise ValueError(
                f"MC samples {s.shape} do not match probabilities {probs.shape}: expected (T, *{probs.shape})"
            )
        maps["mc_predictive_entropy"] = compute_predictive_entropy(s)
        maps["mc_variance"] = compute_mc_variance(s)
        maps["mc_mutual_information"] = compute_mutual_information(s)
    return maps


def dropout_layers(network: nn.Module) -> list[str]:
    """Names of the network's dropout modules whose probability is above 0.

    Dropout modules are ``torch.nn``'s ``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout`` and
    ``FeatureAlphaDropout`` (and subclasses, such as MONAI's). Dropout called functionally inside a
    ``forward`` is not a module and is not found.

    Args:
        network: any torch module.

    Returns:
        Module names as in ``network.named_modules()`` (``""`` when the network is itself one).
    """
    types = _dropout_types()
    return [name for name, m in network.named_modules() if isinstance(m, types) and float(m.p) > 0]


def has_dropout(network: nn.Module) -> bool:
    """Whether MC dropout can be used: the network has a dropout module with probability above 0.

    Args:
        network: any torch module.

    Returns:
        ``True`` when :func:`dropout_layers` is not empty.
    """
    return bool(dropout_layers(network))


@contextlib.contextmanager
def mc_dropout_mode(network: nn.Module) -> Iterator[nn.Module]:
    """Put a network in evaluation mode except for its dropout modules, then restore every module.

    Inside the block, the dropout modules (see :func:`dropout_layers`) are in training mode (they drop
    activations at random) and every other module is in evaluation mode: batch normalisation uses its
    running statistics and does not update them. Dropout applied functionally inside other modules
    (e.g. the attention dropout of ``nn.MultiheadAttention``) stays off. On exit every module gets
    back the ``training`` flag it had on entry.

    Args:
        network: the network.

    Yields:
        The same network.

    Raises:
        NoDropoutError: if the network has no dropout module with probability above 0.
    """
    layers = dropout_layers(network)
    if not layers:
        raise NoDropoutError(
            f"{type(network).__name__} has no dropout layer with p > 0, so MC dropout would give T identical "
            "predictions; train with dropout (e.g. model.dropout > 0) or leave the MC-dropout scores out"
        )
    flags = {m: m.training for m in network.modules()}
    try:
        network.eval()
        types = _dropout_types()
        for m in network.modules():
            if isinstance(m, types):
                m.train()
        yield network
    finally:
        for m, flag in flags.items():
            m.training = flag


def mc_dropout_probabilities(
    network: nn.Module, x: torch.Tensor, passes: int, seed: int | None = None
) -> np.ndarray:
    """Softmax probabilities of ``passes`` forward passes with only dropout active.

    Runs under :func:`mc_dropout_mode` and ``torch.no_grad``; the network's modes are restored
    afterwards.

    Args:
        network: a network mapping ``x`` to logits ``(B, K, *spatial)``, with dropout layers.
        x: a batch of inputs on the network's device, ``(B, C, *spatial)``.
        passes: number of stochastic passes ``T >= 2``.
        seed: when given, the dropout masks are drawn from ``torch.manual_seed(seed)`` inside a
            forked random state, so the result is reproducible and the global random state is left
            as it was.

    Returns:
        float32 probabilities ``(T, B, K, *spatial)`` on the CPU; ``[:, b]`` is case ``b``'s
        ``(T, K, *spatial)`` samples for :func:`compute_mutual_information` and friends.

    Raises:
        NoDropoutError: if the network has no dropout layer with probability above 0.
        ValueError: if ``passes < 2``.
    """
    import torch

    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 2:
        raise ValueError(f"passes must be an integer >= 2, got {passes!r}")
    devices = (
        [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []
    )
    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.manual_seed(seed)
        stack.enter_context(mc_dropout_mode(network))
        stack.enter_context(torch.no_grad())
        out = [torch.softmax(network(x).float(), dim=1).cpu() for _ in range(passes)]
    return torch.stack(out).numpy()
