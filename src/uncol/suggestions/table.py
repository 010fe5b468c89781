"""The files ``uncol suggest`` writes and ``uncol report`` reads back (docs/suggest.md).

* ``suggestions.csv``: every group, rank 1 first: ``rank, group, cases, files, mean_entropy,
  foreground_entropy, teacher_disagreement, score`` (entropies in nats; an empty cell where a value
  is undefined; files separated by ``;``).
* ``scans.csv``: every scan scored: ``case, group, source, files, mean_entropy, foreground_entropy,
  teacher_disagreement``.
* ``suggestions.json``: how the ranking was made (run, weights, teacher, grouping, top) and the inputs
  that failed.

Each file is written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uncol.atomic import atomic_write_json, atomic_write_text
from uncol.errors import UncolError
from uncol.suggestions.ranking import GroupSuggestion
from uncol.suggestions.scores import ScanScore

__all__ = [
    "GROUP_COLUMNS", "META_NAME", "SCANS_NAME", "SCAN_COLUMNS", "TABLE_NAME", "SuggestionFiles", "read_suggestions",
    "write_suggestions",
]

TABLE_NAME = "suggestions.csv"
SCANS_NAME = "scans.csv"
META_NAME = "suggestions.json"
GROUP_COLUMNS = (
    "rank", "group", "cases", "files", "mean_entropy", "foreground_entropy", "teacher_disagreement", "score",
)
SCAN_COLUMNS = ("case", "group", "source", "files", "mean_entropy", "foreground_entropy", "teacher_disagreement")
_SEP = ";"


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _csv(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_suggestions(
    out: Path, groups: Sequence[GroupSuggestion], scans: Sequence[ScanScore], meta: dict[str, Any]
) -> Path:
    """Write the three files into ``out`` (created); returns the path of ``suggestions.csv``."""
    group_rows = [
        (g.rank, g.group, len(g.cases), _SEP.join(map(str, g.files)), _cell(g.mean_entropy),
         _cell(g.foreground_entropy), _cell(g.disagreement), _cell(g.score))
        for g in groups
    ]
    scan_rows = [
        (s.case, s.group, s.source, _SEP.join(map(str, s.files)), _cell(s.mean_entropy),
         _cell(s.foreground_entropy), _cell(s.disagreement))
        for s in scans
    ]
    atomic_write_text(out / SCANS_NAME, _csv(SCAN_COLUMNS, scan_rows))
    atomic_write_json(out / META_NAME, meta)
    # Written last: the report takes a folder with this file as complete.
    return atomic_write_text(out / TABLE_NAME, _csv(GROUP_COLUMNS, group_rows))


@dataclass
class SuggestionFiles:
    """What a suggestions folder holds.

    Attributes:
        folder: the folder.
        groups: the ranked groups (``suggestions.csv``).
        scans: the scored scans (``scans.csv``).
        meta: ``suggestions.json``.
    """

    folder: Path
    groups: list[GroupSuggestion]
    scans: list[ScanScore]
    meta: dict[str, Any] = field(default_factory=dict)


def _rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise UncolError(f"{path}: not a file of uncol suggest (no column {', '.join(missing)})")
            return list(reader)
    except FileNotFoundError:
        raise UncolError(f"{path}: not found; run `uncol suggest` first") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UncolError(f"{path}: unreadable ({e})") from None


def _number(text: str, path: Path) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise UncolError(f"{path}: {text!r} is not a number") from None


def _required(text: str, path: Path) -> float:
    value = _number(text, path)
    if value is None:
        raise UncolError(f"{path}: an entropy or score cell is empty")
    return value


def _files(text: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in text.split(_SEP) if p)


def read_suggestions(folder: str | Path) -> SuggestionFiles:
    """Read a folder written by :func:`write_suggestions`.

    Raises:
        UncolError: a missing or damaged file, named.
    """
    folder = Path(folder)
    table, scans_path, meta_path = folder / TABLE_NAME, folder / SCANS_NAME, folder / META_NAME
    groups, scans = [], []
    try:
        for row in _rows(table, GROUP_COLUMNS):
            groups.append(GroupSuggestion(
                rank=int(row["rank"]), group=row["group"], cases=(), files=_files(row["files"]),
                mean_entropy=_required(row["mean_entropy"], table),
                foreground_entropy=_number(row["foreground_entropy"], table),
                disagreement=_number(row["teacher_disagreement"], table),
                score=_required(row["score"], table),
            ))
        for row in _rows(scans_path, SCAN_COLUMNS):
            scans.append(ScanScore(
                case=row["case"], group=row["group"], files=_files(row["files"]), source=row["source"],
                mean_entropy=_required(row["mean_entropy"], scans_path),
                foreground_entropy=_number(row["foreground_entropy"], scans_path),
                disagreement=_number(row["teacher_disagreement"], scans_path),
            ))
    except ValueError as e:  # a rank that is not a whole number
        raise UncolError(f"{table}: damaged ({e})") from None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UncolError(f"{meta_path}: not found; run `uncol suggest` again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UncolError(f"{meta_path}: unreadable ({e})") from None
    members: dict[str, list[str]] = {}
    for s in scans:
        members.setdefault(s.group, []).append(s.case)
    groups = [dataclasses.replace(g, cases=tuple(members.get(g.group, ()))) for g in groups]
    return SuggestionFiles(folder, groups, scans, meta if isinstance(meta, dict) else {})
