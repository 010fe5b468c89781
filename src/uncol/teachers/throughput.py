"""Throughput of ``uncol teacher cache``: what each process encoded, skipped and how fast.

Each process times two phases: *setup* (building the teacher, loading and listing the images, hashing
them for the shard assignment) and *encoding* (its shard's cache lookups and encoder passes, entries
written). Images per second count encoded images over the encoding phase only, since setup does
not grow with the number of images encoded. The total of several processes divides all encoded
images by the span from the first process's start of encoding to the last one's end, so a slow or
late process lowers the total as it lowers the real wall time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ShardThroughput:
    """One process's share of ``uncol teacher cache``.

    Attributes:
        shard: ``index/count`` of the process.
        listed: images listed for the split (all shards).
        images: distinct images of this shard.
        encoded: images of the shard encoded by this process (the entry was missing).
        skipped: images whose entries were already in the cache (written earlier or by another process).
        damaged: entries found damaged, then encoded again (also counted in ``encoded``).
        setup_seconds: teacher, images and shard assignment.
        encode_seconds: lookups, encoder passes and writes of the shard (wall clock).
        encode_cpu_seconds: CPU time of this process (all threads, user + system) over the same phase;
            against ``encode_seconds`` it tells a process that waited for a core from one that worked.
        encode_start: wall-clock time (seconds since the epoch) when encoding started.
        encode_end: wall-clock time when it ended.
    """

    shard: str
    listed: int
    images: int
    encoded: int
    skipped: int
    damaged: int
    setup_seconds: float
    encode_seconds: float
    encode_cpu_seconds: float
    encode_start: float
    encode_end: float

    @property
    def images_per_second(self) -> float:
        """Encoded images per second of the encoding phase (0 when nothing was encoded)."""
        return self.encoded / self.encode_seconds if self.encoded and self.encode_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``images_per_second``."""
        return {**asdict(self), "images_per_second": self.images_per_second}


@dataclass(frozen=True)
class TotalThroughput:
    """Several processes together.

    Attributes:
        processes: number of processes.
        encoded: images encoded by all of them.
        skipped: images found cached by all of them.
        seconds: first start of encoding to last end.
    """

    processes: int
    encoded: int
    skipped: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        """All encoded images over the span of the encoding phases (0 when nothing was encoded)."""
        return self.encoded / self.seconds if self.encoded and self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``images_per_second``."""
        return {**asdict(self), "images_per_second": self.images_per_second}


def total_throughput(shards: Sequence[ShardThroughput]) -> TotalThroughput:
    """The processes' reports combined (see the module docstring for the time span)."""
    if not shards:
        raise ValueError("no shard reports to combine")
    span = max(s.encode_end for s in shards) - min(s.encode_start for s in shards)
    return TotalThroughput(
        len(shards), sum(s.encoded for s in shards), sum(s.skipped for s in shards), round(max(span, 0.0), 3)
    )


def format_shard(s: ShardThroughput) -> str:
    """One line per process."""
    return (
        f"shard {s.shard}: {s.images} of {s.listed} image(s), {s.encoded} encoded, {s.skipped} skipped "
        f"(already cached), {s.damaged} damaged and re-encoded; encoding {s.encode_seconds:.1f} s, "
        f"{s.images_per_second:.3f} images/s, {s.encode_cpu_seconds:.1f} CPU s (setup {s.setup_seconds:.1f} s)"
    )


def format_total(t: TotalThroughput) -> str:
    """The line of all processes together."""
    return (
        f"total over {t.processes} process(es): {t.encoded} encoded, {t.skipped} skipped in {t.seconds:.1f} s "
        f"(first start to last end of encoding): {t.images_per_second:.3f} images/s"
    )
