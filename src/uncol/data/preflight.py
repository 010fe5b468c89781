"""The pre-flight check of a run's data: every case of every split the run reads, before the first step.

A bad file met in the middle of a run (an unlabeled image read by a semi-supervised method, a test
volume read by the final evaluation) costs the whole training budget. The engine therefore reads
every case it will use while it sets up (the labeled cases, the unlabeled ones when the method
trains on them, the validation and test cases), with the checks of ``uncol data check``, and
collects every problem. Then, as ``data.on_bad_case`` says, it either stops with one error listing
them all, before anything is trained or written, or leaves the bad cases out of the split and lists
them in ``RUN/excluded_cases.json`` (docs/bad_input.md).

This module holds the bookkeeping: what a problem is (:class:`BadCase`), loading a list of cases
while collecting problems, dropping bad cases from a split, and the error and the list written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uncol.atomic import atomic_write_json
from uncol.config import Config
from uncol.data.index import Problems
from uncol.data.readers.common import format_of
from uncol.data.splits import ROLES, Splits
from uncol.data.training import load_training_case
from uncol.data.types import Case, CaseData
from uncol.errors import BadCasesError, ConfigError, DataError, UncolError, printable_path

#: The role of problems found while listing the dataset's files, before any split exists.
DISCOVERY = "dataset"


@dataclass(frozen=True)
class BadCase:
    """One problem found before training.

    Attributes:
        role: the split of the case (``labeled``, ``unlabeled``, ``val``, ``test``), or ``dataset`` for
            a problem found while listing the files (a missing label, an orphan label, an empty folder).
        path: the file (or folder) the problem is about, ``None`` when it is about no single file.
        problem: what is wrong.
        case_id: the case left out with it, when the problem belongs to a case of a split.
        excludable: whether leaving something out resolves it (``data.on_bad_case=exclude``); a missing
            folder or a bad option is not about one case, and always stops the run.
    """

    role: str
    path: Path | None
    problem: str
    case_id: str | None = None
    excludable: bool = True

    def __str__(self) -> str:
        where = "" if self.path is None else f"{printable_path(self.path)}: "
        return f"[{self.role}] {where}{self.problem}"

    def to_json(self) -> dict[str, Any]:
        """JSON form (``excluded_cases.json``); paths with undecodable bytes are written escaped."""
        return {
            "role": self.role,
            "case_id": None if self.case_id is None else printable_path(self.case_id),
            "file": None if self.path is None else printable_path(self.path),
            "problem": self.problem,
        }


def case_problem(role: str, case: Case, error: UncolError) -> BadCase:
    """The :class:`BadCase` of a case that failed to load with ``error``."""
    if isinstance(error, DataError):
        return BadCase(role, error.path if error.path is not None else case.image_path, error.problem, case.case_id)
    # A ConfigError (an option that does not fit the file) is no property of this one case.
    return BadCase(role, case.image_path, str(error), case.case_id, excludable=False)


def discovery_problems(problems: Problems) -> list[BadCase]:
    """The problems found while listing the dataset's files.

    A problem about one image or label file (a missing partner, an unreadable header, a name that is
    not UTF-8) can be resolved by leaving that file out; one about a folder or a list file cannot.
    """
    out = []
    for e in problems.errors:
        path = e.path
        case_file = path is not None and format_of(path) is not None and not path.is_dir()
        out.append(BadCase(DISCOVERY, path, e.problem, excludable=case_file))
    return out


def load_checked(
    cases: Sequence[Case],
    cfg: Config,
    role: str,
    bad: list[BadCase],
    *,
    use_labels: bool = True,
    keep: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[CaseData]:
    """Load every case fully (only a full read finds truncated data, NaN and bad label values),
    recording each problem in ``bad``.

    Args:
        cases: the cases of one split.
        cfg: the run configuration.
        role: the split's name, recorded with each problem.
        bad: where problems are appended.
        use_labels: whether the split's labels are read (and required).
        keep: the loaded data of the first ``keep`` good cases is returned (``-1``: of all), so that a
            caller that needs them (validation) does not read them twice; the rest is dropped at once.
        progress: optional callback ``(done, total)``.

    Returns:
        The kept cases' data.
    """
    kept: list[CaseData] = []
    for i, case in enumerate(cases):
        try:
            data = load_training_case(case, cfg, use_labels)
        except (DataError, ConfigError) as e:
            bad.append(case_problem(role, case, e))
        else:
            if keep < 0 or len(kept) < keep:
                kept.append(data)
        if progress is not None:
            progress(i + 1, len(cases))
    return kept


def without_bad_cases(splits: Splits, bad: Sequence[BadCase]) -> Splits:
    """``splits`` without the cases of ``bad`` (by role and case id); counts follow the lists."""
    drop = {(b.role, b.case_id) for b in bad if b.case_id is not None}
    lists = {role: [c for c in getattr(splits, role) if (role, c.case_id) not in drop] for role in ROLES}
    return replace(splits, **lists)


def bad_cases_error(bad: Sequence[BadCase], mode: str, resumed: bool) -> BadCasesError:
    """The one error that lists every problem found before training."""
    fixed = [b for b in bad if not b.excludable]
    if resumed:
        advice = (
            "this run's splits are fixed since it started, so no case can be left out now: restore or fix "
            "these files (data.on_bad_case=exclude applies only when a run starts)"
        )
    elif mode == "exclude":
        advice = "these problems are not about single cases and cannot be excluded: fix them"
    else:
        advice = "fix them, or set data.on_bad_case=exclude to train without these cases"
        if fixed:
            advice += f" ({len(fixed)} of them are not about single cases and must be fixed in any case)"
    shown = fixed if (mode == "exclude" and not resumed) else list(bad)
    header = f"{len(shown)} problem(s) in the data of this run, found before training; nothing was trained: {advice}"
    return BadCasesError([str(b) for b in shown], header)


def excluded_record(bad: Sequence[BadCase]) -> dict[str, Any]:
    """Content of ``excluded_cases.json``: every problem and, per role, how many were left out."""
    counts: dict[str, int] = {}
    for b in bad:
        counts[b.role] = counts.get(b.role, 0) + 1
    return {"on_bad_case": "exclude", "counts": counts, "excluded": [b.to_json() for b in bad]}


def write_excluded(path: Path, bad: Sequence[BadCase]) -> Path:
    """Write ``excluded_cases.json`` (atomically)."""
    return atomic_write_json(path, excluded_record(bad))
