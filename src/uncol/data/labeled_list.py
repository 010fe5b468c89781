"""The labeled-list file (``split.labeled_list``): the groups (patients) a run labels, named one per line.

Format: UTF-8 text, one group id or case id per line; blank lines are skipped and ``#`` starts a
comment (to the end of the line). A case id stands for its whole group, since a split never
separates the cases of one patient. ``uncol suggest --write-list`` writes this format
(docs/suggest.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from uncol.atomic import atomic_write_text
from uncol.data.types import Case
from uncol.errors import DataError

__all__ = ["labeled_groups_from_list", "read_labeled_list", "write_labeled_list"]


def read_labeled_list(path: str | Path) -> list[str]:
    """The entries of a labeled-list file, in file order, without duplicates.

    Raises:
        DataError: a missing or unreadable file, or one without any entry (naming the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "labeled list not found (split.labeled_list)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable labeled list (split.labeled_list): {e}") from None
    entries = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = list(dict.fromkeys(e for e in entries if e))
    if not names:
        raise DataError(path, "the labeled list names no group or case (split.labeled_list)")
    return names


def labeled_groups_from_list(
    path: str | Path, train: Sequence[Case], train_groups: Iterable[str], held_out: Mapping[str, Sequence[Case]]
) -> set[str]:
    """The training groups a labeled-list file names.

    Args:
        path: the labeled-list file.
        train: the dataset's labeled training pool (val/test groups drawn from it included).
        train_groups: the groups of ``train`` left for training once val/test groups are removed.
        held_out: the other cases by role (``validation``, ``test``, ``unlabeled`` for image-only
            cases), to say why an entry naming one of them cannot be labeled.

    Returns:
        The named groups.

    Raises:
        DataError: the file cannot be read or is empty, or an entry names a validation or test
            group, a case without label, or nothing in the dataset (all such entries are listed).
    """
    allowed = set(train_groups)
    group_of = {c.case_id: c.group for c in train} | {c.group: c.group for c in train}
    role_of = {name: role for role, cases in held_out.items() for c in cases for name in (c.case_id, c.group)}
    groups: set[str] = set()
    problems: list[str] = []
    for name in read_labeled_list(path):
        group = group_of.get(name)
        if group is not None and group in allowed:
            groups.add(group)
        elif role_of.get(name) == "unlabeled":
            problems.append(f"{name} (an image without label: add its label to the dataset first)")
        elif name in role_of or group is not None:
            problems.append(f"{name} (in the {role_of.get(name) or role_of.get(group or '', 'held-out')} split)")
        else:
            problems.append(f"{name} (no such group or case in the training data)")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DataError(Path(path), f"cannot label these entries of split.labeled_list: {shown}")
    return groups


def write_labeled_list(path: str | Path, blocks: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """Write a labeled-list file atomically.

    Args:
        path: the file to write.
        blocks: ``(comment, names)`` pairs written in order: the comment line(s) then one name per line.

    Returns:
        The path written.
    """
    lines: list[str] = []
    for comment, names in blocks:
        lines += [f"# {c}" for c in comment.splitlines()]
        lines += list(names)
    return atomic_write_text(path, "\n".join(lines) + "\n")
