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
