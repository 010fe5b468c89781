"""The runs of a grid, their configurations and the state of their run folders.

A run is one (method, labeled amount, seed) cell of the grid. Its folder ``GRID/runs/<name>`` tells
what is left to do: nothing (finished and scored), continue from its checkpoint, or start afresh.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from uncol.benchmark.grid import GridSpec, format_labeled
from uncol.config import Config
from uncol.errors import ConfigError, UncolError
from uncol.runs import RunPaths


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid.

    Attributes:
        method: the grid's method entry.
        labeled: the ``split.labeled`` value.
        seed: the seed given to every ``seed_keys`` option.
        run_dir: the run folder.
    """

    method: str
    labeled: float
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        """The run's name (its folder's name and its config's ``name``)."""
        return self.run_dir.name

    @property
    def pair(self) -> str:
        """The (method, labeled) pair that shares one calibrated iteration count."""
        return pair_key(self.method, self.labeled)

    def of_entry(self, method: str) -> PlannedRun:
        """The run of the same labeled amount and seed of another method entry."""
        return PlannedRun(method, self.labeled, self.seed, self.run_dir.parent / run_name(method, self.labeled, self.seed))

    def describe(self) -> str:
        """``method labeled=L seed=S`` for progress lines."""
        return f"{self.method} labeled={format_labeled(self.labeled)} seed={self.seed}"


class RunStatus(Enum):
    """What a run folder needs."""

    NEW = "new"  # no checkpoint: start from scratch (partial files are cleared first)
    RESUME = "resume"  # a checkpoint, not yet finished and scored on the test split
    FINISHED = "finished"  # trained to its iterations and scored on the test split


def pair_key(method: str, labeled: float) -> str:
    """Key of a (method, labeled) pair in the grid state: ``supervised/7``."""
    return f"{method}/{format_labeled(labeled)}"


def run_name(method: str, labeled: float, seed: int) -> str:
    """A run's name and folder name: ``<entry>_l<labeled>_s<seed>``."""
    return f"{method}_l{format_labeled(labeled)}_s{seed}"


def step_source(grid: GridSpec, run: PlannedRun) -> PlannedRun:
    """The run whose step count ``run`` trains: itself, or the same cell of its ``branch_from`` entry."""
    source = grid.method(run.method).branch_from
    return run if source is None else run.of_entry(source)


def given_iterations(grid: GridSpec, run: PlannedRun) -> int | None:
    """``run``'s step count when the grid file fixes it (``iterations``, or the budget at ``cpu_per_step``,
    also through ``branch_from``); ``None`` when it comes from its pair's calibration."""
    method = grid.method(step_source(grid, run).method)
    if method.iterations is not None:
        return method.iterations
    if method.cpu_per_step is not None and grid.budget is not None:
        return iterations_for_budget(grid.budget.cpu_seconds, method.cpu_per_step)
    return None


def runs_folder(out: Path) -> Path:
    """The folder that holds a grid's run folders."""
    return out / "runs"


def plan_runs(grid: GridSpec, out: Path) -> list[PlannedRun]:
    """Every run of the grid in execution order.

    Seeds are the outer loop, so that an interrupted grid already holds complete comparisons of every
    method and labeled amount for its first seeds; then labeled amounts ascending, then methods in
    file order.
    """
    runs = []
    for seed in grid.seeds:
        for labeled in grid.labeled_values:
            for m in grid.methods:
                if m.runs_at(labeled, seed):
                    runs.append(PlannedRun(m.name, labeled, seed, runs_folder(out) / run_name(m.name, labeled, seed)))
    return runs


def run_overrides(grid: GridSpec, run: PlannedRun, iterations: int) -> list[str]:
    """The overrides that turn a method's config into this run's: grid ``set``, method ``set``, then the cell."""
    method = grid.method(run.method)
    cell = [f"split.labeled={format_labeled(run.labeled)}"]
    cell += [f"{key}={run.seed}" for key in grid.seed_keys]
    cell += [f"output_dir={run.run_dir.parent}", f"name={run.name}", f"train.iterations={iterations}"]
    if grid.budget is not None and grid.budget.validations:
        cell.append(f"train.val_every={max(1, iterations // grid.budget.validations)}")
    return [*grid.overrides, *method.overrides, *cell]


def run_config(grid: GridSpec, run: PlannedRun, iterations: int) -> Config:
    """The resolved configuration of a run.

    Raises:
        ConfigError: naming the grid file and method entry when the config or an override is invalid.
    """
    from uncol.api import resolve_config

    try:
        return resolve_config(grid.method(run.method).config, run_overrides(grid, run, iterations))
    except ConfigError as e:
        raise ConfigError(f"{grid.path}: methods.{run.method}: {e}") from None


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``summary.json``, or ``None`` when it has none yet."""
    path = RunPaths(run_dir).summary
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UncolError(f"{path}: unreadable run summary ({e})") from None
    if not isinstance(summary, dict):
        raise UncolError(f"{path}: not a run summary")
    return summary


def run_status(run_dir: Path) -> RunStatus:
    """Whether a run folder is finished, resumable or to be started."""
    paths = RunPaths(run_dir)
    summary = read_summary(run_dir)
    trained = summary is not None and summary.get("steps_done") == summary.get("iterations")
    if trained and paths.metrics("test").exists():
        return RunStatus.FINISHED
    if paths.latest.exists():
        return RunStatus.RESUME
    return RunStatus.NEW


def iterations_for_budget(budget_cpu_seconds: float, cpu_per_step: float) -> int:
    """Steps that fit a CPU budget at a measured cost per step (at least one)."""
    if not cpu_per_step > 0 or not math.isfinite(cpu_per_step):
        raise UncolError(f"cannot fit a budget to a measured cost of {cpu_per_step} CPU seconds per step")
    return max(1, math.floor(budget_cpu_seconds / cpu_per_step))
