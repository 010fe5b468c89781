"""Copy-paste mixing of images and their labels (Bai et al., "Bidirectional copy-paste", CVPR 2023).

Two mask shapes: a random subset of a grid of spatial patches (60% in UnCoL), and the one box of BCP
(2/3 of each side at a random position; a cuboid in 3D). Where the mask is set, pixels come from one
image, elsewhere from another; label maps are mixed with the very same mask, so image and labels stay
aligned. Sampling the mask (random) is separate from building and applying it (deterministic), as for
every random transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def sample_patch_mask(
    spatial: Sequence[int], patch: Sequence[int] | int, ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask (True = take from the *second* image) of ``round(ratio * n_patches)`` random patches.

    Args:
        spatial: spatial shape of the images.
        patch: patch size per axis (an int applies to every axis); the last row/column of patches may
            be smaller when the size does not divide the image.
        ratio: fraction of patches replaced, in [0, 1].
        rng: generator to draw from.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"copy-paste ratio must be in [0, 1], got {ratio}")
    spatial = tuple(int(s) for s in spatial)
    patch_t = (int(patch),) * len(spatial) if isinstance(patch, int) else tuple(int(p) for p in patch)
    grid = tuple(-(-s // p) for s, p in zip(spatial, patch_t, strict=True))
    n = int(np.prod(grid))
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=int(round(ratio * n)), replace=False)] = True
    coarse = chosen.reshape(grid)
    for axis, p in enumerate(patch_t):
        coarse = np.repeat(coarse, p, axis=axis)
    return coarse[tuple(slice(0, s) for s in spatial)]


def mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Where ``mask`` is True take ``b``, elsewhere ``a``.

    ``mask`` must broadcast against ``a`` once leading axes are added: a spatial mask is shared by the
    batch; per-sample masks ``(B, *spatial)`` are passed as ``mask[:, None]`` for ``(B, C, *spatial)`` images.
    """
    m = mask.to(device=a.device, dtype=torch.bool)
    while m.ndim < a.ndim:
        m = m.unsqueeze(0)
    return torch.where(m, b, a)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box (a rectangle in 2D, a cuboid in 3D): its first index and size per axis."""

    start: tuple[int, ...]
    size: tuple[int, ...]


def sample_box(spatial: Sequence[int], fraction: float, rng: np.random.Generator) -> Box:
    """Draw the one box of bidirectional copy-paste (Bai et al., CVPR 2023): ``int(fraction * n)`` per axis.

    The authors' code (``generate_mask`` in ACDC_BCP_train.py, ``context_mask`` in BCP_utils.py) takes
    2/3 of each side at a uniformly random position; the start here may also reach ``n - size`` (numpy's
    exclusive ``randint`` bound there keeps the box one pixel off the far edge).

    Args:
        spatial: spatial shape of the images.
        fraction: side of the box as a fraction of each image side, in (0, 1].
        rng: generator to draw the position from.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"box fraction must be in (0, 1], got {fraction}")
    size = tuple(max(1, int(int(n) * fraction)) for n in spatial)
    start = tuple(int(rng.integers(0, int(n) - s + 1)) for n, s in zip(spatial, size, strict=True))
    return Box(start=start, size=size)


def box_mask(spatial: Sequence[int], box: Box) -> np.ndarray:
    """Boolean mask of ``spatial`` shape, True inside ``box`` (the pasted region)."""
    mask = np.zeros(tuple(int(n) for n in spatial), dtype=bool)
    mask[tuple(slice(b, b + s) for b, s in zip(box.start, box.size, strict=True))] = True
    return mask
