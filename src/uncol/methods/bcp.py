"""BCP: bidirectional copy-paste (Bai, Chen, Li, Shen and Wang, CVPR 2023).

Two stages in one run, as the authors' code (``code/ACDC_BCP_train.py``, ``code/LA_BCP_train.py``):

**Pretraining** (the first ``pretrain_fraction`` of ``train.iterations``; ACDC: 10 000 of 10 000 + 30 000).
The labeled batch is split in halves ``a`` and ``b``; one box of 2/3 of each side (a cuboid in 3D) at a
random position, shared by the batch, is pasted from ``b`` into ``a``, and the labels are mixed with the
same box. Loss: ``(Dice + CE)`` on the pixels outside the box plus ``(Dice + CE)`` inside it, each averaged
over its own region, halved (the authors' ``mix_loss`` with both weights 1, then ``/ 2``).

**Self-training.** At its first step the EMA teacher is set to the pretrained student; afterwards it
follows with constant momentum 0.99 (no warm-up, as the authors' ``update_model_ema``). Pseudo-labels of
the unlabeled images are the teacher's argmax reduced to the largest connected component of each class.
With labeled halves ``a``, ``b`` and unlabeled halves ``a``, ``b`` (``Bu = B``), the box pastes labeled
``a`` into unlabeled ``a`` and unlabeled ``b`` into labeled ``b``. Each mixed image's loss is
``w_out (Dice + CE)_outside + w_in (Dice + CE)_box`` with weight 1 on labeled pixels and
``unlabeled_weight`` (0.5) on pseudo-labelled ones, each region averaged on its own; the total is half the
sum over the two mixed images. Validation, evaluation and prediction use the student, as the authors do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from uncol.config import Config, option
from uncol.data.copy_paste import box_mask, mix, sample_box
from uncol.ema import EMA
from uncol.errors import ConfigError
from uncol.methods.base import BatchPhase, StepContext, TrainingMethod, check_range, run_phases
from uncol.methods.layer_modes import layers_in_train_mode
from uncol.methods.losses import masked_dice_ce
from uncol.methods.postprocess import keep_largest_component_per_class
from uncol.methods.registry import register_method
from uncol.methods.uncertainty import class_argmax


def pretrain_steps(cfg: Config) -> int:
    """Steps of the pretraining stage: ``method.bcp.pretrain_fraction`` of ``train.iterations``."""
    return int(round(cfg.method.options.pretrain_fraction * cfg.train.iterations))


#: Stream tag of the per-step box generator (distinct from the data streams' 0 and 1).
BOX_STREAM = 31


@dataclass
class BCPOptions:
    """BCP: labeled copy-paste pretraining, then bidirectional copy-paste self-training with an EMA teacher."""

    pretrain_fraction: float = option(
        0.25,
        "Fraction of train.iterations spent in pretraining on labeled images (the authors' ACDC code: 10000 of "
        "10000 + 30000; LA: 2000 of 2000 + 15000); the rest is self-training. 1.0 = pretraining only.",
    )
    box_fraction: float = option(2 / 3, "Side of the pasted box as a fraction of each image side (the authors' 2/3).")
    unlabeled_weight: float = option(
        0.5, "Weight of the pseudo-labelled pixels' loss; labeled pixels weigh 1 (the authors' u_weight, 0.5)."
    )
    ema_decay: float = option(0.99, "Momentum of the EMA teacher, constant from the first self-training step (0.99).")
    largest_component: bool = option(
        True, "Reduce each class of the teacher's pseudo-labels to its largest connected component (the authors' code)."
    )
    teacher_mode: Literal["train", "eval"] = option(
        "train",
        "Layers of the teacher's forward passes: 'train' as the authors' code (normalisation on batch statistics, "
        "dropout active), 'eval' (running statistics, no dropout).",
    )


#: Options that only self-training reads: a run differing in them may branch from the switch checkpoint.
SELF_TRAINING_OPTIONS = frozenset(
    f"method.bcp.{k}" for k in ("unlabeled_weight", "ema_decay", "largest_component", "teacher_mode")
)


def region_loss(
    logits: torch.Tensor, labels: torch.Tensor, box: torch.Tensor, outer_weight: float, inner_weight: float
) -> torch.Tensor:
    """``outer_weight (Dice + CE)`` outside ``box`` plus ``inner_weight (Dice + CE)`` inside, each region on its own.

    Args:
        logits: ``(N, K, *spatial)`` student logits of mixed images.
        labels: ``(N, *spatial)`` their mixed labels (ground truth or pseudo-label per region).
        box: ``(*spatial)`` bool, the pasted region (shared by the batch).
        outer_weight: weight of the pixels outside the box.
        inner_weight: weight of the pixels inside the box.
    """
    inside = box.to(device=logits.device, dtype=torch.bool).expand_as(labels)
    return outer_weight * masked_dice_ce(logits, labels, ~inside) + inner_weight * masked_dice_ce(logits, labels, inside)


def bidirectional_copy_paste(
    xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor, yu: torch.Tensor, box: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Paste labeled into unlabeled and unlabeled into labeled images with one box.

    The first halves of both batches give the images with unlabeled surroundings and a labeled box, the
    second halves those with labeled surroundings and an unlabeled box (the authors' ``a`` / ``b`` split).

    Args:
        xl: ``(B, C, *spatial)`` labeled images; ``yl`` ``(B, *spatial)`` their labels.
        xu: ``(B, C, *spatial)`` unlabeled images; ``yu`` ``(B, *spatial)`` their pseudo-labels.
        box: ``(*spatial)`` bool, the pasted region.

    Returns:
        ``((image, label) unlabeled outside, (image, label) labeled outside)``, each ``B // 2`` images.
    """
    h = xl.shape[0] // 2
    into_unlabeled = (mix(xu[:h], xl[:h], box), mix(yu[:h], yl[:h], box))
    into_labeled = (mix(xl[h:2 * h], xu[h:2 * h], box), mix(yl[h:2 * h], yu[h:2 * h], box))
    return into_unlabeled, into_labeled


