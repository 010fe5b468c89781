"""A writer process of the concurrent-writer test (started with multiprocessing's spawn method).

Two of them fill one cache folder with the same images. A barrier placed after the encoder pass and
before any entry is written makes both processes miss every entry, encode it and write it, so every
entry really has two concurrent writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import numpy as np

from fake_teacher import FakeTeacher
from uncol.teachers import Encoded, FeatureCache


def writer_images(n: int) -> list[np.ndarray]:
    """The images both writers (and the single-process reference) encode."""
    return [np.random.default_rng(seed).normal(size=(1, 32, 32)).astype(np.float32) for seed in range(n)]


class BarrierTeacher(FakeTeacher):
    """The stand-in teacher, waiting at a barrier after encoding: no writer starts before both have encoded."""

    def __init__(self, barrier: Barrier, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._barrier = barrier

    def encode(self, images: Sequence[np.ndarray], keep_embedding: bool = True) -> list[Encoded]:
        out = super().encode(images, keep_embedding)
        self._barrier.wait(timeout=60)
        return out


def write_all(root: str, n: int, barrier: Barrier, encoded: Queue) -> None:
    """Encode the ``n`` writer images into ``root`` in one batch; puts how many this process encoded."""
    teacher = BarrierTeacher(barrier, batch_size=n)
    cache = FeatureCache(teacher, root)
    encoded.put(cache.warm(writer_images(n), embeddings=True).misses)
