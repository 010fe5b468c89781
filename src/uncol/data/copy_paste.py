"""Patch-wise copy-paste mixing (after Bai et al., "Bidirectional copy-paste", CVPR 2023, as UnCoL uses it).

A random subset of a grid of spatial patches (60% in UnCoL) is taken from one image and the rest from
another; the label maps are mixed with the very same mask, so image and labels stay aligned.
Sampling the mask (random) is separate from mixing (deterministic), as for every random transform.
"""

from __future__ import annotations

from collections.abc import Sequence

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
