"""Mean Teacher (Tarvainen and Valpola, "Mean teachers are better role models", NeurIPS 2017).

As the semi-supervised medical segmentation literature runs it (SSL4MIS, Luo et al.,
``code/train_mean_teacher_2D.py`` / ``_3D.py``): the teacher is an exponential moving average of the
student (momentum 0.99, with the reference's warm-up ``min(1 - 1/(step + 1), 0.99)``); each step the
student sees the labeled and unlabeled images in one batch, the teacher sees the unlabeled images with
Gaussian noise ``clamp(N(0, 0.1^2), -0.2, 0.2)`` added, and the loss is Dice + cross-entropy on the
labeled images plus ``w(t)`` times the mean squared difference of the two softmax maps on the unlabeled
images, with ``w(t) = consistency_weight * exp(-5 (1 - t)^2)`` ramped over ``consistency_rampup`` of
the run. Validation, evaluation and prediction use the student, as the literature reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from uncol.config import Config, option
from uncol.ema import EMA
from uncol.methods.base import DataNeeds, StepContext, TrainingMethod, check_range
from uncol.methods.consistency import rampup, softmax_mse
from uncol.methods.layer_modes import layers_in_train_mode
from uncol.methods.losses import SegmentationLoss
from uncol.methods.registry import register_method

#: Stream tags of the per-step random generators (distinct from the data streams' 0 and 1).
NOISE_STREAM = 21


@dataclass
class MeanTeacherOptions:
    """Mean Teacher: EMA teacher, consistency on unlabeled images, noise on the teacher's input."""

    unlabeled_batch_size: int = option(
        0, "Unlabeled images per step; 0 = train.batch_size (the references' 1:1 ratio: 12 + 12 in 2D, 2 + 2 in 3D)."
    )
    ema_decay: float = option(0.99, "Momentum of the EMA teacher (SSL4MIS, UA-MT: 0.99), after the 1 - 1/(step+1) warm-up.")
    consistency_weight: float = option(
        0.2,
        "Maximum weight of the consistency loss. The references weigh 0.1 against 0.5 x (Dice + CE); uncol keeps the "
        "supervised loss of its supervised baseline (Dice + CE, unhalved), so 0.2 keeps the references' balance.",
    )
    consistency_rampup: float = option(
        1.0,
        "Fraction of train.iterations over which the consistency weight ramps up (Gaussian exp(-5(1-t)^2)); the "
        "references ramp over the whole run (SSL4MIS: 200 x 150 of 30000 iterations; UA-MT: 40 x 150 of 6000).",
    )
    noise_std: float = option(0.1, "Standard deviation of the Gaussian noise added to the teacher's input (0.1).")
    noise_clip: float = option(0.2, "The noise is clamped to [-noise_clip, noise_clip] (0.2).")
    teacher_mode: Literal["train", "eval"] = option(
        "train",
        "Layers of the teacher's forward passes: 'train' as the references (normalisation on batch statistics, "
        "dropout active), 'eval' (running statistics, no dropout).",
    )


def step_generator(seed: int, step: int, stream: int, device: torch.device) -> torch.Generator:
    """A torch generator seeded from ``(seed, step, stream)``: the draws of a step survive resumption."""
    state = int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(state)
    return gen


def teacher_noise(x: torch.Tensor, std: float, clip: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise of standard deviation ``std`` clamped to ``[-clip, clip]`` (the references' 0.1, 0.2)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * std
    return x + noise.clamp(-clip, clip)


@register_method
class MeanTeacher(TrainingMethod):
    """Mean Teacher on the project's segmentation networks, 2D and 3D."""

    name = "mean_teacher"
    options_class = MeanTeacherOptions

    def __init__(self, cfg: Config, network: nn.Module) -> None:
        super().__init__(cfg, network)
        self.sup_loss = SegmentationLoss(cfg.train.loss_dice_weight, cfg.train.loss_ce_weight)
        self.ema = EMA(network, self.options.ema_decay)

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Ranges of the options."""
        o: MeanTeacherOptions = cfg.method.options
        key = f"method.{cls.name}"
        check_range(f"{key}.ema_decay", o.ema_decay, 0, 1, open_low=True, open_high=True)
        check_range(f"{key}.consistency_rampup", o.consistency_rampup, 0, 1)
        for k in ("unlabeled_batch_size", "consistency_weight", "noise_std", "noise_clip"):
            check_range(f"{key}.{k}", getattr(o, k), 0)

    def data_needs(self) -> DataNeeds:
        return DataNeeds(unlabeled_batch_size=self.options.unlabeled_batch_size or self.cfg.train.batch_size)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network, "ema": self.ema}

    def consistency_ramp(self, step: int) -> float:
        """The ramp ``r(t)`` of the consistency weight at ``step``."""
        return rampup(step, self.options.consistency_rampup * self.cfg.train.iterations)

    def teacher_forward(self, x: torch.Tensor, dropout: bool = False) -> torch.Tensor:
        """Teacher logits of ``x`` (no gradient), with the layer modes of ``teacher_mode``.

        Args:
            x: input images.
            dropout: force dropout layers on whatever ``teacher_mode`` (UA-MT's stochastic passes).
        """
        as_train = self.options.teacher_mode == "train"
        with torch.no_grad(), layers_in_train_mode(self.ema.module, norm=as_train, dropout=as_train or dropout):
            return self.ema(x)

    def student_outputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of the labeled and of the unlabeled images, from one forward of both.

        One forward as in the references, so normalisation statistics are those of the joint batch.
        """
        xl, xu = batch["image"], batch["unlabeled_image"]
        logits = self.network(torch.cat([xl, xu]))
        return logits[: xl.shape[0]], logits[xl.shape[0]:]

    def noisy_unlabeled(self, batch: dict[str, Any], ctx: StepContext, stream: int = NOISE_STREAM) -> torch.Tensor:
        """The unlabeled images with the teacher's input noise, seeded by ``(train.seed, step, stream)``."""
        xu = batch["unlabeled_image"]
        gen = step_generator(self.cfg.train.seed, ctx.step, stream, xu.device)
        return teacher_noise(xu, self.options.noise_std, self.options.noise_clip, gen)

    def consistency(
        self, p_student: torch.Tensor, p_teacher: torch.Tensor, batch: dict[str, Any], ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The consistency loss on the unlabeled images and the extra scalars to log (variants override it)."""
        return softmax_mse(p_student, p_teacher), {}

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        logits_l, logits_u = self.student_outputs(batch)
        loss_sup = self.sup_loss(logits_l, batch["label"])
        p_teacher = torch.softmax(self.teacher_forward(self.noisy_unlabeled(batch, ctx)).float(), dim=1)
        loss_cons, logged = self.consistency(torch.softmax(logits_u.float(), dim=1), p_teacher, batch, ctx)
        w = self.options.consistency_weight * self.consistency_ramp(ctx.step)
        return {
            "loss": loss_sup + w * loss_cons,
            "loss_sup": loss_sup.detach(),
            "loss_cons": loss_cons.detach(),
            "w_cons": torch.tensor(w),
            **logged,
        }

    def after_step(self, ctx: StepContext) -> None:
        self.ema.update(self.network, ctx.step)
