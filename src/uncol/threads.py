"""How many CPU threads torch uses for inference (``uncol predict/evaluate --threads``).

torch picks its intra-op thread count from the machine it sees, which may exceed the cores this
process may use (CPU affinity, containers) or compete with other work; oversubscribed threads made
evaluation several times slower than the same evaluation inside training, which sets
``train.threads``. So inference sets the count explicitly: the request, else the run's
``train.threads``, else the number of cores this process may run on.
"""

from __future__ import annotations

import os

from uncol.errors import ConfigError

__all__ = ["available_cores", "resolve_threads", "use_threads"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int | None, configured: int) -> int:
    """The thread count to use.

    Args:
        requested: an explicit count (``--threads``), or ``None``.
        configured: the run's ``train.threads`` (0 = unset).

    Raises:
        ConfigError: a requested count below 1.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ConfigError(f"threads: a positive number of threads is needed, got {requested!r}")
        return requested
    if configured > 0:
        return configured
    return available_cores()


def use_threads(requested: int | None, configured: int) -> int:
    """Set torch's intra-op thread count (:func:`resolve_threads`) and return it."""
    import torch

    n = resolve_threads(requested, configured)
    torch.set_num_threads(n)
    return n
