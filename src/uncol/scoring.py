"""Score prediction files against ground-truth files (``uncol score PRED GT``).

Both arguments are files, or both are folders whose files are matched by case name (the file name
without its extension(s), e.g. ``case_01`` for ``case_01.nii.gz``). Label maps are read with
:func:`uncol.data.io.read_mask`, scored with :func:`uncol.metrics.compute_case_metrics` and the
result is the :func:`uncol.metrics.summarize` report, plus the unit of its distances and the pairs
that could not be scored: a bad or missing file fails its own case only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uncol.atomic import atomic_write_text
from uncol.data.io import read_mask
from uncol.data.readers.common import case_id_of, format_of
from uncol.errors import DataError
from uncol.metrics import (
    EMPTY_BOTH_POLICIES,
    EMPTY_ONE_POLICIES,
    CaseResult,
    compute_case_metrics,
    summarize,
    validate_spacing,
)
from uncol.metrics.surface import CONVENTIONS

__all__ = ["combined_unit", "distance_unit", "score", "write_json"]

# Unmatched case names listed in an error message before it says "and N more".
_MAX_LISTED = 20


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown if len(names) <= _MAX_LISTED else f"{shown} and {len(names) - _MAX_LISTED} more"


def _cases_in(folder: Path) -> dict[str, Path]:
    """Supported label files of a folder by case name (other and hidden files are ignored)."""
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or format_of(path) is None:
            continue
        name = case_id_of(path)
        if name in cases:
            raise DataError(folder, f"two files for case {name!r}: {cases[name].name} and {path.name}")
        cases[name] = path
    if not cases:
        raise DataError(
            folder, "no label files found (expected .nii.gz, .nii, .png, .jpg, .tif, .bmp, .gif or .h5)"
        )
    return cases


def _failure(name: str, pred: Path | None, gt: Path | None, error: str) -> dict[str, Any]:
    """A case that could not be scored, as listed in the report's ``failures``."""
    return {
        "case": name,
        "prediction": None if pred is None else str(pred),
        "reference": None if gt is None else str(gt),
        "error": error,
    }


def _pairs(pred: Path, gt: Path) -> tuple[list[tuple[str, Path, Path]], list[dict[str, Any]]]:
    """``(case name, prediction file, reference file)`` for two files or two folders, and the
    unmatched cases of two folders as failures."""
    for path in (pred, gt):
        if not path.exists():
            raise DataError(path, "no such file or folder")
    if pred.is_file() and gt.is_file():
        return [(case_id_of(gt), pred, gt)], []
    if not (pred.is_dir() and gt.is_dir()):
        raise DataError(
            pred, f"prediction and ground truth must both be files or both be folders (ground truth: {gt})"
        )
    pred_cases, gt_cases = _cases_in(pred), _cases_in(gt)
    failures = [
        _failure(name, None, gt_cases[name], f"no prediction for this case in {pred}")
        for name in sorted(set(gt_cases) - set(pred_cases))
    ] + [
        _failure(name, pred_cases[name], None, f"no ground-truth file for this case in {gt}")
        for name in sorted(set(pred_cases) - set(gt_cases))
    ]
    pairs = [(name, pred_cases[name], gt_cases[name]) for name in sorted(gt_cases) if name in pred_cases]
    return pairs, failures


def _case_spacing(
    spacing: Sequence[float] | None, header: tuple[float, ...] | None, ndim: int, gt: Path
) -> tuple[float, ...]:
    """The argument wins, then the GT header, then 1.0 per axis."""
    chosen = spacing if spacing is not None else header
    try:
        return validate_spacing(chosen, ndim)
    except ValueError as exc:
        source = "--spacing" if spacing is not None else "header spacing"
        raise DataError(gt, f"{source}: {exc}") from None


def _pad_classes(res: CaseResult, num_classes: int, convention: str, empty_both: str, empty_one: str) -> None:
    """Add the classes a case was not scored for (all absent from both sides of it).

    Cases are scored with their own class count as they are read, so that the files need not be
    read twice to learn the overall class count; the missing classes are empty on both sides, and
    their entries come from scoring an empty pair under the same policy.
    """
    blank = np.zeros((1, 1), dtype=np.uint8)
    filler = compute_case_metrics(
        blank, blank, num_classes, convention=convention, empty_both=empty_both, empty_one=empty_one
    )
    for cid, values in filler.metrics.items():
        if cid not in res.metrics:
            res.metrics[cid] = values
            res.empty[cid] = filler.empty[cid]


