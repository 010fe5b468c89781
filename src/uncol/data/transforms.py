"""Preprocessing and augmentation.

Following TorchIO's design, every random transform first *samples* its parameters from a
``numpy.random.Generator`` and then applies a *deterministic* function of those parameters. The
training pipeline seeds one generator per (step, slot), so a batch is a pure function of the seed and
the step: results do not depend on worker count and a resumed run sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from uncol.config import AugmentConfig

# ----------------------------------------------------------------------------------------------------------
# Intensity normalisation


def normalize_intensity(image: np.ndarray, mode: str) -> np.ndarray:
    """Normalise a channel-first image per channel.

    Args:
        image: ``(C, *spatial)`` float array.
        mode: ``none``, ``zscore`` (zero mean, unit std), ``minmax`` (to [0, 1]) or ``percentile``
            (clip to the 0.5-99.5 percentiles, then z-score; robust to the bright outliers of MRI).

    Returns:
        A new float32 array.
    """
    out = image.astype(np.float32, copy=True)
    if mode == "none":
        return out
    for c in range(out.shape[0]):
        ch = out[c]
        if mode == "percentile":
            lo, hi = np.percentile(ch, [0.5, 99.5])
            np.clip(ch, lo, hi, out=ch)
        if mode in ("zscore", "percentile"):
            std = float(ch.std())
            ch -= float(ch.mean())
            if std > 1e-8:
                ch /= std
        elif mode == "minmax":
            lo, hi = float(ch.min()), float(ch.max())
            ch -= lo
            if hi - lo > 1e-8:
                ch /= hi - lo
        else:
            raise ValueError(f"unknown normalisation {mode!r}")
    return out


# ----------------------------------------------------------------------------------------------------------
# Geometry: resizing, padding, cropping


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a channel-first image to ``size`` with (bi/tri)linear interpolation."""
    if tuple(image.shape[1:]) == tuple(size):
        return image.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(t, size=tuple(size), mode=mode, align_corners=False)[0].numpy()


def resize_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize an integer label map to ``size`` with nearest-neighbour interpolation."""
    if tuple(label.shape) == tuple(size):
        return label
    t = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None, None].float()
    return F.interpolate(t, size=tuple(size), mode="nearest-exact")[0, 0].numpy().astype(np.int64)


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(B, K, *spatial)`` logits/probabilities to ``size`` (linear interpolation)."""
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(logits, size=tuple(size), mode=mode, align_corners=False)


