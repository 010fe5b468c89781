"""What ``uncol suggest`` measures on one scan: the model's predictive entropy, over the whole scan and
over the voxels it calls foreground, and (with a foundation teacher) the teacher's disagreement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uncol.metrics import compute_entropy

__all__ = ["ScanScore", "entropy_scores"]


@dataclass(frozen=True)
class ScanScore:
    """The scores of one scan.

    Attributes:
        case: the scan's case name.
        group: its patient group.
        files: its image file(s).
        source: ``split`` (a case of the run's unlabeled split) or ``file``.
        mean_entropy: mean predictive entropy over every voxel, in nats (0 certain, ``ln K`` uniform).
        foreground_entropy: mean entropy over the voxels predicted as foreground, ``None`` when the
            model predicts no foreground at all.
        disagreement: ``1 -`` Dice between the foundation teacher's and the model's masks
            (:mod:`uncol.suggestions.disagreement`), ``None`` without a teacher or prompt.
    """

    case: str
    group: str
    files: tuple[Path, ...]
    source: str
    mean_entropy: float
    foreground_entropy: float | None
    disagreement: float | None = None


def entropy_scores(probs: np.ndarray) -> tuple[float, float | None]:
    """Mean entropy (nats) of class probabilities ``(K, *spatial)`` over all voxels and over the
    predicted foreground (``None`` when no voxel is predicted as foreground)."""
    entropy = compute_entropy(probs)
    foreground = probs.argmax(axis=0) > 0
    fg = float(entropy[foreground].mean()) if foreground.any() else None
    return float(entropy.mean()), fg
