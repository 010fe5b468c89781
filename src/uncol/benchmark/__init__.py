"""Benchmark grids: methods x labeled amounts x seeds under one CPU-time budget (docs/benchmark.md).

``run_grid`` trains every run of a grid file that is not finished (resuming interrupted ones), then
writes ``results.csv`` (one row per run and test case), ``tables.md`` (mean ± std over seeds and
paired differences to a reference method with bootstrap intervals) and ``dice_vs_labeled.png``.

Modules: ``grid`` (the grid file), ``plan`` (runs, their configs and folder states), ``state`` (the
grid's memory between invocations), ``calibration`` (iterations that fit the budget), ``runner``
(running and reporting), ``results`` (the CSV), ``aggregate``/``stats``/``tables`` (the Markdown
tables), ``figure`` (the PNG).
"""

from __future__ import annotations

from uncol.benchmark.grid import BudgetSpec, GridSpec, MethodSpec, load_grid
from uncol.benchmark.runner import run_grid

__all__ = ["BudgetSpec", "GridSpec", "MethodSpec", "load_grid", "run_grid"]
