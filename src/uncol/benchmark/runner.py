"""Running a grid: one run after another, skipping finished runs and resuming an interrupted one.

A grid is restartable at any moment: run folders hold checkpoints (the engine's), the grid state
holds the calibrated iteration counts and the commits, and every output file is written
atomically. Starting the same grid again continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from uncol.atomic import atomic_write_text
from uncol.benchmark.archive import archive_output, archive_run, archive_state, restore
from uncol.benchmark.calibration import calibrate
from uncol.benchmark.figure import plot_dice_vs_labeled
from uncol.benchmark.grid import BudgetSpec, GridSpec, format_labeled, load_grid, path_of, shown_path
from uncol.benchmark.plan import (
    PlannedRun,
    RunStatus,
    given_iterations,
    iterations_for_budget,
    plan_runs,
    read_summary,
    run_config,
    run_status,
    step_source,
)
from uncol.benchmark.results import collect_rows, write_csv
from uncol.benchmark.state import STATE_NAME, GridState, RunClaim, code_version
from uncol.benchmark.tables import render_tables
from uncol.config import Config
from uncol.errors import ConfigError, UncolError
from uncol.methods import get_method
from uncol.runs import RunPaths, config_differences, load_run_config

Echo = Callable[[str], None]
RESULTS_CSV = "results.csv"
TABLES_MD = "tables.md"
FIGURE_PNG = "dice_vs_labeled.png"


def run_grid(
    grid: str | Path | GridSpec,
    out: str | Path | None = None,
    *,
    only_report: bool = False,
    dry_run: bool = False,
    show_progress: bool = True,
    echo: Echo = print,
    methods: Sequence[str] | None = None,
    labeled: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Train every run of a grid that is not finished, then write its CSV, tables and figure.

    Args:
        grid: a grid file (``docs/benchmark.md``) or a parsed grid.
        out: the grid folder; default the grid's ``out``.
        only_report: train nothing; rebuild the outputs from the finished runs.
        dry_run: print the plan (each run's state and iterations) and write nothing.
        show_progress: draw the training progress bars.
        echo: receives one line per run and event.
        methods: train only the runs of these method entries this time (the others stay as they are,
            the report still covers every finished run); ``None``: all.
        labeled: train only the runs at these labeled amounts this time; ``None``: all.

    Returns:
        ``{"out", "runs": [{"name", "method", "labeled", "seed", "status"}, ...]}``, plus
        ``results_csv``, ``tables`` and ``figure`` (paths) and ``rows`` unless ``dry_run``.
    """
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    folder = path_of(Path(out) if out is not None else spec.out)
    runs = plan_runs(spec, folder)
    selected = select_runs(spec, runs, methods, labeled)
    archive = None if spec.archive is None else path_of(spec.archive)
    if archive is not None and not dry_run:
        restored = restore(folder, archive, runs)
        if restored:
            echo(f"restored {len(restored)} finished run(s) from the archive {archive}")
    if dry_run:
        _print_plan(spec, folder, selected, echo)
    elif not only_report:
        _GridRun(spec, folder, show_progress, echo, archive).train(runs, selected)
    result: dict[str, Any] = {
        "out": str(folder),
        "runs": [
            {"name": r.name, "method": r.method, "labeled": r.labeled, "seed": r.seed,
             "status": run_status(r.run_dir).value}
            for r in runs
        ],
    }
    if not dry_run:
        report = write_report(spec, folder, runs, echo)
        result.update(report)
        if archive is not None:
            # Also the runs that a process without the archive setting finished (idempotent).
            for run in runs:
                if run_status(run.run_dir) is RunStatus.FINISHED:
                    archive_run(run, archive)
            archive_state(folder, archive)
            for key in ("results_csv", "tables", "figure"):
                archive_output(Path(report[key]), archive)
    return result


