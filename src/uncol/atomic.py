"""Atomic file writes: a killed process never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder (same filesystem) and then
``os.replace``-s it over the destination, which POSIX guarantees to be atomic.

The file ends with the permissions a plain ``open(path, "w")`` would give: ``0666`` minus the
process umask for a new file, the existing file's mode when one is replaced. Run folders live on
shared servers, where a group-readable umask is how colleagues read each other's runs.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Longest file name most Linux filesystems accept (bytes); used when the folder cannot say.
_DEFAULT_NAME_MAX = 255
_TMP_SUFFIX = ".tmp"


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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        _keep_mode(path, tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))