def score(
    pred: str | Path,
    gt: str | Path,
    spacing: Sequence[float] | None = None,
    convention: str = "standard",
    num_classes: int | None = None,
    empty_both: str = "skip",
    empty_one: str = "zero",
) -> dict[str, Any]:
    """Score predicted label maps against ground truth.

    Args:
        pred: a prediction file, or a folder of them.
        gt: the ground-truth file, or a folder with one file per prediction (matched by case name).
        spacing: voxel spacing to use for every case; by default each GT file's header spacing, or
            1.0 per axis where the format stores none. Ignored by the ``"medpy"`` convention.
        convention: ``"standard"`` or ``"medpy"`` (see ``docs/metrics.md``).
        num_classes: number of classes including background; by default the largest label found
            in any file plus one (at least 2).
        empty_both: standard-convention policy for a class absent from both (``"skip"``/``"perfect"``).
        empty_one: standard-convention policy for a class in only one of them (``"zero"``/``"skip"``).

    Returns:
        The :func:`uncol.metrics.summarize` report of the cases that could be scored, plus
        ``distance_unit`` (``mm`` when every case had a spacing, from ``spacing`` or its GT
        header; ``px`` for 2D and ``vox`` for 3D files without one or with the medpy convention;
        ``mixed`` when cases differ) and ``failures``: one entry ``{case, prediction, reference,
        error}`` per case that could not be scored (an unreadable file, a case without prediction
        or without ground truth, different shapes, labels outside ``[0, num_classes)``, a bad
        spacing); the other cases are scored.

    Raises:
        DataError: a missing argument path, a file paired with a folder, a folder without label
            files, no case that could be scored at all, an invalid option.
    """
    if convention not in CONVENTIONS:
        raise DataError(None, f"unknown convention {convention!r} (expected one of {', '.join(CONVENTIONS)})")
    if empty_both not in EMPTY_BOTH_POLICIES:
        raise DataError(
            None, f"empty_both must be one of {', '.join(EMPTY_BOTH_POLICIES)}, got {empty_both!r}"
        )
    if empty_one not in EMPTY_ONE_POLICIES:
        raise DataError(None, f"empty_one must be one of {', '.join(EMPTY_ONE_POLICIES)}, got {empty_one!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise DataError(None, f"num_classes must be an integer >= 2, got {num_classes!r}")

    results: list[tuple[str, CaseResult]] = []
    units: set[str] = set()
    pairs, failures = _pairs(Path(pred), Path(gt))
    for name, pred_path, gt_path in pairs:
        try:
            res, unit = _score_pair(
                pred_path, gt_path, spacing, convention, num_classes, empty_both, empty_one
            )
        except DataError as exc:
            failures.append(_failure(name, pred_path, gt_path, str(exc)))
            continue
        results.append((name, res))
        units.add(unit)
    if not results:
        listed = _listing([f"{f['case']} ({f['error']})" for f in failures])
        raise DataError(Path(pred), f"no case could be scored: {listed}")

    found_classes = max(2, *(len(res.metrics) + 1 for _, res in results))
    total_classes = num_classes if num_classes is not None else found_classes
    for _, res in results:
        _pad_classes(res, total_classes, convention, empty_both, empty_one)
    report = summarize(results, total_classes, convention)
    report["distance_unit"] = combined_unit(units)
    report["failures"] = failures
    return report


def distance_unit(convention: str, spacing: Sequence[float] | None, header: Sequence[float] | None, ndim: int) -> str:
    """The unit of one case's HD95 and ASD: ``mm`` with a physical spacing (given, or stored in the
    file) outside the medpy convention, else ``px`` (2D) or ``vox`` (3D)."""
    if convention != "medpy" and (spacing is not None or header is not None):
        return "mm"
    return "px" if ndim == 2 else "vox"


def combined_unit(units: Iterable[str]) -> str:
    """The distance unit of a report: the cases' common unit, or ``mixed``."""
    found = set(units)
    return found.pop() if len(found) == 1 else "mixed"


def _score_pair(
    pred_path: Path,
    gt_path: Path,
    spacing: Sequence[float] | None,
    convention: str,
    num_classes: int | None,
    empty_both: str,
    empty_one: str,
) -> tuple[CaseResult, str]:
    """Metrics of one case with its own class count, and the unit of its distances.

    Raises:
        DataError: an unreadable file, different shapes, labels out of range, a bad spacing.
    """
    p, _ = read_mask(pred_path)
    g, header_spacing = read_mask(gt_path)
    if p.shape != g.shape:
        raise DataError(
            pred_path, f"prediction shape {p.shape} differs from ground truth {gt_path} shape {g.shape}"
        )
    if g.ndim not in (2, 3) or g.size == 0:
        raise DataError(gt_path, f"label maps must be non-empty 2D or 3D arrays, got shape {g.shape}")
    case_spacing = None if convention == "medpy" else _case_spacing(spacing, header_spacing, g.ndim, gt_path)
    case_classes = max(int(p.max()), int(g.max())) + 1
    if num_classes is not None and case_classes > num_classes:
        bad = pred_path if int(p.max()) >= num_classes else gt_path
        raise DataError(bad, f"label {case_classes - 1} is out of range for num_classes={num_classes}")
    try:
        res = compute_case_metrics(
            p,
            g,
            num_classes if num_classes is not None else max(case_classes, 2),
            spacing=case_spacing,
            convention=convention,
            empty_both=empty_both,
            empty_one=empty_one,
        )
    except ValueError as exc:  # e.g. negative labels: name the files rather than show a traceback
        raise DataError(pred_path, f"{exc} (ground truth {gt_path})") from None
    return res, distance_unit(convention, spacing, header_spacing, g.ndim)


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write a score report as indented JSON, atomically.

    The text goes to a temporary file in the destination folder, which then replaces ``path``, so
    a reader never sees a half-written report.

    Args:
        result: the report (must hold no NaN: :func:`score` output never does).
        path: destination file; its folder is created if needed.

    Returns:
        The destination path.
    """
    return atomic_write_text(path, json.dumps(result, indent=2, allow_nan=False) + "\n")
