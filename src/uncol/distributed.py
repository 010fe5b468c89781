"""torch.distributed for commands whose processes ``torchrun`` launches (one process per rank).

``torchrun`` (one node or several) starts every process with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment; :func:`process_group` turns
them into an initialised default process group: gloo when the process computes on the CPU, NCCL
when it computes on a GPU (the GPU of its ``LOCAL_RANK``). Commands here only exchange small
reports (:func:`gather_objects`), so the process group carries no tensors of the actual work.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from uncol.errors import UncolError

#: Ranks meet at the end to gather reports and wait there for the slowest rank, which may have hours
#: more work than the others (a resumed run whose shards were unevenly finished); torchrun stops the
#: survivors when a rank dies, so a long timeout cannot leave them hanging.
GATHER_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the processes torchrun started.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes over all nodes.
        local_rank: rank on this node (the index of its GPU).
    """

    rank: int
    world_size: int
    local_rank: int


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment says this process is one rank of a torchrun launch (``RANK`` and ``WORLD_SIZE`` set)."""
    env = os.environ if environ is None else environ
    return "RANK" in env and "WORLD_SIZE" in env


def _env_int(env: Mapping[str, str], name: str, default: str | None = None) -> int:
    text = env.get(name, default)
    if text is None:
        raise UncolError(f"environment variable {name} is not set (start the processes with torchrun)")
    try:
        return int(text)
    except ValueError:
        raise UncolError(f"environment variable {name}={text!r}: expected a whole number") from None


def torchrun_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """This process's rank, world size and local rank from torchrun's environment variables.

    Raises:
        UncolError: a variable is missing or not a number, or the rank is outside ``0..WORLD_SIZE-1``.
    """
    env = os.environ if environ is None else environ
    ranks = Ranks(_env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), _env_int(env, "LOCAL_RANK", "0"))
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size:
        raise UncolError(f"environment: RANK={ranks.rank} must lie in 0..WORLD_SIZE-1 (WORLD_SIZE={ranks.world_size})")
    return ranks


def backend_for(device: torch.device) -> str:
    """NCCL for processes computing on a GPU (where it is built in), gloo otherwise."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


@contextmanager
def process_group(device: torch.device, environ: Mapping[str, str] | None = None) -> Iterator[Ranks]:
    """Initialise the default process group from torchrun's environment; destroy it on leaving.

    Args:
        device: the device this process computes on (chooses the backend; a GPU becomes current).
        environ: the environment to read (default: ``os.environ``; torch reads the rendezvous
            variables ``MASTER_ADDR``/``MASTER_PORT`` from ``os.environ`` itself).

    Raises:
        UncolError: torchrun's variables are missing or invalid, or the rendezvous fails.
    """
    env = os.environ if environ is None else environ
    ranks = torchrun_ranks(env)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in env]
    if missing:
        raise UncolError(f"environment variable(s) {', '.join(missing)} not set (start the processes with torchrun)")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(device)  # NCCL's object collectives use the current GPU
    try:
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size, timeout=GATHER_TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise UncolError(
            f"torch.distributed ({backend}) could not start rank {ranks.rank} of {ranks.world_size} "
            f"at {env['MASTER_ADDR']}:{env['MASTER_PORT']}: {e}"
        ) from None
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; waits for all ranks."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
