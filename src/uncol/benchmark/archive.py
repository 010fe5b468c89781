"""The grid's archive: the small record of every finished run, kept where it outlives the grid folder.

A grid takes more CPU hours than one working session has, and a session's run folders may not
survive it (checkpoints are hundreds of megabytes; ``runs/`` is not versioned). With ``archive:`` in
the grid file, each finished run's record (its config, splits, summary, validation log and test
metrics: a few kilobytes, no weights) and the grid state (the calibrated step counts, the commits)
are copied into the archive folder, which a project can commit. A grid started on a machine whose
grid folder is empty first restores that record, so finished runs are not trained again and the
remaining runs use exactly the same step counts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from uncol.atomic import atomic_write
from uncol.benchmark.plan import PlannedRun, RunStatus, run_status
from uncol.benchmark.state import STATE_NAME
from uncol.runs import RunPaths

#: Files of a finished run that the archive keeps: everything the report and a re-check need, no weights.
RECORD_FILES = ("config.yaml", "splits.json", "summary.json", "metrics_test.json", "metrics_val.json", "val.csv")
RUNS_FOLDER = "runs"


def _copy(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, lambda p: p.write_bytes(data))


def archive_state(folder: Path, archive: Path) -> None:
    """Copy the grid state (calibration, commits) into the archive."""
    state = folder / STATE_NAME
    if state.exists():
        _copy(state, archive / STATE_NAME)


def archive_output(path: Path, archive: Path) -> None:
    """Copy a report file of the grid folder (CSV, tables, figure) into the archive."""
    _copy(path, archive / path.name)


def archive_run(run: PlannedRun, archive: Path) -> Path:
    """Copy a finished run's record into ``archive/runs/<name>/``."""
    target = archive / RUNS_FOLDER / run.name
    for name in RECORD_FILES:
        src = run.run_dir / name
        if src.exists():
            _copy(src, target / name)
    return target


def restore(folder: Path, archive: Path, runs: list[PlannedRun]) -> list[str]:
    """Bring archived records into an empty or partial grid folder.

    The grid state is restored when the grid folder has none; a run is restored when its archived
    record is finished and the grid folder's copy is not (a partial run of an earlier machine is
    replaced by the finished record). Returns the names of the runs restored.
    """
    state = archive / STATE_NAME
    if state.exists() and not (folder / STATE_NAME).exists():
        _copy(state, folder / STATE_NAME)
    restored = []
    for run in runs:
        source = archive / RUNS_FOLDER / run.name
        if run_status(source) is not RunStatus.FINISHED or run_status(run.run_dir) is RunStatus.FINISHED:
            continue
        if run.run_dir.exists():
            shutil.rmtree(run.run_dir)
        for name in RECORD_FILES:
            if (source / name).exists():
                _copy(source / name, run.run_dir / name)
        RunPaths(run.run_dir).checkpoints.mkdir(parents=True, exist_ok=True)
        restored.append(run.name)
    return restored
