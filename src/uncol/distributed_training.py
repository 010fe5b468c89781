"""Data-parallel training over the processes ``torchrun`` starts (one per device, one node or several).

The engine (:class:`uncol.engine.Trainer`) asks :func:`training_ranks` whether it is one of several
ranks; only then (``WORLD_SIZE > 1``) does anything here run, so a plain single-process run computes
exactly what it computed before this module existed. With several ranks:

* the process group comes from :func:`uncol.distributed.process_group` (gloo on the CPU, NCCL on GPUs),
  as for the sharded teacher cache;
* the network's gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel` while
  back-propagating (:meth:`DataParallel.forward_through` routes the method's forward passes through it),
  and a method's other trainable modules (e.g. UnCoL's distillation projections) by
  :meth:`DataParallel.average_other_gradients`; every rank then takes the same optimiser step, so the
  weights, and the EMA teachers computed from them, stay identical (:func:`replica_mismatch` checks it);
* each rank trains on its slice of the global batch (``uncol.data.training.StepBatches``);
* validation cases are shared out (:func:`shard_indices`) and the scores gathered in case order;
* rank 0 alone writes the run folder (:attr:`Ranks.is_writer`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from uncol.distributed import launched_by_torchrun, torchrun_ranks
from uncol.errors import ConfigError, UncolError


@dataclass(frozen=True)
class TrainingRanks:
    """This process's place among the training processes.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        world_size: number of training processes over all nodes.
        local_rank: rank on this node (the index of its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether several processes train together (the distributed code path)."""
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder (rank 0; the only process of a plain run)."""
        return self.rank == 0


def training_ranks(environ: Mapping[str, str] | None = None) -> TrainingRanks:
    """This process's ranks from torchrun's environment; rank 0 of 1 when not launched by torchrun.

    Raises:
        UncolError: torchrun's variables are malformed (see :func:`uncol.distributed.torchrun_ranks`).
    """
    if not launched_by_torchrun(environ):
        return TrainingRanks()
    r = torchrun_ranks(environ)
    return TrainingRanks(r.rank, r.world_size, r.local_rank)


def device_for_rank(device: torch.device, ranks: TrainingRanks) -> torch.device:
    """``cuda`` without an index becomes this node's GPU number ``local_rank`` (one GPU per process)."""
    if ranks.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ranks.local_rank)
    return device


def shard_indices(n: int, ranks: TrainingRanks) -> list[int]:
    """The items ``0..n-1`` this rank handles: every ``world_size``-th one, from its rank on."""
    return list(range(ranks.rank, n, ranks.world_size))


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order, on every rank (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_scalars(scalars: dict[str, float]) -> dict[str, float]:
    """Each logged scalar averaged over the ranks that report it (the global batch's value for means)."""
    everyone = gather(scalars)
    keys = dict.fromkeys(k for s in everyone for k in s)
    return {k: sum(s[k] for s in everyone if k in s) / sum(1 for s in everyone if k in s) for k in keys}


def state_digest(modules: Mapping[str, nn.Module]) -> dict[str, str]:
    """A SHA-256 of each module's state (parameters and buffers, in order), to compare replicas."""
    out = {}
    for name, module in modules.items():
        h = hashlib.sha256()
        for key, value in module.state_dict().items():
            h.update(key.encode())
            if torch.is_tensor(value):
                h.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
        out[name] = h.hexdigest()
    return out


def replica_mismatch(digests: Sequence[Mapping[str, str]]) -> list[str]:
    """Names of the modules whose state differs between ranks (``digests`` in rank order)."""
    names = dict.fromkeys(k for d in digests for k in d)
    return [n for n in names if len({d.get(n) for d in digests}) > 1]


class DataParallel:
    """Gradient averaging over the ranks for one method's trainable modules.

    Args:
        network: the method's segmentation network (its ``network`` attribute), already on ``device``.
        others: the method's other trainable parameters (outside ``network``).
        device: this rank's device.
    """

    def __init__(self, network: nn.Module, others: Sequence[nn.Parameter], device: torch.device) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.network = network
        self.others = list(others)
        self.device = device
        # A method may leave some weights out of a step (e.g. the context path of UnCoL's student
        # when no image attends to the teacher's tokens): find_unused_parameters marks them done.
        # Buffers are not broadcast at every forward, whose number may differ between ranks (UnCoL
        # splits a batch by its content): sync_buffers does it once per step instead.
        self.ddp = DistributedDataParallel(
            network,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
            forward_sync_buffers=False,
        )
        self._through = _ThroughDDP(self.ddp)

    @contextmanager
    def forward_through(self, method: Any) -> Iterator[None]:
        """Let ``method.network`` call the DDP wrapper while the method computes its losses.

        DDP averages the gradients of what went through its forward during the backward pass that
        follows. Everything else the method does with ``network`` (its state, attributes, EMA
        updates) reaches the plain network, so checkpoints are those of a single-process run.
        """
        method.network = self._through
        try:
            yield
        finally:
            method.network = self.network

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), as DDP does by default.

        Called once per step after the backward pass, so the replicas (and the EMA teachers, which
        copy the network's buffers) stay identical.
        """
        for b in self.network.buffers():
            dist.broadcast(b, src=0)

    def average_other_gradients(self) -> None:
        """Average the gradients of the method's parameters outside the network over the ranks.

        A parameter without a gradient on some ranks counts as a zero gradient there; one without a
        gradient on every rank keeps none (as in a single process, the optimiser then skips it).
        """
        if not self.others:
            return
        world = dist.get_world_size()
        # on the device: NCCL reduces GPU tensors only
        flags = torch.tensor([p.grad is not None for p in self.others], dtype=torch.int32, device=self.device)
        dist.all_reduce(flags)
        for p, n in zip(self.others, flags.tolist(), strict=True):
            if n == 0:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)


class _ThroughDDP:
    """Calls go through DDP's forward; every attribute is the plain network's (``state_dict``, ``vit_dim``...)."""

    def __init__(self, ddp: nn.Module) -> None:
        self._ddp = ddp

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddp.module, name)


def use_sync_batchnorm(network: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """``network`` with its BatchNorm layers synchronised over the ranks when ``enabled``.

    Raises:
        ConfigError: ``train.sync_batchnorm`` on a CPU device (torch synchronises BatchNorm on GPUs only).
    """
    if not enabled:
        return network
    if device.type != "cuda":
        raise ConfigError(
            "train.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only; this run trains on "
            f"{device} (set train.sync_batchnorm=false, or use a normalisation without batch statistics, "
            "model.norm=instance)"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(network)


def check_replicas(modules: Mapping[str, nn.Module], where: str) -> None:
    """Raise when the ranks' copies of ``modules`` differ (they must: same weights, same EMA updates).

    Raises:
        UncolError: naming the modules that differ.
    """
    bad = replica_mismatch(gather(state_digest(modules)))
    if bad:
        raise UncolError(f"{where}: the ranks' copies of module(s) {', '.join(bad)} differ (a bug: please report it)")


class Silent:
    """Stands in for the logs and the TensorBoard writer on ranks other than 0: every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
