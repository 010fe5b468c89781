"""Prompts for the generalized teacher: boxes from masks and pseudo-labels, points from confident pixels.

All prompts of one 2D image live in a :class:`Prompts` with one row per foreground class
``1..K-1``, in the image's own pixel coordinates (the teacher maps them onto its canvas).

Absent classes: a class with no pixels in the mask (or fewer than ``min_pixels`` in a pseudo-label)
gets *no* prompt; ``present`` is False for it, the teacher does not decode it and its foreground
probability is exactly 0 everywhere (its prompt-conditioned features are zeros).

Randomness (box jitter, point sampling) comes only from the ``numpy.random.Generator`` passed in, so
prompts are a pure function of the inputs and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The paper's box jitter (20 px) is given for SAM's 1024 px input.
REFERENCE_SIZE = 1024


@dataclass
class Prompts:
    """Prompts of one 2D image.

    Attributes:
        boxes: ``(K-1, 4)`` float32 boxes ``x0, y0, x1, y1`` (pixel indices, inclusive) per foreground
            class; rows of absent classes are zeros. ``None`` when the prompts are points only.
        present: ``(K-1,)`` bool: whether class ``k`` (row ``k-1``) is prompted.
        points: ``(K-1, N, 2)`` float32 points ``x, y`` per class, or ``None``.
        point_labels: ``(K-1, N)`` int64: 1 foreground point, -1 padding (ignored by SAM), or ``None``.
    """

    boxes: np.ndarray | None
    present: np.ndarray
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None

    @property
    def num_foreground(self) -> int:
        """Number of foreground classes (K-1)."""
        return int(self.present.shape[0])

    @classmethod
    def empty(cls, num_classes: int) -> Prompts:
        """No prompt for any class (every class absent)."""
        n = num_classes - 1
        return cls(np.zeros((n, 4), np.float32), np.zeros(n, bool))


def jitter_in_pixels(jitter_at_reference: float, canvas_size: int, image_shape: Sequence[int], keep_aspect: bool) -> tuple[float, float]:
    """Convert a jitter given at 1024 px into image pixels ``(y, x)`` for a teacher canvas.

    The paper shifts boxes by 20 px on SAM's 1024 px input; LiteMedSAM works at 256 px, where the
    same relative jitter is 5 px (LiteMedSAM's own training used 5). In image pixels this is
    ``jitter_canvas / scale`` per axis.
    """
    canvas_px = jitter_at_reference * canvas_size / REFERENCE_SIZE
    h, w = int(image_shape[0]), int(image_shape[1])
    if keep_aspect:
        s = canvas_size / max(h, w)
        return canvas_px / s, canvas_px / s
    return canvas_px * h / canvas_size, canvas_px * w / canvas_size


def _jittered_box(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], jitter: tuple[float, float], rng: np.random.Generator | None) -> np.ndarray:
    y0, y1, x0, x1 = float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max())
    jy, jx = jitter
    if rng is not None and (jy > 0 or jx > 0):
        # Each side moves outward by U(0, jitter), as MedSAM/LiteMedSAM simulate a user's loose box.
        d = rng.uniform(0.0, 1.0, size=4) * np.array([jx, jy, jx, jy])
        x0, y0, x1, y1 = x0 - d[0], y0 - d[1], x1 + d[2], y1 + d[3]
    h, w = shape
    return np.array([max(0.0, x0), max(0.0, y0), min(w - 1.0, x1), min(h - 1.0, y1)], dtype=np.float32)


def boxes_from_mask(
    mask: np.ndarray,
    num_classes: int,
    jitter_px: float | tuple[float, float] = 0.0,
    rng: np.random.Generator | None = None,
    min_pixels: int = 1,
) -> Prompts:
    """One box per foreground class present in an integer mask.

    Args:
        mask: ``(H, W)`` integer class map.
        num_classes: classes including background.
        jitter_px: maximal outward shift of each box side in image pixels (a number, or ``(y, x)``);
            boxes are tight when it is 0 or ``rng`` is None.
        rng: source of the jitter.
        min_pixels: classes with fewer pixels get no prompt.

    Returns:
        The prompts; each box encloses all pixels of its class (all its connected components).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"boxes_from_mask needs a 2D mask, got shape {mask.shape}")
    jitter = (float(jitter_px), float(jitter_px)) if np.isscalar(jitter_px) else tuple(map(float, jitter_px))
    prompts = Prompts.empty(num_classes)
    for k in range(1, num_classes):
        ys, xs = np.nonzero(mask == k)
        if len(ys) < max(1, min_pixels):
            continue
        prompts.boxes[k - 1] = _jittered_box(ys, xs, mask.shape, jitter, rng)  # type: ignore[index]
        prompts.present[k - 1] = True
    return prompts