def pad_to_size(image: np.ndarray, label: np.ndarray | None, size: Sequence[int]):
    """Zero-pad (image: with its minimum) symmetrically so every spatial axis is at least ``size``.

    Returns:
        ``(image, label, pads)`` where ``pads`` is a list of ``(before, after)`` per spatial axis.
    """
    spatial = image.shape[1:]
    pads = []
    for s, p in zip(spatial, size, strict=True):
        total = max(0, p - s)
        pads.append((total // 2, total - total // 2))
    if not any(a or b for a, b in pads):
        return image, label, pads
    fill = float(image.min()) if image.size else 0.0
    image = np.pad(image, [(0, 0), *pads], mode="constant", constant_values=fill)
    if label is not None:
        label = np.pad(label, pads, mode="constant", constant_values=0)
    return image, label, pads


def crop(image: np.ndarray, label: np.ndarray | None, start: Sequence[int], size: Sequence[int]):
    """Crop ``size`` starting at ``start`` (arrays must be at least that large)."""
    sl = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    return image[(slice(None), *sl)], (None if label is None else label[sl])


def sample_crop_start(
    label: np.ndarray | None,
    spatial: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator,
    foreground_prob: float = 1.0 / 3.0,
) -> list[int]:
    """Sample a crop origin; with probability ``foreground_prob`` centre it on a random foreground voxel.

    Foreground oversampling (as nnU-Net does) keeps small structures in view often enough.
    """
    limits = [s - n for s, n in zip(spatial, size, strict=True)]
    if label is not None and rng.random() < foreground_prob:
        fg = np.argwhere(label > 0)
        if len(fg):
            centre = fg[rng.integers(len(fg))]
            return [int(np.clip(c - n // 2, 0, lim)) for c, n, lim in zip(centre, size, limits, strict=True)]
    return [int(rng.integers(lim + 1)) for lim in limits]


def snap_crop_start(start: Sequence[int], spatial: Sequence[int], size: Sequence[int], multiple: int) -> list[int]:
    """``start`` moved to the nearest multiple of ``multiple`` that keeps the crop inside ``spatial``.

    Maps stored on a coarser grid of the whole sample (e.g. teacher features, one value per ``multiple``
    voxels) can then be cropped exactly like the image.
    """
    if multiple <= 1:
        return [int(v) for v in start]
    out = []
    for v, s, n in zip(start, spatial, size, strict=True):
        top = (s - n) // multiple * multiple
        out.append(int(min(top, max(0, round(v / multiple) * multiple))))
    return out


# ----------------------------------------------------------------------------------------------------------
# Augmentation: parameters, sampling, deterministic application


@dataclass(frozen=True)
class AugmentParams:
    """Parameters of one augmentation draw (all spatial operations act on the last two axes in-plane)."""

    flips: tuple[bool, ...]
    rot90: int
    angle: float
    scale: float
    shift: float
    gamma: float
    noise_seed: int
    noise_std: float


def sample_augment(cfg: AugmentConfig, spatial_dims: int, rng: np.random.Generator, square_plane: bool) -> AugmentParams:
    """Sample augmentation parameters.

    Args:
        cfg: augmentation options.
        spatial_dims: 2 or 3.
        rng: the generator to draw from.
        square_plane: whether the in-plane (last two) axes have equal size; 90-degree rotations are only
            drawn then, so the patch shape never changes.
    """
    flips = tuple(bool(rng.random() < 0.5) if cfg.flip else False for _ in range(spatial_dims))
    rot90 = int(rng.integers(4)) if (cfg.rotate90 and square_plane) else 0
    angle = float(rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)) if cfg.rotate_degrees > 0 else 0.0
    if cfg.intensity:
        scale = float(rng.uniform(0.9, 1.1))
        shift = float(rng.uniform(-0.1, 0.1))
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5)))) if rng.random() < 0.3 else 1.0
    else:
        scale, shift, gamma = 1.0, 0.0, 1.0
    noise_seed = int(rng.integers(2**31 - 1))
    return AugmentParams(flips, rot90, angle, scale, shift, gamma, noise_seed, float(cfg.noise_std))


def apply_augment(
    image: np.ndarray, label: np.ndarray | None, p: AugmentParams
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply sampled augmentation parameters (deterministic).

    Args:
        image: ``(C, *spatial)`` float32.
        label: ``spatial`` integer map or ``None``.
        p: parameters from :func:`sample_augment`.
    """
    nd = image.ndim - 1
    for axis, flip in enumerate(p.flips):
        if flip:
            image = np.flip(image, axis=axis + 1)
            if label is not None:
                label = np.flip(label, axis=axis)
    if p.rot90:
        image = np.rot90(image, k=p.rot90, axes=(nd - 1, nd))
        if label is not None:
            label = np.rot90(label, k=p.rot90, axes=(nd - 2, nd - 1))
    if p.angle:
        # Rotate in-plane around the centre; background fill with the image minimum keeps intensities plausible.
        cval = float(image.min())
        image = ndimage.rotate(image, p.angle, axes=(nd - 1, nd), reshape=False, order=1, mode="constant", cval=cval)
        if label is not None:
            label = ndimage.rotate(label, p.angle, axes=(nd - 2, nd - 1), reshape=False, order=0, mode="constant", cval=0)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if p.gamma != 1.0:
        # Gamma on the [0, 1]-rescaled image, mapped back to the original range.
        lo, hi = float(image.min()), float(image.max())
        if hi - lo > 1e-8:
            image = ((image - lo) / (hi - lo)) ** p.gamma * (hi - lo) + lo
    if p.scale != 1.0 or p.shift != 0.0:
        std = float(image.std()) or 1.0
        image = image * p.scale + p.shift * std
    if p.noise_std > 0:
        noise_rng = np.random.default_rng(p.noise_seed)
        image = image + noise_rng.normal(0.0, p.noise_std, size=image.shape).astype(np.float32)
    image = image.astype(np.float32, copy=False)
    if label is not None:
        label = np.ascontiguousarray(label, dtype=np.int64)
    return image, label
