"""Exponential moving average of a network's weights (the "mean teacher", Tarvainen & Valpola 2017)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """An EMA copy of ``model``: ``ema = a * ema + (1 - a) * model`` after each step.

    The effective momentum is ``min(1 - 1 / (step + 1), decay)``, so early steps follow the student
    closely instead of averaging in the random initialisation (as in the mean-teacher reference code).
    Buffers (BatchNorm statistics) are copied, not averaged.

    Args:
        model: the network to track; the copy starts identical to it.
        decay: maximum momentum (0.99 in UnCoL and most semi-supervised papers).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.eval()

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, warmup: bool = True) -> float:
        """Move the average towards ``model``; returns the momentum used.

        Args:
            model: the student.
            step: zero-based step of the average (the warm-up's clock).
            warmup: ``min(1 - 1 / (step + 1), decay)`` as the mean-teacher code; False: always ``decay``
                (BCP's code, whose teacher starts from a pretrained student rather than a random one).
        """
        alpha = min(1.0 - 1.0 / (step + 1), self.decay) if warmup else self.decay
        for ema_p, p in zip(self.module.parameters(), model.parameters(), strict=True):
            ema_p.mul_(alpha).add_(p.detach(), alpha=1.0 - alpha)
        for ema_b, b in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
        return alpha

    def forward(self, *args, **kwargs):  # noqa: D102 - delegates to the averaged network
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> EMA:
        # The averaged network always stays in eval mode: it is a teacher, never trained directly.
        super().train(False)
        return self
