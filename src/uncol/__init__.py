"""uncol: label-efficient medical image segmentation (UnCoL and semi-supervised baselines)."""

from __future__ import annotations

__version__ = "0.1.0"