class _GridRun:
    """Training of the runs of one grid in one process."""

    def __init__(self, spec: GridSpec, folder: Path, show_progress: bool, echo: Echo, archive: Path | None = None) -> None:
        self.archive = archive
        self.spec = spec
        self.folder = folder
        self.show_progress = show_progress
        self.echo = echo
        self.state = GridState(folder)
        self.version = code_version()

    def train(self, runs: list[PlannedRun], selected: list[PlannedRun] | None = None) -> None:
        """Train ``selected`` (default: all of ``runs``) in order; calibrate every pair of ``runs`` first."""
        # Every pair's step cost is measured before any training, back to back, so that all of them
        # see the same load on a shared machine (CPU time per step grows with contention): also the
        # pairs of runs left out of this invocation.
        for run in runs:
            self.iterations(run)
        if self.archive is not None:
            archive_state(self.folder, self.archive)
        todo = runs if selected is None else selected
        for i, run in enumerate(todo, 1):
            self.run_one(run, f"[{i}/{len(todo)}] {run.describe()}")

    def run_one(self, run: PlannedRun, prefix: str) -> None:
        cfg = run_config(self.spec, run, self.iterations(run))
        with RunClaim(self.folder, run.name) as claim:
            if not claim.try_claim():
                self.echo(f"{prefix}: left to the other 'uncol benchmark' process that is training it")
                return
            self._run_claimed(run, cfg, prefix)

    def _run_claimed(self, run: PlannedRun, cfg: Config, prefix: str) -> None:
        # The status is read after the claim: another process may have finished the run meanwhile.
        status = run_status(run.run_dir)
        if status is RunStatus.FINISHED:
            self._check_finished_config(run, cfg)
            self.echo(f"{prefix}: skipped (finished: {_run_text(run.run_dir)})")
            return
        from uncol import api

        branch = None
        if status is RunStatus.RESUME:
            self.echo(f"{prefix}: resumed from its checkpoint ({cfg.train.iterations} steps in all)")
            self.state.record_resume(run.name, self.version)
        else:
            if run.run_dir.exists():
                # Files of a run killed before its first checkpoint: nothing to continue from.
                shutil.rmtree(run.run_dir)
            branch = self.branch_point(run)
            how = "" if branch is None else f", from {branch.parent.parent.name} at step {branch.stem[4:]}"
            self.echo(f"{prefix}: started ({cfg.train.iterations} steps{how})")
            self.state.record_start(run.name, self.version)
        try:
            api.train(
                cfg, resume=status is RunStatus.RESUME, run_dir=run.run_dir, show_progress=self.show_progress,
                branch_from=branch,
            )
        except ConfigError as e:
            raise ConfigError(
                f"{e}. The grid file or {self.state.path} changed since this run started: restore them, "
                "or delete the run folder to train it again"
            ) from None
        if run_status(run.run_dir) is not RunStatus.FINISHED:
            raise UncolError(f"{run.run_dir}: training ended without a test evaluation; the benchmark needs a test split")
        self.echo(f"{prefix}: done ({_run_text(run.run_dir)})")
        if self.archive is not None:
            archive_run(run, self.archive)
            archive_state(self.folder, self.archive)

    def branch_point(self, run: PlannedRun) -> Path | None:
        """The checkpoint a ``branch_from`` entry's run starts from, or ``None`` to train from scratch.

        The source run of the same cell keeps one branch point (``checkpoints/step<N>.pt``, written when it
        passed the step where the options that may differ start to matter). When there is none (the source
        was restored from the archive, which keeps no checkpoints, or has not reached it), the run trains
        from scratch: on a CPU the same steps give the same weights, only at the cost of training them again.
        """
        source = step_source(self.spec, run)
        if source is run:
            return None
        points = RunPaths(source.run_dir).branch_points()
        if len(points) != 1:
            self.echo(
                f"{run.name}: no single branch point in {source.name}/checkpoints ({len(points)} found): "
                "trained from scratch"
            )
            return None
        return points[0]

    def iterations(self, run: PlannedRun) -> int:
        """The pair's fixed or calibrated iteration count, calibrating it on first use.

        A ``branch_from`` entry trains the step count of its source entry's run of the same labeled amount.
        """
        given = given_iterations(self.spec, run)
        if given is not None:
            return given
        run = step_source(self.spec, run)
        budget = self.spec.budget
        assert budget is not None  # load_grid requires a budget for methods without iterations
        stored = self.state.calibration(run.pair)
        if stored is None:
            # Under the grid lock: a second process waits for this calibration instead of repeating it.
            with self.state.locked():
                stored = self.state.calibration(run.pair)
                if stored is None:
                    return self._calibrate(run, budget)
        if stored.get("budget_cpu_seconds") != budget.cpu_seconds:
            raise UncolError(
                f"{self.state.path}: calibration.{run.pair} fits a budget of {stored.get('budget_cpu_seconds')} "
                f"CPU seconds, the grid now gives {budget.cpu_seconds}: restore budget.cpu_seconds, or use "
                "another grid folder (--out) for the new budget"
            )
        return int(stored["iterations"])

    def _calibrate(self, run: PlannedRun, budget: BudgetSpec) -> int:
        entry = _derived_calibration(self.spec, run.pair)
        if entry is not None:
            self.state.set_calibration(run.pair, entry)
            self.echo(
                f"{run.pair}: {entry['cpu_per_step']:.3g} CPU s/step as measured in {shown_path(budget.calibration_from)} "
                f"-> {entry['iterations']} steps in {budget.cpu_seconds:g} CPU s"
            )
            return int(entry["iterations"])
        self.echo(f"calibrating {run.pair}: {budget.calibration_steps} steps")
        probe = run_config(self.spec, run, budget.calibration_steps + 1)
        work = self.folder / "calibration" / run.name
        entry = calibrate(probe, work, budget.calibration_steps, budget.cpu_seconds, self.version)
        self.state.set_calibration(run.pair, entry)
        self.echo(
            f"calibrated {run.pair}: {entry['cpu_per_step']:.3g} CPU s/step -> {entry['iterations']} steps "
            f"in {budget.cpu_seconds:g} CPU s"
        )
        return int(entry["iterations"])

    def _check_finished_config(self, run: PlannedRun, cfg: Config) -> None:
        diff = config_differences(load_run_config(run.run_dir), cfg, get_method(cfg.method.name).speed_options())
        if diff:
            raise UncolError(
                f"{run.run_dir}: finished with a configuration that differs from the grid's in {', '.join(diff)}; "
                f"restore the grid file (and {STATE_NAME}), or delete the run folder to train it again"
            )


