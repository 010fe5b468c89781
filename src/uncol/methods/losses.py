"""Loss functions shared by the training methods."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn


class SegmentationLoss(nn.Module):
    """Weighted sum of soft Dice and cross-entropy on integer labels (MONAI's DiceCELoss).

    Args:
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice_weight, lambda_ce=ce_weight)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of logits ``(B, K, *spatial)`` against labels ``(B, *spatial)``."""
        return self.loss(logits, label.unsqueeze(1))


def masked_dice_ce(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Dice + cross-entropy restricted to the pixels where ``weight`` > 0 (pseudo-label regions).

    Cross-entropy is averaged over the weighted pixels; the soft Dice is computed over the whole batch
    with probabilities and one-hot labels multiplied by the weight, averaged over the classes present
    in the masked labels (absent classes are left to the cross-entropy term). No pixel weighted:
    the loss is 0 (with a gradient path, so every step can back-propagate it).

    Args:
        logits: ``(B, K, *spatial)``.
        labels: ``(B, *spatial)`` integer labels (ignored where the weight is 0).
        weight: ``(B, *spatial)`` float or bool weights.
    """
    w = weight.to(logits.dtype)
    total = w.sum()
    if total <= 0:
        return logits.sum() * 0.0
    ce = nn.functional.cross_entropy(logits, labels.long(), reduction="none")
    ce = (ce * w).sum() / total
    k = logits.shape[1]
    probs = torch.softmax(logits, dim=1) * w.unsqueeze(1)
    onehot = nn.functional.one_hot(labels.long(), k).movedim(-1, 1).to(logits.dtype) * w.unsqueeze(1)
    dims = [0, *range(2, logits.ndim)]
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = 1.0 - (2.0 * inter + eps) / (denom + eps)
    return ce + dice[present].mean()
