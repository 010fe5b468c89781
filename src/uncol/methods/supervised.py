"""Supervised training on the labeled cases only (the lower bound every semi-supervised method must beat)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from uncol.config import Config
from uncol.methods.base import StepContext, TrainingMethod
from uncol.methods.losses import SegmentationLoss
from uncol.methods.registry import register_method


@register_method
class SupervisedMethod(TrainingMethod):
    """Dice + cross-entropy on labeled batches."""

    name = "supervised"

    def __init__(self, cfg: Config, network: nn.Module) -> None:
        super().__init__(cfg, network)
        self.loss = SegmentationLoss(cfg.train.loss_dice_weight, cfg.train.loss_ce_weight)

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        logits = self.network(batch["image"])
        loss = self.loss(logits, batch["label"])
        return {"loss": loss}
