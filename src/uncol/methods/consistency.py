"""Consistency losses between a student and its mean teacher, and UA-MT's uncertainty gate.

* Mean Teacher (Tarvainen and Valpola, NeurIPS 2017), as the semi-supervised segmentation literature
  runs it (SSL4MIS, Luo et al., ``train_mean_teacher_2D.py``): the mean squared difference of the two
  softmax maps over every pixel and class of the unlabeled images.
* UA-MT (Yu et al., "Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium
  segmentation", MICCAI 2019; ``train_LA_meanteacher_certainty_unlabel.py`` and SSL4MIS's
  ``train_uncertainty_aware_mean_teacher_2D.py``): the same squared difference, kept only where the
  teacher's predictive entropy is below a threshold that rises during training.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from uncol.methods.ramps import gaussian_rampup
from uncol.methods.uncertainty import entropy

#: Scale of the entropy threshold: ``ln2`` as in the authors' code whatever the number of classes, or
#: ``lnK``, the largest entropy of ``K`` classes.
ThresholdBase = Literal["ln2", "lnK"]


def rampup(step: int, length: float) -> float:
    """Gaussian ramp ``exp(-5 (1 - t)^2)`` with ``t = step / length``; 1 when ``length`` <= 0."""
    return 1.0 if length <= 0 else gaussian_rampup(step / length)


def softmax_mse(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over every element of two ``(B, K, *spatial)`` probability maps.

    The teacher side is a target: no gradient flows into it.
    """
    return torch.mean((student_probs - teacher_probs.detach()) ** 2)


def gated_softmax_mse(
    student_probs: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor, eps: float = 1e-16
) -> torch.Tensor:
    """UA-MT's consistency: ``sum(mask * (p_s - p_t)^2) / (2 * sum(mask) + eps)``.

    The squared differences are summed over classes and confident pixels and divided by twice the number
    of confident pixels, as in the authors' code. For two classes (the left atrium) that is the mean over
    classes and confident pixels; the multi-class SSL4MIS code keeps the 2, so with ``K`` classes the value
    is ``K / 2`` times that mean. No confident pixel: 0, with a gradient path.

    Args:
        student_probs: ``(B, K, *spatial)`` student probabilities.
        teacher_probs: ``(B, K, *spatial)`` teacher probabilities (a target: detached).
        mask: ``(B, *spatial)`` bool or float, the confident pixels.
        eps: guards the division when no pixel is confident.
    """
    m = mask.to(student_probs.dtype).unsqueeze(1)
    dist = (student_probs - teacher_probs.detach()) ** 2
    return (m * dist).sum() / (2.0 * m.sum() + eps)


def threshold_scale(base: ThresholdBase, num_classes: int) -> float:
    """The entropy (nats) that the threshold fractions multiply: ``ln 2`` or ``ln K``."""
    if base == "ln2":
        return math.log(2.0)
    if base == "lnK":
        return math.log(num_classes)
    raise ValueError(f"threshold base must be 'ln2' or 'lnK', got {base!r}")


def uncertainty_threshold(
    ramp: float, num_classes: int, start: float = 0.75, end: float = 1.0, base: ThresholdBase = "ln2"
) -> float:
    """UA-MT's entropy threshold ``(start + (end - start) * ramp) * scale``, in nats.

    Args:
        ramp: the ramp value in [0, 1] (UA-MT: the Gaussian ramp over the whole training).
        num_classes: ``K``, used when ``base`` is ``lnK``.
        start: fraction of the scale at the start (0.75 in the authors' code).
        end: fraction once ramped up (1.0).
        base: ``ln2`` (the authors' code, also in the multi-class ACDC code) or ``lnK``.
    """
    return (start + (end - start) * ramp) * threshold_scale(base, num_classes)


def predictive_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean of ``T`` probability maps ``(T, B, K, *spatial)``: ``(B, *spatial)``, in nats."""
    return entropy(samples.mean(dim=0), dim=1)
