"""One CSV row per evaluated case: overlap, surface and calibration metrics side by side.

Written by evaluation as ``RUN/metrics_<split>_cases.csv`` for spreadsheets and plotting scripts;
the JSON report (``metrics_<split>.json``) holds the same values with their summaries.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uncol.atomic import atomic_write
from uncol.metrics import METRIC_NAMES

__all__ = ["case_rows", "write_case_table"]


def _overlap_columns(metrics: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """``<metric>_<class id>`` per class, then ``<metric>_mean`` over the classes with a value."""
    row: dict[str, float | None] = {}
    for m in METRIC_NAMES:
        defined = []
        for cid, values in metrics.items():
            v = values.get(m)
            row[f"{m}_{cid}"] = v
            if v is not None:
                defined.append(v)
        # The same per-case mean as the "mean" row of the JSON summary (uncol.metrics.summarize).
        row[f"{m}_mean"] = sum(defined) / len(defined) if defined else None
    return row


def case_rows(
    overlap_cases: Sequence[Mapping[str, Any]], calibration: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Flat rows, one per case, in the order of ``overlap_cases``.

    Args:
        overlap_cases: the ``"cases"`` list of a metrics report (``{"case", "metrics"}`` entries).
        calibration: optional flat calibration columns per case name (e.g. from
            :meth:`uncol.uncertainty_evaluation.UncertaintyEvaluation.case_row`).

    Returns:
        Dicts with ``case`` first, then the overlap/surface columns, then the calibration ones.

    Raises:
        ValueError: when ``calibration`` lacks a case.
    """
    rows = []
    for entry in overlap_cases:
        row: dict[str, Any] = {"case": entry["case"], **_overlap_columns(entry["metrics"])}
        if calibration is not None:
            if entry["case"] not in calibration:
                raise ValueError(f"no calibration values for case {entry['case']!r}")
            row.update(calibration[entry["case"]])
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # an undefined value is an empty cell, never 0
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_case_table(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as CSV atomically; the columns are the union of the rows' keys, first-seen order.

    Args:
        path: destination file.
        rows: one mapping per case.

    Returns:
        The destination path.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for row in rows:
                w.writerow([_cell(row.get(c)) for c in columns])

    return atomic_write(path, write)
