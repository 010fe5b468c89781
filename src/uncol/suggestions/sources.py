"""The scans ``uncol suggest`` ranks: image files and folders, or the unlabeled split of the run.

Files are collected and read exactly as ``uncol predict`` reads its inputs
(:func:`uncol.prediction.collect_inputs`, :func:`uncol.prediction.read_input`), so a missing,
unsupported or unreadable file is a failure of that file alone. Each scan belongs to a group: the
patient that ``data.group_regex`` finds in its case id (the file name without extension), or the scan
itself where the dataset has no such pattern or the name does not match it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from uncol.config import Config
from uncol.data.index import make_grouper
from uncol.data.readers import load_case
from uncol.data.readers.common import case_id_of
from uncol.data.splits import load_splits
from uncol.data.types import Case, CaseData
from uncol.errors import UncolError
from uncol.prediction import collect_inputs, read_input
from uncol.prediction_result import PredictionFailure
from uncol.runs import RunPaths

__all__ = ["SPLIT", "Scan", "scans_from_inputs", "scans_from_split"]

#: ``Scan.source`` of a case of the run's own unlabeled split (other scans are ``file``).
SPLIT = "split"


@dataclass(frozen=True)
class Scan:
    """One unlabeled scan to score.

    Attributes:
        case_id: the case's name (a file's name without extension(s)).
        group: the patient it belongs to (its own name without ``data.group_regex``).
        files: the image file(s).
        case: the split's case (read with the dataset's options), or ``None`` for a file.
    """

    case_id: str
    group: str
    files: tuple[Path, ...]
    case: Case | None = None

    @property
    def source(self) -> str:
        """``split`` for a case of the run's unlabeled split, else ``file``."""
        return SPLIT if self.case is not None else "file"

    def read(self, cfg: Config) -> CaseData:
        """The scan's image as the run's network takes it (a split case's hidden label is not read).

        Raises:
            DataError: an unreadable or truncated file, or a channel count the network does not take.
        """
        if self.case is not None:
            return load_case(dataclasses.replace(self.case, label_path=None), cfg.data)
        return read_input(self.files[0], cfg.data.in_channels)


def scans_from_inputs(
    inputs: Sequence[str | Path], group_regex: str
) -> tuple[list[Scan], list[PredictionFailure]]:
    """Scans from image files and folders (non-recursive), grouped by ``group_regex``.

    Returns:
        ``(scans, failures)``: a missing path, an unsupported file, a folder without images or a second
        file of the same case name is a failure; the other inputs are scans.
    """
    files, failures = collect_inputs(inputs)
    grouper = make_grouper(group_regex)
    owner: dict[str, Path] = {}
    scans: list[Scan] = []
    for path in files:
        case_id = case_id_of(path)
        if case_id in owner:
            failures.append(PredictionFailure(path, f"same case name {case_id!r} as {owner[case_id]}; rename one"))
            continue
        owner[case_id] = path
        scans.append(Scan(case_id, grouper(case_id) or case_id, (path,)))
    return scans, failures


def scans_from_split(run_dir: str | Path) -> list[Scan]:
    """The unlabeled training cases of a run (``splits.json``), with their patient groups.

    Raises:
        UncolError: the run has no ``splits.json`` or no unlabeled case.
    """
    paths = RunPaths(run_dir)
    splits = load_splits(paths.splits)
    if not splits.unlabeled:
        raise UncolError(f"{paths.splits}: the run has no unlabeled cases; name the scans to rank with --unlabeled")
    return [Scan(c.case_id, c.group, (c.image_path,), c) for c in splits.unlabeled]
