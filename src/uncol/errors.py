"""Exceptions that uncol raises for user-facing problems.

Every problem caused by the user's input (a file, a config value, a command-line flag) is raised as
a subclass of :class:`UncolError` with a message that names the offending file or key. The CLI
prints such messages without a traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


def printable_path(path: str | Path) -> str:
    """``path`` as text that any terminal, log or JSON file can hold.

    On Linux a file name is bytes; one that is not valid UTF-8 reaches Python with surrogate
    characters, which a UTF-8 stdout or a CSV writer refuses. Its undecodable bytes are shown as
    ``\\xNN`` escapes instead, so that the message naming the file can always be printed.
    """
    text = str(path)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class UncolError(Exception):
    """Base class of all user-facing uncol errors."""


class ConfigError(UncolError):
    """An invalid configuration: unknown key, wrong type, bad value."""


class DataError(UncolError):
    """A problem with an input file or dataset layout.

    Args:
        path: the file or folder the problem is about (may be ``None`` for dataset-wide problems).
        problem: a human-readable description of what is wrong.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{printable_path(self.path)}: {problem}" if self.path is not None else problem)


class BadCasesError(DataError):
    """Several problems found in a run's data before training, reported together.

    Args:
        problems: every problem found, one line each (each names its file).
        header: the first line of the message (what was checked, what to do).

    Attributes:
        problems: the lines, as given.
    """

    def __init__(self, problems: list[str], header: str) -> None:
        self.problems = list(problems)
        super().__init__(None, "\n".join([header, *(f"  - {p}" for p in self.problems)]))


class OutputError(UncolError):
    """A file uncol writes could not be written: full disk, read-only folder, no permission.

    Raised by the atomic writers (uncol.atomic) before the destination is touched: the file that was
    there (the last good checkpoint, say) stays as it was, and the temporary file is removed.

    Args:
        path: the file that was being written.
        error: the operating system's error.

    Attributes:
        path: the file that was being written.
        errno: the operating system's error number (``errno.ENOSPC``, ``errno.EROFS``...).
    """

    def __init__(self, path: str | Path, error: OSError) -> None:
        import errno as _errno

        self.path = Path(path)
        self.errno = error.errno
        what = {
            _errno.ENOSPC: "no space left on the device",
            _errno.EDQUOT: "disk quota exceeded (no space left for this user)",
            _errno.EROFS: "the folder is on a read-only filesystem",
            _errno.EACCES: "permission denied (a read-only folder?)",
            _errno.EPERM: "operation not permitted (a read-only folder?)",
        }.get(error.errno, error.strerror or str(error))
        super().__init__(
            f"{printable_path(self.path)}: cannot write: {what}; the file that was there, if any, is unchanged "
            "(free space or choose a writable output_dir, then continue with --resume)"
        )
