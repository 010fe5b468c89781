"""Networks: the baselines' segmentation networks (and, later, the UnCoL student)."""

from __future__ import annotations

from uncol.models.networks import build_network, count_parameters

__all__ = ["build_network", "count_parameters"]
