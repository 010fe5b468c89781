"""What a grid remembers between invocations: calibrated iterations and each run's commit.

``GRID/grid_state.json`` is rewritten atomically after every change, so a grid killed at any moment
restarts with exactly the iteration counts its finished and interrupted runs were trained with.

Several ``uncol benchmark`` processes may train one grid folder at once (one per core, say): each run
is claimed with a lock of its own (:class:`RunClaim`, ``GRID/locks/<run>.lock``) for as long as it
trains, so two processes never train the same run, and every change to the state file is a
read-modify-write under the grid's lock (:class:`GridLock`, ``GRID/.grid.lock``, held for moments),
so that one process never overwrites what another recorded.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        self.folder = out
        self.path = out / STATE_NAME
        self.data: dict[str, Any] = {"version": STATE_VERSION, "calibration": {}, "runs": {}}
        self._held = False
        self.reload()

    def reload(self) -> None:
        """Read the state file again (another process may have changed it); nothing if there is none yet."""
        if not self.path.exists():
            return
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

    @contextmanager
    def locked(self) -> Iterator[GridState]:
        """Hold the grid lock (re-entrant within this object) and read the state as it is on disk now."""
        if self._held:
            yield self
            return
        with GridLock(self.folder):
            self._held = True
            try:
                self.reload()
                yield self
            finally:
                self._held = False

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the state as it is on disk now and save it, under the grid lock."""
        with self.locked():
            self.reload()
            change(self.data)
            self.save()

    def calibration(self, pair: str) -> dict[str, Any] | None:
        """The stored calibration of a (method, labeled) pair."""
        return self.data["calibration"].get(pair)

    def set_calibration(self, pair: str, entry: dict[str, Any]) -> None:
        """Store a pair's calibration and save."""
        self._update(lambda data: data["calibration"].__setitem__(pair, entry))

    def run(self, name: str) -> dict[str, Any] | None:
        """What is recorded about a run: the commit it started at, its resumptions."""
        return self.data["runs"].get(name)

    def record_start(self, name: str, version: CodeVersion) -> None:
        """A run starts from scratch at ``version`` (any earlier record is replaced)."""
        self._update(lambda data: data["runs"].__setitem__(name, {"started": version.to_json(), "resumed": []}))

    def record_resume(self, name: str, version: CodeVersion) -> None:
        """A run continues from its checkpoint at ``version``."""

        def change(data: dict[str, Any]) -> None:
            data["runs"].setdefault(name, {"started": None, "resumed": []})["resumed"].append(version.to_json())

        self._update(change)


class _FileLock:
    """An exclusive ``flock`` on a file, released when the process ends however it ends (even by SIGKILL:
    the kernel drops it), unlike a pid file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)

    def acquire(self, wait: bool) -> bool:
        """Take the lock; with ``wait=False`` give up at once (False) when another holder has it."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (nothing if not held)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class GridLock(_FileLock):
    """The grid folder's lock, held for moments: around each change of the state file and around a
    pair's calibration (so that two processes never calibrate the same pair). Waits for the holder.

    Args:
        out: the grid folder.
    """

    def __init__(self, out: Path) -> None:
        super().__init__(out / ".grid.lock")

    def __enter__(self) -> GridLock:
        self.acquire(wait=True)
        return self


class RunClaim(_FileLock):
    """A run's claim by the process that trains it (``GRID/locks/<run>.lock``), held while it trains.

    Args:
        out: the grid folder.
        name: the run's name.
    """

    def __init__(self, out: Path, name: str) -> None:
        super().__init__(out / "locks" / f"{name}.lock")

    def try_claim(self) -> bool:
        """Claim the run; False when another process is training it."""
        return self.acquire(wait=False)

    def __enter__(self) -> RunClaim:
        return self