def pseudo_label_map(pseudo: np.ndarray) -> np.ndarray:
    """A hard class map from probabilities ``(K, ...)`` (argmax) or from a class map (returned as is)."""
    arr = np.asarray(pseudo)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.argmax(axis=0)
    return arr


def boxes_from_pseudo_label(
    pseudo: np.ndarray,
    num_classes: int,
    jitter_px: float | tuple[float, float] = 0.0,
    rng: np.random.Generator | None = None,
    min_pixels: int = 10,
) -> Prompts:
    """Boxes from a pseudo-label: class probabilities ``(K, H, W)`` (argmax taken) or a class map ``(H, W)``.

    Pseudo-labels carry speckle; ``min_pixels`` keeps a few stray pixels from prompting a class.
    """
    return boxes_from_mask(pseudo_label_map(pseudo), num_classes, jitter_px, rng, min_pixels)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the class axis 0 of probabilities ``(K, ...)``."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=0)


def points_from_uncertainty(
    probs: np.ndarray,
    n_points: int,
    rng: np.random.Generator,
    low_fraction: float = 0.5,
    min_pixels: int = 10,
) -> Prompts:
    """Foreground points per class, sampled from the most certain pixels of a 2D pseudo-label.

    Args:
        probs: ``(K, H, W)`` class probabilities.
        n_points: points per present class (fewer when the class has fewer candidate pixels; the
            remaining slots are padding with label -1).
        rng: source of the sampling.
        low_fraction: candidates are the class's pixels whose entropy is within the lowest
            ``low_fraction`` of that class's entropies.
        min_pixels: classes with fewer pixels in the argmax map get no prompt.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"points_from_uncertainty needs probabilities (K, H, W), got shape {probs.shape}")
    k_all = probs.shape[0]
    label = probs.argmax(axis=0)
    ent = entropy(probs)
    prompts = Prompts(None, np.zeros(k_all - 1, bool))
    prompts.points = np.zeros((k_all - 1, n_points, 2), np.float32)
    prompts.point_labels = np.full((k_all - 1, n_points), -1, np.int64)
    for k in range(1, k_all):
        ys, xs = np.nonzero(label == k)
        if len(ys) < max(1, min_pixels):
            continue
        e = ent[ys, xs]
        keep = e <= np.quantile(e, low_fraction)
        ys, xs = ys[keep], xs[keep]
        n = min(n_points, len(ys))
        pick = rng.choice(len(ys), size=n, replace=False)
        prompts.points[k - 1, :n] = np.stack([xs[pick], ys[pick]], axis=1)
        prompts.point_labels[k - 1, :n] = 1
        prompts.present[k - 1] = True
    return prompts


def volume_point_prompts(
    probs: np.ndarray,
    axis: int,
    n_points: int,
    rng: np.random.Generator,
    low_fraction: float = 0.5,
    min_pixels: int = 10,
) -> list[Prompts]:
    """Point prompts for every slice of a 3D pseudo-label ``(K, D0, D1, D2)`` along spatial ``axis``.

    Each slice gets its own low-uncertainty points (the 2D teacher is prompted slice by slice);
    slices where a class is absent get no prompt for it.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4:
        raise ValueError(f"volume_point_prompts needs probabilities (K, D0, D1, D2), got shape {probs.shape}")
    return [
        points_from_uncertainty(np.take(probs, s, axis=axis + 1), n_points, rng, low_fraction, min_pixels)
        for s in range(probs.shape[axis + 1])
    ]
