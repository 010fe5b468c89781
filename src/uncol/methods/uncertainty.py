"""Per-pixel uncertainty of class probabilities, shared by the methods that gate on it."""

from __future__ import annotations

import torch


def entropy(probs: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Shannon entropy (natural log) over the class axis ``dim``."""
    return -(probs * torch.log(probs.clamp_min(eps))).sum(dim=dim)


def class_argmax(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Index of the largest value over the class axis ``dim``: ``probs.argmax(dim)``, computed faster.

    The same indices as ``argmax`` (the first of tied maxima), but ``max`` reduces over a channel axis
    that is not the last one about 8x faster than ``argmax`` on a CPU (torch 2.x: 2 ms against 19 ms
    for ``(2, 4, 256, 256)`` on one thread), which was 9% of an UnCoL stage-2 step
    (benchmarks/step_speed.py).
    """
    return probs.max(dim=dim).indices