def scaled_calibration(measured: dict[str, Any], budget: BudgetSpec, source: Path) -> dict[str, Any]:
    """A calibration entry of ``budget`` from a pair's cost measured by another grid's calibration.

    Args:
        measured: the other grid's calibration entry of the pair (its ``cpu_per_step`` and measurement).
        budget: this grid's budget.
        source: the other grid's state file, recorded in the entry.

    Returns:
        The entry, with the iterations of ``budget`` at the measured cost and the measurement's own
        ``measured_steps``, ``calibration_steps`` and code version.
    """
    cost = float(measured["cpu_per_step"])
    return {
        "iterations": iterations_for_budget(budget.cpu_seconds, cost),
        "cpu_per_step": cost,
        "measured_steps": measured.get("measured_steps"),
        "budget_cpu_seconds": budget.cpu_seconds,
        "calibration_steps": measured.get("calibration_steps"),
        "version": measured.get("version"),
        "calibrated_in": shown_path(source),
    }


def select_runs(
    spec: GridSpec, runs: list[PlannedRun], methods: Sequence[str] | None, labeled: Sequence[float] | None
) -> list[PlannedRun]:
    """The runs of the given method entries and labeled amounts, in the grid's order.

    Raises:
        ConfigError: a method entry or labeled amount that the grid does not have, naming the grid file
            and listing what it has.
    """
    names = [m.name for m in spec.methods]
    unknown = [m for m in methods or () if m not in names]
    if unknown:
        raise ConfigError(f"{spec.path}: no method entry {', '.join(map(repr, unknown))}; the grid has {', '.join(names)}")
    values = spec.labeled_values
    missing = [v for v in labeled or () if float(v) not in values]
    if missing:
        have = ", ".join(format_labeled(v) for v in values)
        raise ConfigError(
            f"{spec.path}: labeled {', '.join(format_labeled(v) for v in missing)} is not in the grid (it has {have})"
        )
    amounts = None if labeled is None else {float(v) for v in labeled}
    return [r for r in runs if (methods is None or r.method in methods) and (amounts is None or r.labeled in amounts)]


def _run_text(run_dir: Path) -> str:
    """``test Dice 81.23%, 12.3 CPU min, 400 steps`` of a run folder."""
    summary = read_summary(run_dir) or {}
    metrics_path = RunPaths(run_dir).metrics("test")
    dice = None
    if metrics_path.exists():
        dice = json.loads(metrics_path.read_text())["summary"]["mean"]["dice"]["mean"]
    dice_text = "n/a" if dice is None else f"{dice * 100:.2f}%"
    cpu = summary.get("cpu_seconds")
    cpu_text = "n/a" if cpu is None else f"{cpu / 60:.1f}"
    return f"test Dice {dice_text}, {cpu_text} CPU min, {summary.get('steps_done')} steps"


def _print_plan(spec: GridSpec, folder: Path, runs: list[PlannedRun], echo: Echo) -> None:
    state = GridState(folder)
    echo(f"grid {spec.name}: {len(runs)} runs in {folder}")
    for i, run in enumerate(runs, 1):
        source = step_source(spec, run)
        method = spec.method(source.method)
        given = given_iterations(spec, run)
        stored = state.calibration(source.pair)
        if given is not None:
            how = "fixed" if method.iterations is not None else f"at the grid's cpu_per_step {method.cpu_per_step:g}"
            steps = f"{given} steps ({how})"
        elif stored is not None:
            steps = f"{stored['iterations']} steps (calibrated)"
        elif (derived := _derived_calibration(spec, source.pair)) is not None:
            steps = f"{derived['iterations']} steps (at the cost measured in {shown_path(spec.budget.calibration_from)})"
            stored = derived
        else:
            steps = "steps: to calibrate"
        # Surfaces config errors before any training.
        run_config(spec, run, given or (int(stored["iterations"]) if stored is not None else 1))
        if source is not run:
            steps += f", branched from {source.method}"
        echo(f"[{i}/{len(runs)}] {run.describe()}: {run_status(run.run_dir).value}, {steps}")


