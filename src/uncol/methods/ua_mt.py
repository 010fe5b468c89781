"""UA-MT: uncertainty-aware mean teacher (Yu, Wang, Li, Fu and Heng, MICCAI 2019).

Mean Teacher (:mod:`uncol.methods.mean_teacher`) whose consistency is restricted to the pixels where the
teacher is certain. Each step the teacher runs ``T`` = 8 stochastic passes over the unlabeled images
(Gaussian input noise, plus dropout when the network has dropout layers), in pairs of noisy copies per
forward as the authors' code; the uncertainty is the predictive entropy of the mean softmax. Pixels whose
uncertainty is below ``(0.75 + 0.25 r(t)) x ln 2`` nats, ``r`` the Gaussian ramp over the whole run, take
part in the consistency ``sum(mask (p_s - p_t)^2) / (2 sum(mask))``, ``p_t`` the teacher's softmax on one
more noisy pass (authors' code: ``train_LA_meanteacher_certainty_unlabel.py``; SSL4MIS:
``train_uncertainty_aware_mean_teacher_2D.py``, which keeps ln 2 for ACDC's 4 classes;
``method.ua_mt.threshold_base=lnK`` scales the threshold by ln K instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uncol.config import Config, option
from uncol.errors import ConfigError
from uncol.methods.base import StepContext, check_range
from uncol.methods.consistency import (
    ThresholdBase,
    gated_softmax_mse,
    predictive_entropy,
    rampup,
    uncertainty_threshold,
)
from uncol.methods.mean_teacher import MeanTeacher, MeanTeacherOptions, step_generator, teacher_noise
from uncol.methods.registry import register_method

#: Stream tag of the noise of the uncertainty passes (the target pass uses MeanTeacher's).
UNCERTAINTY_STREAM = 22


@dataclass
class UAMTOptions(MeanTeacherOptions):
    """UA-MT: Mean Teacher's options plus the uncertainty estimate and its threshold."""

    uncertainty_passes: int = option(8, "Stochastic teacher passes T of the uncertainty estimate (the authors' 8).")
    threshold_start: float = option(0.75, "Entropy threshold at the start, as a fraction of the base (0.75).")
    threshold_end: float = option(1.0, "Entropy threshold once ramped up, as a fraction of the base (1.0).")
    threshold_rampup: float = option(
        1.0, "Fraction of train.iterations over which the threshold ramps (Gaussian); the authors' whole run: 1.0."
    )
    threshold_base: ThresholdBase = option(
        "ln2",
        "Entropy (nats) the threshold fractions multiply: 'ln2' as the authors' code, also for multi-class data "
        "(SSL4MIS ACDC), or 'lnK', the largest entropy of K classes.",
    )


@register_method
class UAMT(MeanTeacher):
    """UA-MT on the project's segmentation networks, 2D and 3D."""

    name = "ua_mt"
    options_class = UAMTOptions

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Mean Teacher's checks, and the ranges of the uncertainty options."""
        super().validate_config(cfg)
        o: UAMTOptions = cfg.method.options
        check_range("method.ua_mt.uncertainty_passes", o.uncertainty_passes, 1)
        if not 0.0 < o.threshold_start <= o.threshold_end:
            raise ConfigError(
                "method.ua_mt.threshold_start/threshold_end: need 0 < start <= end, got "
                f"{o.threshold_start}, {o.threshold_end}"
            )
        check_range("method.ua_mt.threshold_rampup", o.threshold_rampup, 0, 1)

    def threshold(self, step: int) -> float:
        """The entropy threshold (nats) at ``step``."""
        o: UAMTOptions = self.options
        r = rampup(step, o.threshold_rampup * self.cfg.train.iterations)
        return uncertainty_threshold(r, self.cfg.data.num_classes, o.threshold_start, o.threshold_end, o.threshold_base)

    def uncertainty(self, xu: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Predictive entropy ``(Bu, *spatial)`` of the teacher over ``uncertainty_passes`` noisy passes.

        The passes run two noisy copies of the unlabeled batch per forward, as the authors' code (with
        normalisation on batch statistics the grouping matters).
        """
        o: UAMTOptions = self.options
        gen = step_generator(self.cfg.train.seed, ctx.step, UNCERTAINTY_STREAM, xu.device)
        probs = []
        for first in range(0, o.uncertainty_passes, 2):
            copies = min(2, o.uncertainty_passes - first)
            x = teacher_noise(xu.repeat(copies, *([1] * (xu.ndim - 1))), o.noise_std, o.noise_clip, gen)
            p = torch.softmax(self.teacher_forward(x, dropout=True).float(), dim=1)
            probs.extend(p.chunk(copies))
        return predictive_entropy(torch.stack(probs))

    def consistency(
        self, p_student: torch.Tensor, p_teacher: torch.Tensor, batch: dict[str, Any], ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The squared softmax difference on the pixels where the teacher's uncertainty is below the threshold."""
        uncertainty = self.uncertainty(batch["unlabeled_image"], ctx)
        threshold = self.threshold(ctx.step)
        confident = uncertainty < threshold
        loss = gated_softmax_mse(p_student, p_teacher, confident)
        return loss, {
            "threshold": torch.tensor(threshold),
            "confident": confident.float().mean(),
            "uncertainty": uncertainty.mean(),
        }
