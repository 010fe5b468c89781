"""Uncertainty-aware pseudo-labels (UnCoL, Lu et al., arXiv:2512.13101, Sec. 3.4).

Two teachers give class probabilities for each pixel of an unlabeled image. A teacher is *confident*
at a pixel when the Shannon entropy of its prediction is below a threshold that rises during
training (as in UA-MT, Yu et al., MICCAI 2019, so the filter starts strict and relaxes; by default on
UA-MT's scale, ``ln 2`` nats, see :func:`entropy_threshold`). Then:

- both confident: the uncertainty-weighted average of their probabilities, each weighted by the
  other's entropy share, ``w_g = H_s / (H_g + H_s)`` (the less uncertain teacher counts more; equal
  entropies, including both zero, give equal weights);
- one confident: that teacher's probabilities;
- none confident: the pixel is left out of the loss.

Hard labels are the argmax of the fused probabilities on the supervised region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uncol.methods.consistency import ThresholdBase, uncertainty_threshold
from uncol.methods.ramps import gaussian_rampup
from uncol.methods.uncertainty import class_argmax, entropy


def entropy_threshold(
    progress: float, num_classes: int, start: float = 0.75, end: float = 1.0, base: ThresholdBase = "ln2"
) -> float:
    """Entropy threshold (nats) at progress ``t`` of the ramp: ``(start + (end - start) * rampup(t)) * base``.

    UA-MT's schedule (:func:`uncol.methods.consistency.uncertainty_threshold`), with the Gaussian ramp.
    ``base`` ``ln2`` is UA-MT's reference code, also for multi-class data; ``lnK``, the largest possible
    entropy, makes the threshold a fraction of it, which for ``K > 2`` admits nearly every pixel.
    """
    return uncertainty_threshold(gaussian_rampup(progress), num_classes, start, end, base)


@dataclass
class PseudoLabels:
    """Result of :func:`fuse_pseudo_labels`.

    Attributes:
        labels: ``(B, *spatial)`` hard labels (argmax of the fused probabilities; 0 where unsupervised).
        mask: ``(B, *spatial)`` bool, where at least one teacher is confident.
        probs: ``(B, K, *spatial)`` fused probabilities (zeros where unsupervised).
        source: ``(B, *spatial)`` int8: 0 neither, 1 generalized only, 2 specialized only, 3 both.
    """

    labels: torch.Tensor
    mask: torch.Tensor
    probs: torch.Tensor
    source: torch.Tensor

    def fractions(self) -> dict[str, float]:
        """Fraction of pixels supervised by each teacher alone, by both, and by neither."""
        n = max(1, self.source.numel())
        return {
            "frac_none": float((self.source == 0).sum()) / n,
            "frac_general": float((self.source == 1).sum()) / n,
            "frac_special": float((self.source == 2).sum()) / n,
            "frac_both": float((self.source == 3).sum()) / n,
        }


@torch.no_grad()
def gate_classes(p_general: torch.Tensor, p_special: torch.Tensor, voting: torch.Tensor) -> torch.Tensor:
    """The class-wise reliability gate: the generalized teacher's probabilities, uniform (no opinion,
    never confident) on pixels that either teacher assigns to a class outside ``voting``.

    Args:
        p_general: ``(B, K, *spatial)`` probabilities of the generalized teacher.
        p_special: ``(B, K, *spatial)`` probabilities of the specialized teacher.
        voting: ``(K,)`` bool, the classes on which the generalized teacher may vote.
    """
    ok = voting.to(p_general.device)
    vote = (ok[class_argmax(p_general)] & ok[class_argmax(p_special)]).unsqueeze(1)
    return torch.where(vote, p_general, torch.full_like(p_general, 1.0 / p_general.shape[1]))


@torch.no_grad()
def fuse_pseudo_labels(p_general: torch.Tensor, p_special: torch.Tensor, threshold: float) -> PseudoLabels:
    """Fuse two teachers' probability maps by their per-pixel entropy.

    Args:
        p_general: ``(B, K, *spatial)`` probabilities of the generalized (foundation) teacher.
        p_special: ``(B, K, *spatial)`` probabilities of the specialized (EMA) teacher.
        threshold: entropy threshold; a teacher is confident where its entropy is strictly below it
            (and never where its probabilities are uniform).

    Returns:
        The fused :class:`PseudoLabels`.
    """
    if p_general.shape != p_special.shape:
        raise ValueError(f"teacher probability maps differ in shape: {tuple(p_general.shape)} vs {tuple(p_special.shape)}")
    h_g, h_s = entropy(p_general), entropy(p_special)
    # A uniform map (a teacher with no opinion) has entropy ln K up to float rounding: keep it below any
    # threshold, including the largest, ln K itself.
    limit = min(float(threshold), math.log(p_general.shape[1]) * (1.0 - 1e-5))
    conf_g, conf_s = h_g < limit, h_s < limit
    both = conf_g & conf_s
    total = h_g + h_s
    # Weight of the generalized teacher: the specialized teacher's share of the entropy.
    w_g = torch.where(total > 0, h_s / total.clamp_min(1e-12), torch.full_like(total, 0.5))
    w_g = torch.where(both, w_g, conf_g.to(w_g.dtype))  # one confident teacher: weight 1 or 0
    w_g = w_g.unsqueeze(1)
    fused = w_g * p_general + (1.0 - w_g) * p_special
    mask = conf_g | conf_s
    fused = fused * mask.unsqueeze(1).to(fused.dtype)
    labels = torch.where(mask, class_argmax(fused), torch.zeros_like(h_g, dtype=torch.long))
    source = conf_g.to(torch.int8) + 2 * conf_s.to(torch.int8)
    return PseudoLabels(labels=labels, mask=mask, probs=fused, source=source)
