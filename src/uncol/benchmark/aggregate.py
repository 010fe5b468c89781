"""Per-case rows grouped back into runs: what the tables and the figure summarise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from uncol.benchmark.stats import defined_mean
from uncol.metrics.case_metrics import METRIC_NAMES


@dataclass
class RunResult:
    """One finished run, from its rows.

    Attributes:
        method: method entry.
        labeled: labeled amount.
        seed: seed.
        cases: per metric (``dice``, ``jaccard``, ``hd95``, ``asd``), case -> mean over classes.
        cpu_seconds: CPU seconds of its training loop.
        iterations: training steps.
        images_labeled: labeled images drawn into its batches (``None`` when the engine did not record it).
        images_unlabeled: unlabeled images drawn into its batches.
        trained_labeled: of the drawn labeled images, those its steps trained on (a stage may leave part of
            the batch unused: :meth:`uncol.methods.TrainingMethod.images_trained`).
        trained_unlabeled: of the drawn unlabeled images, those its steps trained on.
        best_step: the step of its validation-selected checkpoint.
    """

    method: str
    labeled: float
    seed: int
    cases: dict[str, dict[str, float | None]] = field(default_factory=dict)
    cpu_seconds: float | None = None
    iterations: int | None = None
    images_labeled: int | None = None
    images_unlabeled: int | None = None
    trained_labeled: int | None = None
    trained_unlabeled: int | None = None
    best_step: int | None = None

    def mean(self, metric: str) -> float | None:
        """Mean over test cases of the case means (the run's headline number)."""
        return defined_mean(list(self.cases.get(metric, {}).values()))


def group_runs(rows: Sequence[dict[str, Any]]) -> dict[tuple[float, str, int], RunResult]:
    """Runs keyed by ``(labeled, method, seed)``."""
    runs: dict[tuple[float, str, int], RunResult] = {}
    for row in rows:
        key = (float(row["labeled"]), str(row["method"]), int(row["seed"]))
        run = runs.get(key)
        if run is None:
            run = runs[key] = RunResult(
                key[1], key[0], key[2], cpu_seconds=row.get("cpu_seconds"), iterations=row.get("iterations"),
                images_labeled=row.get("images_labeled"), images_unlabeled=row.get("images_unlabeled"),
                trained_labeled=row.get("trained_labeled"), trained_unlabeled=row.get("trained_unlabeled"),
                best_step=row.get("best_step"),
            )
        for metric in METRIC_NAMES:
            run.cases.setdefault(metric, {})[str(row["case"])] = row.get(f"{metric}_mean")
    return runs