@register_method
class BCP(TrainingMethod):
    """BCP on the project's segmentation networks, 2D (one rectangle) and 3D (one cuboid)."""

    name = "bcp"
    options_class = BCPOptions

    def __init__(self, cfg: Config, network: nn.Module) -> None:
        super().__init__(cfg, network)
        o: BCPOptions = self.options
        self.pretrain_steps = pretrain_steps(cfg)
        self.ema = EMA(network, o.ema_decay)

    @classmethod
    def batch_phases(cls, cfg: Config) -> tuple[BatchPhase, ...]:
        """Pretraining reads the labeled batch only; self-training as many unlabeled images (Bu = B, the
        authors' 1:1 ratio, in the halves the labeled batch is split into)."""
        b = cfg.train.batch_size
        return run_phases(cfg.train.iterations, BatchPhase(0, b, 0), BatchPhase(pretrain_steps(cfg), b, b))

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Ranges of the options; the batch must split into two halves."""
        o: BCPOptions = cfg.method.options
        if cfg.train.batch_size < 2 or cfg.train.batch_size % 2:
            raise ConfigError(
                f"train.batch_size: BCP mixes the two halves of the batch, so it must be even and >= 2, got "
                f"{cfg.train.batch_size}"
            )
        check_range("method.bcp.pretrain_fraction", o.pretrain_fraction, 0, 1)
        check_range("method.bcp.box_fraction", o.box_fraction, 0, 1, open_low=True)
        check_range("method.bcp.unlabeled_weight", o.unlabeled_weight, 0)
        check_range("method.bcp.ema_decay", o.ema_decay, 0, 1, open_low=True, open_high=True)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network, "ema": self.ema}

    def deferred_options(self) -> tuple[int, frozenset[str]]:
        # Pretraining reads none of these (the teacher starts from the student at the switch).
        if self.pretrain_steps >= self.cfg.train.iterations:
            return 0, frozenset()
        return self.pretrain_steps, SELF_TRAINING_OPTIONS

    # ---- pieces ---------------------------------------------------------------------------------

    def box(self, spatial: tuple[int, ...], ctx: StepContext) -> torch.Tensor:
        """The step's box mask ``(*spatial)`` (True: pasted), seeded by ``(train.seed, step)``."""
        rng = np.random.default_rng([self.cfg.train.seed, ctx.step, BOX_STREAM])
        return torch.from_numpy(box_mask(spatial, sample_box(spatial, self.options.box_fraction, rng))).to(ctx.device)

    @torch.no_grad()
    def pseudo_labels(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Teacher pseudo-labels of ``x`` and the fraction of pixels the largest-component filter reset to 0."""
        as_train = self.options.teacher_mode == "train"
        with layers_in_train_mode(self.ema.module, norm=as_train, dropout=as_train):
            labels = class_argmax(self.ema(x))
        if not self.options.largest_component:
            return labels, 0.0
        kept = keep_largest_component_per_class(labels, self.cfg.data.num_classes)
        return kept, float((kept != labels).float().mean())

    # ---- steps ----------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.step < self.pretrain_steps:
            return self._pretrain(batch, ctx)
        if ctx.step == self.pretrain_steps:
            # The teacher starts from the pretrained student (the authors load the pretrained weights into both).
            self.ema.module.load_state_dict(self.network.state_dict())
        return self._self_train(batch, ctx)

    def after_step(self, ctx: StepContext) -> None:
        if ctx.step >= self.pretrain_steps:
            self.ema.update(self.network, ctx.step, warmup=False)

    def _pretrain(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch["image"], batch["label"]
        h = x.shape[0] // 2
        box = self.box(tuple(x.shape[2:]), ctx)
        logits = self.network(mix(x[:h], x[h:2 * h], box))
        loss = 0.5 * region_loss(logits, mix(y[:h], y[h:2 * h], box), box, 1.0, 1.0)
        return {"loss": loss, "stage": torch.tensor(1.0)}

    def _self_train(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        xl, yl, xu = batch["image"], batch["label"], batch["unlabeled_image"]
        h = xl.shape[0] // 2
        # Two teacher passes, one per unlabeled half, as the authors' code (batch statistics per half).
        pl_a, reset_a = self.pseudo_labels(xu[:h])
        pl_b, reset_b = self.pseudo_labels(xu[h:2 * h])
        yu = torch.cat([pl_a, pl_b])
        box = self.box(tuple(xl.shape[2:]), ctx)
        (x_u, y_u), (x_l, y_l) = bidirectional_copy_paste(xl, yl, xu, yu, box)
        w_u = self.options.unlabeled_weight
        loss_u = region_loss(self.network(x_u), y_u, box, w_u, 1.0)  # unlabeled surroundings, labeled box
        loss_l = region_loss(self.network(x_l), y_l, box, 1.0, w_u)  # labeled surroundings, unlabeled box
        return {
            "loss": 0.5 * (loss_u + loss_l),
            "stage": torch.tensor(2.0),
            "loss_unlabeled_outside": loss_u.detach(),
            "loss_labeled_outside": loss_l.detach(),
            "largest_component_reset": torch.tensor((reset_a + reset_b) / 2),
        }
