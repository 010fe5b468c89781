"""One process of ``uncol teacher cache``: its shard, its work, and the report of all processes.

The shard comes from one of two places:

* ``--shard i/n``: ``n`` independent processes (a job array, or processes started by hand), each
  told its index; no process knows of the others, each reports its own throughput;
* ``torchrun``: the shard is the process's rank among ``WORLD_SIZE`` (one node or several); the
  processes form a torch.distributed group (:mod:`uncol.distributed`) only to gather their reports,
  and rank 0 returns them with their total.

Giving both is refused: the rank and the given index could disagree, and two shards would then be
encoded twice while another one is not encoded at all. Without either, one process encodes
everything (shard ``0/1``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uncol.config import Config
from uncol.devices import select_device
from uncol.distributed import gather_objects, launched_by_torchrun, process_group, torchrun_ranks
from uncol.errors import UncolError
from uncol.teachers.cache import entry_usage, stray_temporaries
from uncol.teachers.precompute import disk_summary, precompute_cache
from uncol.teachers.sharding import Shard
from uncol.teachers.throughput import (
    ShardThroughput,
    TotalThroughput,
    format_shard,
    format_total,
    total_throughput,
)


@dataclass
class CacheJobResult:
    """What one process of ``uncol teacher cache`` did, and (rank 0 of torchrun) what all did.

    Attributes:
        local: this process's :func:`~uncol.teachers.precompute.precompute_cache` result.
        shards: every process's throughput in rank order (torchrun), else this process's alone.
        total: all processes together (torchrun with several ranks), else ``None``.
        rank: this process's rank under torchrun, else ``None``.
        distributed: whether torchrun started the process.
    """

    local: dict[str, Any]
    shards: list[ShardThroughput] = field(default_factory=list)
    total: TotalThroughput | None = None
    rank: int | None = None
    distributed: bool = False

    @property
    def reports(self) -> bool:
        """Whether this process prints and writes the report (rank 0 under torchrun, else every process)."""
        return self.rank in (None, 0)

    def report_lines(self) -> list[str]:
        """The report printed at the end: counts, throughput per process (and in total), disk usage."""
        r = self.local
        if not self.distributed and len(self.shards) == 1 and self.shards[0].shard == "0/1":
            s = self.shards[0]
            lines = [
                f"{r['images']} image(s) of {r['cases']} case(s): {r['computed']} computed, "
                f"{r['cached_before']} already cached, {r['damaged_recomputed']} damaged entries recomputed, "
                f"{r['seconds']:.0f} s",
                f"throughput: {s.encoded} encoded in {s.encode_seconds:.1f} s, {s.images_per_second:.3f} images/s, "
                f"{s.encode_cpu_seconds:.1f} CPU s (setup {s.setup_seconds:.1f} s)",
            ]
        else:
            lines = [format_shard(s) for s in self.shards]
            if self.total is not None:
                lines.append(format_total(self.total))
        for kind, d in r["disk"].items():
            if d["files"]:
                lines.append(f"{kind}: {d['files']} entries, {d['bytes'] / 2**20:.1f} MiB in {r['cache_dir']}")
        strays = stray_temporaries(Path(r["entries_dir"]))
        if strays:
            lines.append(
                f"{len(strays)} temporary file(s) older than an hour in {r['entries_dir']}, e.g. {strays[0].name}: "
                "left by writers that were stopped; never read, safe to delete"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the local counts, every shard's throughput and the total."""
        local = {k: v for k, v in self.local.items() if k != "throughput"}
        return {
            **local,
            "launcher": "torchrun" if self.distributed else "process",
            "shards": [s.to_dict() for s in self.shards],
            "total": None if self.total is None else self.total.to_dict(),
        }


def _device_for_rank(cfg: Config, local_rank: int) -> Config:
    """``cfg`` with the teacher on this node's GPU number ``local_rank`` when it computes on CUDA."""
    device = select_device(cfg.teacher.device, "teacher.device")
    if device.type != "cuda" or device.index is not None:
        return cfg  # the CPU, or an explicit cuda:N, kept as given
    # One GPU per process: torchrun's LOCAL_RANK says which.
    return dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, device=f"cuda:{local_rank}"))


def run_cache_job(
    cfg: Config,
    split: str = "train",
    embeddings: bool | None = None,
    max_cases: int = 0,
    show_progress: bool = True,
    shard: str | None = None,
    limit: int = 0,
) -> CacheJobResult:
    """Encode this process's shard of ``split`` into the cache; gather all reports under torchrun.

    Args:
        cfg: run configuration.
        split: see :func:`~uncol.teachers.precompute.precompute_cache`.
        embeddings: see :func:`~uncol.teachers.precompute.precompute_cache`.
        max_cases: at most this many cases (0 = all).
        show_progress: draw a progress bar (under torchrun on rank 0 only).
        shard: ``"i/n"`` from ``--shard``, or ``None``.
        limit: at most this many images, the first ones listed (0 = all).

    Raises:
        UncolError: ``--shard`` under torchrun, a malformed shard, or torch.distributed failing to start.
    """
    if not launched_by_torchrun():
        result = precompute_cache(
            cfg, split, embeddings, max_cases, show_progress, shard=Shard.parse(shard) if shard else None, limit=limit
        )
        return CacheJobResult(result, [result["throughput"]])
    if shard is not None:
        raise UncolError(
            f"--shard {shard} cannot be combined with torchrun, whose rank already chooses the shard: "
            "drop --shard, or start the processes without torchrun"
        )
    ranks = torchrun_ranks()
    cfg = _device_for_rank(cfg, ranks.local_rank)
    with process_group(select_device(cfg.teacher.device, "teacher.device")) as ranks:
        result = precompute_cache(
            cfg, split, embeddings, max_cases, show_progress and ranks.rank == 0,
            shard=Shard(ranks.rank, ranks.world_size), limit=limit,
        )
        shards: list[ShardThroughput] = gather_objects(result["throughput"])
    if ranks.rank == 0:  # every rank has finished writing: the folder now holds all their entries
        result["disk"] = disk_summary(entry_usage(Path(result["entries_dir"])))
    total = total_throughput(shards) if len(shards) > 1 else None
    return CacheJobResult(result, shards, total, ranks.rank, distributed=True)
