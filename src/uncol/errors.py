"""Exceptions that uncol raises for user-facing problems.

Every problem caused by the user's input (a file, a config value, a command-line flag) is raised as
a subclass of :class:`UncolError` with a message that names the offending file or key. The CLI
prints such messages without a traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


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
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
