"""Everything the report shows about one run, read from its folder (evaluating it when needed)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uncol.config import Config
from uncol.data.splits import load_splits
from uncol.errors import UncolError
from uncol.runs import RunPaths, load_run_config

__all__ = ["RunData", "load_run_data", "read_csv_columns"]


@dataclass
class RunData:
    """One run as the report sees it.

    Attributes:
        root: the run folder.
        name: the run's name (``config.yaml``'s ``name``).
        cfg: the run's configuration.
        split: the evaluated split.
        metrics: ``metrics_<split>.json`` (with its ``"uncertainty"`` entry).
        curves: ``uncertainty_<split>.json`` (reliability diagram, risk-coverage curves).
        summary: ``summary.json``, or ``None`` when training wrote none.
        split_counts: per split role (``labeled``, ``unlabeled``, ``val``, ``test``): ``{"cases",
            "groups"}`` counts (groups are patients).
        log: ``log.csv`` as columns (empty when absent).
        val: ``val.csv`` as columns (empty when absent).
    """

    root: Path
    name: str
    cfg: Config
    split: str
    metrics: dict[str, Any]
    curves: dict[str, Any]
    summary: dict[str, Any] | None
    split_counts: dict[str, dict[str, int]]
    log: dict[str, list[float]]
    val: dict[str, list[float]]

    @property
    def distance_unit(self) -> str:
        """Unit of HD95 and ASD: the report's own where it names one, else by convention."""
        return self.metrics.get("distance_unit") or ("voxels" if self.metrics.get("convention") == "medpy" else "mm")

    @property
    def class_names(self) -> list[str]:
        """Names of the foreground classes (``class 1``, ... where the config names none)."""
        k = self.cfg.data.num_classes
        names = list(self.cfg.data.class_names)
        if len(names) == k:
            return names[1:]
        return [f"class {c}" for c in range(1, k)]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_csv_columns(path: Path) -> dict[str, list[float]]:
    """A numeric CSV file as ``{column: values}``; empty or unparsable cells are NaN.

    Args:
        path: the file; a missing file gives ``{}``.

    Returns:
        The columns in file order.
    """
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {col: [_float(r.get(col) or "") for r in rows] for col in rows[0]}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UncolError(f"{path}: unreadable JSON ({e})") from None


def _needs_evaluation(metrics: dict[str, Any] | None, curves: dict[str, Any] | None) -> str | None:
    """Why the stored evaluation cannot be reported (``None`` when it can)."""
    if metrics is None:
        return "it has not been evaluated"
    if "uncertainty" not in metrics or curves is None:
        return "its evaluation predates the calibration and uncertainty metrics"
    return None


def load_run_data(
    run_dir: str | Path,
    split: str = "test",
    evaluate: bool = True,
    evaluator: Callable[[Path, str], dict[str, Any]] | None = None,
) -> RunData:
    """Read a run folder, evaluating ``split`` first when its metrics are missing or outdated.

    Args:
        run_dir: the run folder.
        split: ``val`` or ``test``.
        evaluate: evaluate the run when needed; when ``False`` a missing evaluation is an error that
            says what to run.
        evaluator: ``(run_dir, split) -> metrics``; default :func:`uncol.evaluation.evaluate_run`.

    Returns:
        The :class:`RunData`.

    Raises:
        UncolError: not a run folder, or not evaluated and ``evaluate`` is ``False``.
    """
    paths = RunPaths(run_dir)
    cfg = load_run_config(paths.root)
    metrics = _read_json(paths.metrics(split))
    curves = _read_json(paths.uncertainty(split))
    why = _needs_evaluation(metrics, curves)
    if why is not None:
        if not evaluate:
            raise UncolError(
                f"{paths.root}: {why} on the {split} split; run `uncol evaluate {paths.root} --split {split}` first"
            )
        if evaluator is None:
            from uncol.evaluation import evaluate_run

            def evaluator(run: Path, s: str) -> dict[str, Any]:
                return evaluate_run(run, s, show_progress=False)

        print(f"{paths.root}: {why} on the {split} split; evaluating it now")
        evaluator(paths.root, split)
        metrics = _read_json(paths.metrics(split))
        curves = _read_json(paths.uncertainty(split))
        if _needs_evaluation(metrics, curves) is not None:
            raise UncolError(f"{paths.root}: evaluation wrote no {paths.metrics(split).name} with uncertainty metrics")
    assert metrics is not None and curves is not None
    counts = load_splits(paths.splits).summary() if paths.splits.is_file() else {}
    return RunData(
        root=paths.root,
        name=cfg.name,
        cfg=cfg,
        split=split,
        metrics=metrics,
        curves=curves,
        summary=_read_json(paths.summary),
        split_counts=counts,
        log=read_csv_columns(paths.log_csv),
        val=read_csv_columns(paths.val_csv),
    )
