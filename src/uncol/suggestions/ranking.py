"""Scans grouped by patient and ranked: which groups to annotate first.

Annotators label patients, not slices, so the scans of one group (``data.group_regex``: all slices of
an ACDC patient) are ranked as one unit, by the mean of their scans' values. Groups are ranked by

    score = mean(u_entropy, u_disagreement)

where ``u_x`` is the group's percentile rank of ``x`` among the groups (0 for the lowest value, 1 for
the highest; ties share their mean rank): the mean entropy over the scan, and, where the run has a
foundation teacher, its disagreement with the model. A group without a disagreement value (the model
predicts nothing to prompt the teacher with) is scored by its entropy rank alone; without a teacher
the score is the entropy rank. Ranks make the two criteria commensurable without assuming a scale
for either. The highest score is rank 1; ties go to the higher entropy, then to the group name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from uncol.suggestions.scores import ScanScore

__all__ = ["GroupSuggestion", "percentile_ranks", "rank_groups"]


@dataclass(frozen=True)
class GroupSuggestion:
    """One ranked group.

    Attributes:
        rank: 1 for the group to annotate first.
        group: the group (patient) name.
        cases: its scans' case names, in input order.
        files: their image files.
        mean_entropy: the mean of its scans' mean entropies (nats).
        foreground_entropy: the mean of its scans' foreground entropies that are defined, or ``None``.
        disagreement: the mean of its scans' teacher disagreements that are defined, or ``None``.
        score: the combined score in ``[0, 1]`` (module docstring).
    """

    rank: int
    group: str
    cases: tuple[str, ...]
    files: tuple[Path, ...]
    mean_entropy: float
    foreground_entropy: float | None
    disagreement: float | None
    score: float


def percentile_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks scaled to ``[0, 1]``: 0 for the lowest value, 1 for the highest, ties share their mean
    rank; a single value ranks 1."""
    v = np.asarray(values, dtype=np.float64)
    if v.size <= 1:
        return np.ones(v.size)
    return (rankdata(v) - 1.0) / (v.size - 1.0)


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def rank_groups(scans: Sequence[ScanScore]) -> list[GroupSuggestion]:
    """Group scans by their ``group`` and rank the groups (module docstring).

    Returns:
        Every group, rank 1 first.
    """
    members: dict[str, list[ScanScore]] = {}
    for scan in scans:
        members.setdefault(scan.group, []).append(scan)
    names = list(members)
    entropy = [float(np.mean([s.mean_entropy for s in members[g]])) for g in names]
    foreground = [_mean([s.foreground_entropy for s in members[g]]) for g in names]
    disagreement = [_mean([s.disagreement for s in members[g]]) for g in names]
    parts: list[list[float]] = [[float(u)] for u in percentile_ranks(entropy)]
    defined = [i for i, d in enumerate(disagreement) if d is not None]
    for i, u in zip(defined, percentile_ranks([disagreement[i] for i in defined]), strict=True):
        parts[i].append(float(u))
    score = [float(np.mean(p)) for p in parts]
    order = sorted(range(len(names)), key=lambda i: (-score[i], -entropy[i], names[i]))
    return [
        GroupSuggestion(
            rank=r,
            group=names[i],
            cases=tuple(s.case for s in members[names[i]]),
            files=tuple(f for s in members[names[i]] for f in s.files),
            mean_entropy=entropy[i],
            foreground_entropy=foreground[i],
            disagreement=disagreement[i],
            score=score[i],
        )
        for r, i in enumerate(order, start=1)
    ]
