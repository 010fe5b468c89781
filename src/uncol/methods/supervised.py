"""Supervised training on the labeled cases only (the lower bound every semi-supervised method must beat).

Optionally with copy-paste of one box between labeled images (``method.supervised.copy_paste_prob``), the
labeled-only recipe of UnCoL's stage 1 without a teacher, so that a network's gain from copy-paste can be
measured apart from any unlabeled image or teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from uncol.config import Config, option
from uncol.data.copy_paste import mix_with_previous, sample_mix_masks
from uncol.errors import ConfigError
from uncol.methods.base import StepContext, TrainingMethod, check_range
from uncol.methods.losses import SegmentationLoss
from uncol.methods.registry import register_method

#: Stream tag of the per-step copy-paste generator (distinct from the data streams' 0 and 1).
COPY_PASTE_STREAM = 41


@dataclass
class SupervisedOptions:
    """Supervised training; optional copy-paste between the labeled images of a batch."""

    copy_paste_prob: float = option(
        0.0,
        "Probability that a labeled image gets one box pasted from its partner in the batch (the previous image, "
        "cyclically), label with it; the others are shown unmixed. 0 = plain supervised training; 0.5 = UnCoL's stage-1 "
        "recipe without a teacher (method.uncol.copy_paste_prob).",
    )
    copy_paste_box: float = option(
        2 / 3, "Side of the pasted box as a fraction of each image side (BCP and UnCoL: 2/3), rounded to the grid."
    )
    copy_paste_grid: int = option(
        1,
        "Box corners and sides fall on multiples of this many pixels/voxels (1 = anywhere; UnCoL aligns its box to "
        "the student's model.vit_patch tokens).",
    )


@register_method
class SupervisedMethod(TrainingMethod):
    """Dice + cross-entropy on labeled batches, optionally with copy-paste between them."""

    name = "supervised"
    options_class = SupervisedOptions

    def __init__(self, cfg: Config, network: nn.Module) -> None:
        super().__init__(cfg, network)
        self.loss = SegmentationLoss(cfg.train.loss_dice_weight, cfg.train.loss_ce_weight)

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Ranges of the copy-paste options; the grid must divide the patch."""
        o: SupervisedOptions = cfg.method.options
        check_range("method.supervised.copy_paste_prob", o.copy_paste_prob, 0, 1)
        check_range("method.supervised.copy_paste_box", o.copy_paste_box, 0, 1, open_low=True)
        check_range("method.supervised.copy_paste_grid", o.copy_paste_grid, 1)
        if o.copy_paste_prob > 0 and any(s % o.copy_paste_grid for s in cfg.train.patch_size):
            raise ConfigError(
                f"method.supervised.copy_paste_grid: {o.copy_paste_grid} must divide every side of train.patch_size "
                f"{list(cfg.train.patch_size)}"
            )

    def copy_paste(
        self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image ``i`` gets a box of image ``i - 1`` (its partner, cyclically) with probability ``copy_paste_prob``.

        Returns:
            The mixed images and labels, and the ``(N, *spatial)`` masks (True: taken from the partner).
        """
        o: SupervisedOptions = self.options
        rng = np.random.default_rng([self.cfg.train.seed, ctx.step, COPY_PASTE_STREAM])
        masks = sample_mix_masks(
            x.shape[0], tuple(x.shape[2:]), rng, mode="box", unit=o.copy_paste_grid, patch=o.copy_paste_grid,
            ratio=0.0, box_fraction=o.copy_paste_box, prob=o.copy_paste_prob,
        )
        m = torch.from_numpy(masks).to(x.device)
        return mix_with_previous(x, m[:, None]), mix_with_previous(y, m), m

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch["image"], batch["label"]
        logged: dict[str, torch.Tensor] = {}
        if self.options.copy_paste_prob > 0 and x.shape[0] > 1:
            x, y, m = self.copy_paste(x, y, ctx)
            logged["mixed"] = m.flatten(1).any(1).float().mean()
        return {"loss": self.loss(self.network(x), y), **logged}
