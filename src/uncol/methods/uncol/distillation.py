"""UnCoL's dual-path distillation pieces: student-to-teacher projections and token-level targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projection(nn.Module):
    """Light FFN mapping student tokens ``(B, N, D)`` to a teacher width ``C``: Linear-GELU-Linear."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(tokens)


def tokens_of(target: torch.Tensor) -> torch.Tensor:
    """A target map ``(B, C, *grid)`` as layer-normalised tokens ``(B, N, C)``.

    Teacher layers differ in scale by orders of magnitude; normalising each token over channels (no
    affine) gives every distillation pair a comparable loss scale.
    """
    t = target.flatten(2).transpose(1, 2)
    return F.layer_norm(t, t.shape[-1:])


def token_mask(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """A pixel mask ``(B, *spatial)`` whose patches align with ViT tokens, at token resolution."""
    index = (slice(None),) + tuple(slice(0, None, patch) for _ in range(mask.ndim - 1))
    return mask[index]
