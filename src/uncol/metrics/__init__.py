"""Segmentation metrics: Dice, Jaccard, HD95 and ASD, per case and summarised over cases.

See ``docs/metrics.md`` for the definitions, the ``standard`` and ``medpy`` conventions and the
empty-mask policies.
"""

from __future__ import annotations

from uncol.metrics.case_metrics import (
    EMPTY_BOTH_POLICIES,
    EMPTY_KINDS,
    EMPTY_ONE_POLICIES,
    METRIC_NAMES,
    CaseResult,
    compute_case_metrics,
    format_table,
    summarize,
)
from uncol.metrics.overlap import (
    CumulativeMetric,
    DiceMetric,
    JaccardMetric,
    compute_dice,
    compute_jaccard,
)
from uncol.metrics.surface import (
    CONVENTIONS,
    AverageSurfaceDistanceMetric,
    HausdorffDistance95Metric,
    compute_asd,
    compute_directed_surface_distances,
    compute_hd95,
    compute_surface_metrics,
    validate_spacing,
)

__all__ = [
    "CONVENTIONS",
    "EMPTY_BOTH_POLICIES",
    "EMPTY_KINDS",
    "EMPTY_ONE_POLICIES",
    "METRIC_NAMES",
    "AverageSurfaceDistanceMetric",
    "CaseResult",
    "CumulativeMetric",
    "DiceMetric",
    "HausdorffDistance95Metric",
    "JaccardMetric",
    "compute_asd",
    "compute_case_metrics",
    "compute_dice",
    "compute_directed_surface_distances",
    "compute_hd95",
    "compute_jaccard",
    "compute_surface_metrics",
    "format_table",
    "summarize",
    "validate_spacing",
]
