"""How a 2D foundation teacher sees 3D samples: the slice axis and the slices it is fed.

Shared by the feature cache's precomputation, zero-shot evaluation and any method that asks the
teacher about training samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from uncol.data.training import Sample


def teacher_slice_axis(setting: int, shape: Sequence[int], default_axis: int) -> int:
    """The spatial axis along which a 3D sample of ``shape`` is fed to the 2D teacher.

    Args:
        setting: ``teacher.slice_axis``: 0-2 as given; -1 the case's own slice axis; -2 the axis with
            the largest slices (ties: the case's axis).
        shape: spatial shape ``(D0, D1, D2)``.
        default_axis: the case's slice axis.
    """
    if setting >= 0:
        return setting
    if setting == -1:
        return default_axis
    areas = [math.prod(shape) // shape[a] for a in range(3)]
    best = max(areas)
    return default_axis if areas[default_axis] == best else areas.index(best)


def sample_axis(sample: Sample, setting: int) -> int:
    """The axis a sample is fed to the 2D teacher along (``teacher.slice_axis``); 0 for a 2D sample."""
    return teacher_slice_axis(setting, sample.image.shape[1:], sample.slice_axis) if sample.image.ndim == 4 else 0


def teacher_slice_indices(n: int, stride: int) -> list[int]:
    """Indices of the slices of an ``n``-slice axis the teacher sees with ``teacher.slice_stride``.

    Every ``stride``-th slice, starting in the middle of the first run of ``stride`` slices (so with
    ``stride`` equal to the ViT patch, one slice near the centre of each token row); at least one slice.
    """
    if stride <= 1:
        return list(range(n))
    picked = list(range(stride // 2, n, stride))
    return picked or [n // 2]


def sample_slices(sample: Sample, axis: int, stride: int = 1) -> list[np.ndarray]:
    """The 2D images ``(C, H, W)`` of a 3D sample along spatial ``axis``, every ``stride``-th one
    (:func:`teacher_slice_indices`); a 2D sample: itself."""
    if sample.image.ndim == 3:
        return [sample.image]
    picked = teacher_slice_indices(sample.image.shape[axis + 1], stride)
    return [np.ascontiguousarray(np.take(sample.image, s, axis=axis + 1)) for s in picked]
