"""The grid's results: one row per finished run and test case, written to ``results.csv``.

A row holds the case's metrics per foreground class and their mean over classes (the case mean that
``metrics_test.json``'s ``mean`` row averages), with the run's CPU seconds, iterations, images drawn
and trained on, selected step and the commit it was trained at. Runs without ``metrics_test.json`` give no rows.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uncol.atomic import atomic_write
from uncol.benchmark.plan import PlannedRun, RunStatus, read_summary, run_status
from uncol.benchmark.state import GridState
from uncol.benchmark.stats import defined_mean
from uncol.errors import UncolError
from uncol.methods.registry import summary_images_trained
from uncol.metrics.case_metrics import METRIC_NAMES
from uncol.runs import RunPaths, load_run_config

Row = dict[str, Any]
KEY_COLUMNS = ("dataset", "labeled", "method", "seed", "case")
RUN_COLUMNS = (
    "cpu_seconds", "iterations", "images_labeled", "images_unlabeled", "trained_labeled", "trained_unlabeled",
    "best_step", "commit", "dirty", "convention", "distance_unit",
)


def class_columns(class_names: Sequence[str], num_classes: int) -> dict[str, str]:
    """Column suffix of each foreground class id: its name where names are given and usable, else its id."""
    ids = [str(c) for c in range(1, num_classes)]
    names = [re.sub(r"[^A-Za-z0-9_]+", "_", n).strip("_") for n in class_names[1:]]
    # Names must be distinct, non-empty and not 'mean' (the mean over classes has that column).
    if len(names) == len(ids) and len(set(names)) == len(names) and all(n and n != "mean" for n in names):
        return dict(zip(ids, names, strict=True))
    return {i: f"class{i}" for i in ids}


def run_rows(dataset: str, run: PlannedRun, state: GridState) -> list[Row]:
    """The rows of one finished run (empty when it is not finished)."""
    if run_status(run.run_dir) is not RunStatus.FINISHED:
        return []
    paths = RunPaths(run.run_dir)
    try:
        report = json.loads(paths.metrics("test").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UncolError(f"{paths.metrics('test')}: unreadable metrics ({e})") from None
    cfg = load_run_config(run.run_dir)
    columns = class_columns(cfg.data.class_names, cfg.data.num_classes)
    summary = read_summary(run.run_dir) or {}
    seen = summary.get("images_seen") or {}
    trained = summary_images_trained(cfg, summary) or {}
    started = (state.run(run.name) or {}).get("started") or {}
    run_values = {
        "cpu_seconds": summary.get("cpu_seconds"),
        "iterations": summary.get("iterations"),
        "images_labeled": seen.get("labeled"),
        "images_unlabeled": seen.get("unlabeled"),
        "trained_labeled": trained.get("labeled"),
        "trained_unlabeled": trained.get("unlabeled"),
        "best_step": summary.get("best_step"),
        "commit": started.get("commit"),
        "dirty": started.get("dirty"),
        "convention": report.get("convention"),
        # HD95/ASD are in mm only where the data carry a spacing (SSL4MIS HDF5 files do not: voxels).
        "distance_unit": report.get("distance_unit"),
    }
    rows = []
    for case in report.get("cases", []):
        row: Row = {"dataset": dataset, "labeled": run.labeled, "method": run.method, "seed": run.seed,
                    "case": case["case"]}
        per_class = case["metrics"]
        for metric in METRIC_NAMES:
            for cid, col in columns.items():
                row[f"{metric}_{col}"] = per_class.get(cid, {}).get(metric)
        for metric in METRIC_NAMES:
            row[f"{metric}_mean"] = defined_mean([per_class[c].get(metric) for c in per_class])
        rows.append(row | run_values)
    return rows


def collect_rows(dataset: str, runs: Sequence[PlannedRun], state: GridState) -> list[Row]:
    """Rows of every finished run of the grid, in plan order."""
    return [row for run in runs for row in run_rows(dataset, run, state)]


def csv_columns(rows: Sequence[Row]) -> list[str]:
    """Key columns, per-class metric columns (metric-major, in first-seen order), means, run columns."""
    per_class: dict[str, list[str]] = {m: [] for m in METRIC_NAMES}
    for row in rows:
        for key in row:
            for m in METRIC_NAMES:
                if key.startswith(f"{m}_") and key != f"{m}_mean" and key not in per_class[m]:
                    per_class[m].append(key)
    means = [f"{m}_mean" for m in METRIC_NAMES]
    return [*KEY_COLUMNS, *(c for m in METRIC_NAMES for c in per_class[m]), *means, *RUN_COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() else repr(value)
    return str(value)


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    """Write the rows to ``path`` atomically (undefined values as empty cells)."""
    columns = csv_columns(rows)

    def write(p: Path) -> None:
        with open(p, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for row in rows:
                w.writerow([_cell(row.get(c)) for c in columns])

    return atomic_write(path, write)
