"""Run the ``uncol`` command line in a child process with fault hooks: a kill in the middle of a write.

``python tests/fault_child.py train CONFIG ...`` runs ``uncol train CONFIG ...`` with these hooks, all
read from the environment by this wrapper only (production code has no test branches):

``UNCOL_FAULT_KILL=GLOB:N:FRACTION``
    On the ``N``-th atomic write (1-based) of a file whose name matches ``GLOB`` (``latest.pt``,
    ``*.feat``), the complete content is written to the temporary file, cut to ``FRACTION`` of its
    bytes, synced to disk, and the process SIGKILLs itself: exactly what a kill half-way through the
    write leaves behind, at a chosen moment.
``UNCOL_FAULT_SLOW=GLOB[,GLOB...]:SECONDS``
    Writes of files matching a ``GLOB`` take about ``SECONDS`` (the content goes out in 8 chunks with
    pauses), so that a kill at a random moment often lands inside one (benchmarks/kill_soak.py).
``UNCOL_FAULT_LOG=PATH``
    Appends one JSON line per event: ``{"event": "written", "path", "sha256"}`` once a file's complete
    content is in its temporary file (before the rename), and ``{"event": "loaded", "path", "sha256",
    "ok"}`` for every training checkpoint read to resume; a loaded file whose digest was never
    ``written`` whole would be a partial file loaded.
``UNCOL_FAULT_FAKE_TEACHER=1``
    The stand-in teacher of tests/fake_teacher.py replaces LiteMedSAM (as in tests/methods/test_uncol.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uncol.atomic
import uncol.runs
import uncol.teachers.cache
from uncol.cli import main

_counts: Counter[str] = Counter()


def _log(event: dict[str, Any]) -> None:
    log = os.environ.get("UNCOL_FAULT_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps(event) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec(name: str) -> list[str] | None:
    value = os.environ.get(name)
    return value.split(":") if value else None


def _kill_now(tmp: Path, fraction: float) -> None:
    """Cut ``tmp`` to ``fraction`` of its bytes, sync it, and SIGKILL this process."""
    size = tmp.stat().st_size
    with open(tmp, "r+b") as fh:
        fh.truncate(int(size * fraction))
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # pragma: no cover - the signal arrives first


def _slow_rewrite(tmp: Path, seconds: float, chunks: int = 8) -> None:
    """Write ``tmp``'s content again in ``chunks`` pieces over about ``seconds``."""
    data = tmp.read_bytes()
    step = max(1, -(-len(data) // chunks))
    with open(tmp, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i : i + step])
            fh.flush()
            time.sleep(seconds / chunks)


def faulty_atomic_write(real: Callable[[str | Path, Callable[[Path], None]], Path]) -> Callable[..., Path]:
    """``real`` (uncol.atomic.atomic_write) with the kill, slow-write and logging hooks around its writer."""
    kill, slow = _spec("UNCOL_FAULT_KILL"), _spec("UNCOL_FAULT_SLOW")

    def write(path: str | Path, writer: Callable[[Path], None]) -> Path:
        path = Path(path)

        def hooked(tmp: Path) -> None:
            writer(tmp)
            if kill and fnmatch.fnmatch(path.name, kill[0]):
                _counts[kill[0]] += 1
                if _counts[kill[0]] == int(kill[1]):
                    _kill_now(tmp, float(kill[2]))
            if slow and any(fnmatch.fnmatch(path.name, g) for g in slow[0].split(",")):
                _slow_rewrite(tmp, float(slow[1]))
            _log({"event": "written", "path": str(path), "sha256": _digest(tmp)})

        return real(path, hooked)

    return write


def logged_load(real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` (uncol.checkpoints.load_checkpoint as used by uncol.runs) recording each file it reads."""

    def load(path: Path, what: str = "checkpoint") -> Any:
        digest = _digest(Path(path)) if Path(path).is_file() else None
        try:
            out = real(path, what)
        except Exception:
            _log({"event": "loaded", "path": str(path), "sha256": digest, "ok": False})
            raise
        _log({"event": "loaded", "path": str(path), "sha256": digest, "ok": True})
        return out

    return load


def install() -> None:
    """Put the hooks in place (the modules that imported ``atomic_write`` by name included)."""
    write = faulty_atomic_write(uncol.atomic.atomic_write)
    uncol.atomic.atomic_write = write  # atomic_torch_save, atomic_write_text/json and CsvLog call it from here
    uncol.teachers.cache.atomic_write = write
    uncol.runs.load_checkpoint = logged_load(uncol.runs.load_checkpoint)
    if os.environ.get("UNCOL_FAULT_FAKE_TEACHER"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fake_teacher import FakeTeacher
        from uncol import teachers

        teachers.TEACHER_FACTORIES["litemedsam"] = lambda tc: FakeTeacher(
            layers=tc.layers, token_grid=tc.token_grid, size=64
        )


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
