"""Which images of ``uncol teacher cache`` each of ``n`` processes encodes.

The rule: the distinct feature-cache keys of the listed images are sorted, and the key at position
``p`` of that sorted list belongs to shard ``p mod n``. Every process lists the same images (same
config, same options), so it derives the same assignment on its own, without talking to the
others; this is what lets independent jobs of a job array split the work. Sorting by key rather
than by listing order makes the assignment independent of how the images were enumerated, the
modulo gives every shard the same number of images (to within one), and an image listed twice (the
same content gives the same key) is encoded once, by one shard.

Shards are numbered from 0: ``--shard 0/4`` to ``--shard 3/4``, the numbering of a job array
declared as ``--array=0-3``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from uncol.errors import UncolError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UncolError(f"shard {self.index}/{self.count}: the number of shards must be at least 1")
        if not 0 <= self.index < self.count:
            raise UncolError(
                f"shard {self.index}/{self.count}: the index must lie in 0..{self.count - 1} (shards are numbered from 0)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """A shard from ``"i/n"`` (``--shard``).

        Raises:
            UncolError: the text is not of the form ``i/n`` or ``i`` is not in ``0..n-1``.
        """
        m = _SHARD.match(text)
        if m is None:
            raise UncolError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/4 (shards are numbered from 0)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of_keys(keys: Sequence[str], count: int) -> dict[str, int]:
    """Shard of every distinct key: its position in the sorted distinct keys, modulo ``count``."""
    return {key: position % count for position, key in enumerate(sorted(set(keys)))}


def select_shard(keys: Sequence[str], shard: Shard) -> list[int]:
    """Indices into ``keys`` that ``shard`` encodes: the first occurrence of each of its keys, in list order.

    Over ``shard.index = 0 .. shard.count - 1`` the selections are disjoint and together hold one index
    of every distinct key.
    """
    owner = shard_of_keys(keys, shard.count)
    seen: set[str] = set()
    chosen: list[int] = []
    for i, key in enumerate(keys):
        if owner[key] == shard.index and key not in seen:
            seen.add(key)
            chosen.append(i)
    return chosen
