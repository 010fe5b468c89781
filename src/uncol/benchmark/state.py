"""What a grid remembers between invocations: calibrated iterations and each run's commit.

``GRID/grid_state.json`` is rewritten atomically after every change, so a grid killed at any moment
restarts with exactly the iteration counts its finished and interrupted runs were trained with.
``GRID/.grid.lock`` keeps two grid processes from training in the same folder at once.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from uncol.atomic import atomic_write_json
from uncol.errors import UncolError

STATE_NAME = "grid_state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class CodeVersion:
    """The commit of the code that runs, and whether the working tree differs from it."""

    commit: str | None
    dirty: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form, with the time it was recorded."""
        return {"commit": self.commit, "dirty": self.dirty, "at": _now()}


def code_version() -> CodeVersion:
    """``git rev-parse --short HEAD`` of the checkout uncol runs from (``None`` outside a git checkout)."""
    import uncol

    repo = Path(uncol.__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return CodeVersion(None, False)
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return CodeVersion(None, False)
    return CodeVersion(head.stdout.strip() or None, bool(status.stdout.strip()))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class GridState:
    """The grid's state file.

    Args:
        out: the grid folder.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / STATE_NAME
        self.data: dict[str, Any] = {"version": STATE_VERSION, "calibration": {}, "runs": {}}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UncolError(f"{self.path}: unreadable grid state ({e})") from None
            if not isinstance(loaded, dict) or loaded.get("version") != STATE_VERSION:
                raise UncolError(f"{self.path}: not a grid state file of version {STATE_VERSION}")
            self.data = loaded

    def save(self) -> None:
        """Write the state atomically."""
        atomic_write_json(self.path, self.data)

    def calibration(self, pair: str) -> dict[str, Any] | None:
        """The stored calibration of a (method, labeled) pair."""
        return self.data["calibration"].get(pair)

    def set_calibration(self, pair: str, entry: dict[str, Any]) -> None:
        """Store a pair's calibration and save."""
        self.data["calibration"][pair] = entry
        self.save()

    def run(self, name: str) -> dict[str, Any] | None:
        """What is recorded about a run: the commit it started at, its resumptions."""
        return self.data["runs"].get(name)

    def record_start(self, name: str, version: CodeVersion) -> None:
        """A run starts from scratch at ``version`` (any earlier record is replaced)."""
        self.data["runs"][name] = {"started": version.to_json(), "resumed": []}
        self.save()

    def record_resume(self, name: str, version: CodeVersion) -> None:
        """A run continues from its checkpoint at ``version``."""
        entry = self.data["runs"].setdefault(name, {"started": None, "resumed": []})
        entry["resumed"].append(version.to_json())
        self.save()


class GridLock:
    """An exclusive lock on a grid folder, released when the process ends however it ends.

    Args:
        out: the grid folder.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / ".grid.lock"
        self._fd: int | None = None

    def __enter__(self) -> GridLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # flock, not a pid file: the kernel drops it when the process dies, even by SIGKILL.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UncolError(
                f"{self.path.parent}: another 'uncol benchmark' process is training this grid; "
                "wait for it or stop it first (--only-report and --dry-run need no lock)"
            ) from None
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
