"""Per-pixel uncertainty of class probabilities, shared by the methods that gate on it."""

from __future__ import annotations

import torch


def entropy(probs: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Shannon entropy (natural log) over the class axis ``dim``."""
    return -(probs * torch.log(probs.clamp_min(eps))).sum(dim=dim)
