"""Atomic file writes: a killed process never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder (same filesystem) and then
``os.replace``-s it over the destination, which POSIX guarantees to be atomic.

The file ends with the permissions a plain ``open(path, "w")`` would give: ``0666`` minus the
process umask for a new file, the existing file's mode when one is replaced. Run folders live on
shared servers, where a group-readable umask is how colleagues read each other's runs.

A full disk, a read-only folder or a missing permission raises :class:`uncol.errors.OutputError`, which
names the destination: the temporary file is removed and the destination keeps its previous content
(the last good checkpoint is never lost to a failed write). A process killed while writing leaves its
temporary file behind, never a partial destination; :func:`remove_temporaries` deletes such leftovers in
a folder with one writer (a run folder, when its training starts again).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uncol.errors import OutputError

#: Longest file name most Linux filesystems accept (bytes); used when the folder cannot say.
_DEFAULT_NAME_MAX = 255
_TMP_SUFFIX = ".tmp"
#: Errors of a destination that cannot take the file (not of the data written): reported by path.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
#: Names of the temporary files :func:`_temporary_name` makes: ``.<name>.<8 hex digits>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return _DEFAULT_NAME_MAX


def _temporary_name(path: Path) -> str:
    """``.<name>.<random>.tmp`` next to ``path``, shortened so that it fits the folder's name limit.

    A destination whose own name is close to the limit (255 bytes on most filesystems) would otherwise
    fail on the temporary file, not on itself.
    """
    token = secrets.token_hex(4)
    room = _name_max(path.parent) - len(f"..{token}{_TMP_SUFFIX}")
    stem = path.name
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]  # by characters, so that a multi-byte UTF-8 name is never cut mid-character
    return f".{stem}.{token}{_TMP_SUFFIX}"


def _create_temporary(path: Path) -> Path:
    """Create an empty temporary file next to ``path`` with the mode a plain ``open`` would give it."""
    for _ in range(100):
        tmp = path.parent / _temporary_name(path)
        try:
            # O_EXCL: never reuse a file someone else created. Mode 0o666 lets the kernel apply the umask
            # exactly as open() does (tempfile.mkstemp would force 0o600 whatever the umask).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file for {path.name}")  # pragma: no cover


def _keep_mode(path: Path, tmp: Path) -> None:
    """Give ``tmp`` the mode of the file it replaces: writing into it with open() would keep it.

    Done after writing, so that a read-only destination can still be replaced, as before.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then move the temporary file to ``path`` atomically.

    Args:
        path: final destination.
        writer: function that writes the complete content to the path it is given (an existing empty
            file; opening it for writing keeps its permissions).

    Returns:
        The destination path.

    Raises:
        OutputError: the folder cannot take the file (full disk, quota, read-only, permission); the
            destination is unchanged and the temporary file removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temporary(path)
    except OSError as e:
        if e.errno in OUTPUT_ERRNOS:
            raise OutputError(path, e) from None
        raise
    try:
        writer(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        _keep_mode(path, tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in OUTPUT_ERRNOS:
            raise OutputError(path, e) from None
        raise
    return path


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_write` (``.<name>.<random>.tmp``)."""
    return bool(_TEMPORARY.match(Path(path).name))


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed before renaming them left in ``folder`` (not below).

    Only for a folder with one writer, once that writer starts again (a run folder when training starts):
    in a folder shared by writers at work (the teacher cache), a temporary file may still be in use.

    Returns:
        The files deleted.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for f in entries:
        if is_temporary(f) and f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f)
    return sorted(removed)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    # Serialised in memory, then written by Python: a full disk is then an OSError naming the file, where
    # torch's own file writer reports it as a RuntimeError ("file write failed").
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda p: p.write_bytes(buffer.getbuffer()))
