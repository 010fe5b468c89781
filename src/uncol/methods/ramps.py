"""Weight schedules of semi-supervised losses, as functions of the fraction of a phase done."""

from __future__ import annotations

import math


def gaussian_rampup(progress: float) -> float:
    """``exp(-5 (1 - t)^2)`` for ``t`` in [0, 1] (Laine & Aila 2017; the mean-teacher ramp)."""
    t = min(1.0, max(0.0, float(progress)))
    return math.exp(-5.0 * (1.0 - t) ** 2)
