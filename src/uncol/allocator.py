"""Memory-allocator settings for long CPU runs (glibc on Linux).

glibc serves every allocation above a dynamic threshold (128 KiB at first) with a fresh ``mmap`` and
returns it with ``munmap`` when freed, and trims the heap top eagerly. PyTorch on a CPU allocates and
frees feature maps of megabytes at every layer, so the kernel spends its time mapping and zeroing
pages: on the project's CPU machine a LiteMedSAM encoder pass spent about 40% of its time in the
kernel. Keeping freed memory in the process removes most of that (benchmarks/RESULTS.md: about 30%
less wall time for ``uncol teacher cache``). The cost: up to 2 GiB of freed memory stays with the
process instead of going back to the system.

This is what setting ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` in
the environment does, applied from inside the process with ``mallopt``. Set ``UNCOL_MALLOC_TUNING=0``
to leave the allocator alone; variables the user set are always respected.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameter numbers of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: Allocations up to this size come from the heap (glibc's largest allowed mmap threshold on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed memory at the heap top is returned to the kernel only above this much.
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt (an int) takes
#: Extra memory requested whenever the heap grows.
TOP_PAD = 512 * 1024 * 1024

_ENV = {
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    "MALLOC_TOP_PAD_": (_M_TOP_PAD, TOP_PAD),
}


def tune_malloc() -> bool:
    """Apply the settings above to this process's glibc allocator.

    Returns:
        Whether anything was applied: False off Linux, without glibc, with ``UNCOL_MALLOC_TUNING=0``,
        or when the user set every one of the variables already.
    """
    if not sys.platform.startswith("linux") or os.environ.get("UNCOL_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = False
    for env, (param, value) in _ENV.items():
        if env in os.environ:
            continue
        applied = bool(mallopt(param, value)) or applied
    return applied
