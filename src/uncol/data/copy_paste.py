"""Copy-paste mixing of images and their labels (Bai et al., "Bidirectional copy-paste", CVPR 2023).

Two mask shapes: a random subset of a grid of spatial patches (60% in UnCoL), and the one box of BCP
(2/3 of each side at a random position; a cuboid in 3D). Where the mask is set, pixels come from one
image, elsewhere from another; label maps are mixed with the very same mask, so image and labels stay
aligned. Sampling the mask (random) is separate from building and applying it (deterministic), as for
every random transform. :func:`sample_mix_masks` draws a batch of masks of either shape, leaving each
image unmixed (an all-False mask) with a given probability; its box snaps to a grid of cells (e.g. ViT
tokens) so that token-resolution targets mix exactly like the pixels.
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


def mix_with_previous(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Where ``mask`` is True take the previous sample of the batch (sample ``i - 1``, cyclically), elsewhere ``t``.

    The within-batch pairing of labeled copy-paste: mixing an image, its label and any per-sample target
    (cached teacher features, validity masks) with the same mask keeps them aligned. ``mask`` broadcasts
    as in :func:`mix`.
    """
    return mix(t, torch.roll(t, 1, dims=0), mask)


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


def sample_aligned_box(
    spatial: Sequence[int], unit: int, fraction: float, rng: np.random.Generator
) -> Box:
    """One box of about ``fraction`` of each side whose edges fall on a grid of ``unit``-pixel cells.

    The BCP box (:func:`sample_box`) drawn on the coarse grid of cells and scaled back to pixels, so
    that a method mixing token-grid targets (one token per ``unit`` x ``unit`` cell, e.g. cached
    teacher features) with the same box mixes exactly the tokens whose pixels were mixed.

    Args:
        spatial: spatial shape of the images; each side must be a multiple of ``unit``.
        unit: cell side in pixels (e.g. the ViT patch).
        fraction: side of the box as a fraction of each image side, in (0, 1]; the box has
            ``max(1, round(fraction * cells))`` cells per axis.
        rng: generator to draw the position from.
    """
    if unit < 1:
        raise ValueError(f"box unit must be >= 1, got {unit}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"box fraction must be in (0, 1], got {fraction}")
    cells = []
    for n in spatial:
        if int(n) % unit:
            raise ValueError(f"image side {n} is not a multiple of the box unit {unit}")
        cells.append(int(n) // unit)
    # round(), not the authors' int(): on a coarse grid int() would shrink 2/3 of 16 cells to 10 (62%).
    size = tuple(min(c, max(1, int(round(fraction * c)))) for c in cells)
    start = tuple(int(rng.integers(0, c - s + 1)) for c, s in zip(cells, size, strict=True))
    return Box(start=tuple(unit * s for s in start), size=tuple(unit * s for s in size))


#: Copy-paste mask shapes: BCP's one box, or a random subset of a grid of patches.
COPY_PASTE_MODES = ("box", "patch")


def sample_mix_masks(
    n: int,
    spatial: Sequence[int],
    rng: np.random.Generator,
    *,
    mode: str,
    unit: int,
    patch: int,
    ratio: float,
    box_fraction: float,
    prob: float = 1.0,
) -> np.ndarray:
    """Per-image copy-paste masks ``(n, *spatial)`` (True = take from the partner image).

    Each image is mixed with probability ``prob``; otherwise its mask is all False and the image
    passes through unchanged (as do its label and any target mixed with the same mask).

    Args:
        n: number of masks.
        spatial: spatial shape of the images.
        rng: generator to draw from (one draw per image for ``prob``, then the mask's own draws).
        mode: ``box`` (:func:`sample_aligned_box`, side ``box_fraction`` on a grid of ``unit`` pixels)
            or ``patch`` (:func:`sample_patch_mask`: ``ratio`` of the ``patch``-pixel patches).
        unit: cell side the box is aligned to.
        patch: patch side of the patch mosaic.
        ratio: fraction of patches replaced (``patch``).
        box_fraction: side of the box as a fraction of each image side (``box``).
        prob: probability that an image is mixed at all, in [0, 1].
    """
    if mode not in COPY_PASTE_MODES:
        raise ValueError(f"copy-paste mode must be one of {COPY_PASTE_MODES}, got {mode!r}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"copy-paste probability must be in [0, 1], got {prob}")
    spatial = tuple(int(s) for s in spatial)
    masks = np.zeros((n, *spatial), dtype=bool)
    for i in range(n):
        # prob=1 draws nothing here, so a run that always mixes keeps the mask stream it had before.
        if prob < 1.0 and not rng.random() < prob:
            continue
        if mode == "box":
            masks[i] = box_mask(spatial, sample_aligned_box(spatial, unit, box_fraction, rng))
        else:
            masks[i] = sample_patch_mask(spatial, patch, ratio, rng)
    return masks
