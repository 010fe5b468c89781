"""Does an exported model compute what the torch network computes? Logit parity on given inputs.

Tolerance: the largest absolute logit difference allowed is :data:`PARITY_TOLERANCE` = 1e-3. Both
runtimes compute in float32 but with different kernels (convolution algorithms, summation order,
fused attention), so their logits differ by rounding only: 1e-7 to 3e-5 for the networks here, the
largest for a trained 3D U-Net whose logits reach 40 (the figures are in docs/export.md). 1e-3 leaves
more than an order of magnitude above that noise, while any real export error (a wrong weight, a
constant traced in place of a shape, a missing layer) moves logits by far more. At 1e-3 the softmax probabilities differ by at most
2.5e-4 (the softmax's slope is at most 1/4), so a predicted label can only change where two classes
are tied to within 1e-3 logits: :attr:`Parity.label_agreement` reports how often that happens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: Largest absolute logit difference between ONNX Runtime and PyTorch accepted by an export.
PARITY_TOLERANCE = 1e-3


@dataclass
class Parity:
    """Result of :func:`compare_logits`.

    Attributes:
        max_abs_diff: the largest absolute logit difference over every input checked.
        max_abs_logit: the largest absolute PyTorch logit (the scale the difference is relative to).
        label_agreement: fraction of pixels/voxels whose argmax class is the same in both runtimes.
        checks: per input batch checked, its shape and its largest difference.
        tolerance: the tolerance the result is judged against.
    """

    max_abs_diff: float = 0.0
    max_abs_logit: float = 0.0
    label_agreement: float = 1.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = PARITY_TOLERANCE

    @property
    def ok(self) -> bool:
        """True when every difference is within the tolerance."""
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "max_abs_diff": self.max_abs_diff,
            "max_abs_logit": self.max_abs_logit,
            "label_agreement": self.label_agreement,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "checks": list(self.checks),
        }


@torch.no_grad()
def compare_logits(
    reference: nn.Module, candidate: nn.Module, batches: Sequence[torch.Tensor], tolerance: float = PARITY_TOLERANCE
) -> Parity:
    """Run both networks on every batch and measure how far the candidate's logits are from the reference's.

    Args:
        reference: the torch network (in eval mode).
        candidate: the exported network (e.g. :class:`uncol.export.OnnxNetwork`).
        batches: input batches ``(B, C, *spatial)``.
        tolerance: the largest absolute difference accepted (recorded in the result).
    """
    parity = Parity(tolerance=tolerance)
    same = total = 0
    for x in batches:
        want = reference(x).float()
        got = candidate(x).float()
        if got.shape != want.shape:
            parity.checks.append({"shape": list(x.shape), "max_abs_diff": float("inf"), "output": list(got.shape)})
            parity.max_abs_diff = float("inf")
            continue
        diff = float((got - want).abs().max())
        if not math.isfinite(diff):  # NaN compares False with everything: it would pass the max() below
            diff = float("inf")
        parity.checks.append({"shape": list(x.shape), "max_abs_diff": diff})
        parity.max_abs_diff = max(parity.max_abs_diff, diff)
        parity.max_abs_logit = max(parity.max_abs_logit, float(want.abs().max()))
        same += int((got.argmax(dim=1) == want.argmax(dim=1)).sum())
        total += want[:, 0].numel()
    parity.label_agreement = same / total if total else 0.0
    return parity