def _derived_calibration(spec: GridSpec, pair: str) -> dict[str, Any] | None:
    """The calibration entry ``budget.calibration_from`` gives ``pair``, or ``None``."""
    if spec.budget is None or spec.budget.calibration_from is None:
        return None
    measured = GridState(spec.budget.calibration_from.parent).calibration(pair)
    return None if measured is None else scaled_calibration(measured, spec.budget, spec.budget.calibration_from)


def budget_note(spec: GridSpec, state: GridState) -> str:
    """The sentence of ``tables.md`` that states the CPU budget each run got."""
    fixed = [f"{m.name} ({m.iterations} steps)" for m in spec.methods if m.iterations is not None]
    branched = [f"{m.name} (from {m.branch_from})" for m in spec.methods if m.branch_from is not None]
    branch_text = "" if not branched else (
        " Branched entries continue their source's run of the same labeled amount and seed from its branch "
        f"point, with its step count (equal steps, not equal CPU time): {', '.join(branched)}."
    )
    if spec.budget is None:
        return (
            "No CPU-time budget in this grid: every method trains a fixed number of steps, "
            f"{', '.join(fixed)}; the CPU min column shows what each run used." + branch_text
        )
    b = spec.budget
    # Only the pairs whose runs take their step count from the calibration (not a fixed or given one).
    calibrated = {m.name for m in spec.methods if m.calibrated}
    pairs = [
        f"{pair}: {entry['iterations']} steps at {entry['cpu_per_step']:.3g} CPU s/step"
        for pair, entry in sorted(state.data["calibration"].items())
        if pair.rsplit("/", 1)[0] in calibrated
    ]
    text = (
        f"Every method in this grid gets the same CPU-time budget: {b.cpu_seconds:g} CPU seconds "
        f"({b.cpu_seconds / 60:.1f} CPU minutes) of training steps per run, each (method, labeled) pair's "
        f"step count calibrated to it ({b.calibration_steps}-step measurement; docs/benchmark.md)"
    )
    text += f": {'; '.join(pairs)}." if pairs else "."
    reused = sorted(
        pair for pair, entry in state.data["calibration"].items()
        if entry.get("calibrated_in") and pair.rsplit("/", 1)[0] in calibrated
    )
    if reused:
        text += (
            f" The step costs of {', '.join(reused)} are those measured by the calibration of "
            f"{shown_path(b.calibration_from) if b.calibration_from else 'another grid'}, scaled to this budget."
        )
    given = [
        f"{m.name}: {iterations_for_budget(b.cpu_seconds, m.cpu_per_step)} steps at {m.cpu_per_step:.3g} CPU s/step"
        for m in spec.methods if m.cpu_per_step is not None
    ]
    if given:
        text += f" Step costs measured on finished runs and given in the grid file instead: {'; '.join(given)}."
    if fixed:
        text += f" Fixed step counts, not calibrated to the budget: {', '.join(fixed)}."
    return text + branch_text + " Validation and checkpoints come on top and are included in the CPU min column."


def write_report(spec: GridSpec, folder: Path, runs: list[PlannedRun], echo: Echo) -> dict[str, Any]:
    """Write ``results.csv``, ``tables.md`` and ``dice_vs_labeled.png`` from the finished runs."""
    state = GridState(folder)
    rows = collect_rows(spec.name, runs, state)
    csv_path = write_csv(rows, folder / RESULTS_CSV)
    cells = list(dict.fromkeys((r.labeled, r.method) for r in sorted(runs, key=lambda r: r.labeled)))
    planned = Counter((r.labeled, r.method) for r in runs)
    text = render_tables(
        rows, dataset=spec.name, cells=cells, seeds=spec.seeds, reference=spec.reference,
        budget_note=budget_note(spec, state), planned=planned, compare_to=spec.compare_to,
    )
    tables_path = atomic_write_text(folder / TABLES_MD, text)
    figure_path = plot_dice_vs_labeled(rows, [m.name for m in spec.methods], folder / FIGURE_PNG, spec.name)
    finished = len({(r["labeled"], r["method"], r["seed"]) for r in rows})
    echo(f"report: {finished}/{len(runs)} runs finished; {csv_path}, {tables_path}, {figure_path}")
    return {"results_csv": str(csv_path), "tables": str(tables_path), "figure": str(figure_path), "rows": len(rows)}

