"""Input preprocessing of the foundation teachers and the way back to the input's geometry.

A teacher only gives useful outputs for inputs prepared exactly as it was trained. LiteMedSAM was
trained on three-channel images whose longest side is resized to 256 px, min-max scaled to [0, 1] after
resizing, and zero-padded at the bottom and right to 256 x 256; MedSAM's ViT-B on images stretched to
1024 x 1024 and min-max scaled. :class:`PreprocessSpec` names such a recipe (its ``key`` enters the
feature-cache key, so changing the recipe invalidates cached features) and :class:`SliceGeometry`
remembers where the image lies on the teacher's square canvas, so that masks, boxes and feature maps
can be mapped between the two frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from uncol.errors import DataError

#: Bumped whenever the code below changes what a teacher sees for the same input.
PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    """A teacher's input recipe.

    Attributes:
        size: side of the square canvas the encoder sees (256 for LiteMedSAM, 1024 for SAM ViT-B).
        keep_aspect: resize the longest side to ``size`` and zero-pad the bottom/right (LiteMedSAM,
            SAM); otherwise stretch the image to ``size`` x ``size`` (MedSAM).
    """

    size: int
    keep_aspect: bool

    @property
    def key(self) -> str:
        """Text identifying the recipe (part of the feature-cache key)."""
        mode = "longest-pad" if self.keep_aspect else "stretch"
        return f"pre{PREPROCESSING_VERSION}-minmax01-rgb-{mode}-{self.size}"


@dataclass(frozen=True)
class SliceGeometry:
    """Where a 2D image of size ``original`` lies on a teacher's ``size`` x ``size`` canvas.

    The image occupies the canvas region ``[0, resized[0]) x [0, resized[1])``; the rest is padding.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    size: int

    @property
    def scale(self) -> tuple[float, float]:
        """Canvas pixels per image pixel along (rows, columns)."""
        return self.resized[0] / self.original[0], self.resized[1] / self.original[1]

    def boxes_to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``(N, 4)`` as ``x0, y0, x1, y1`` in image pixels -> canvas pixels."""
        sy, sx = self.scale
        return np.asarray(boxes, dtype=np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)

    def points_to_canvas(self, points: np.ndarray) -> np.ndarray:
        """Points ``(..., 2)`` as ``x, y`` in image pixels -> canvas pixels (pixel centres kept)."""
        sy, sx = self.scale
        return (np.asarray(points, dtype=np.float32) + 0.5) * np.array([sx, sy], dtype=np.float32)

    def valid_cells(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Rows and columns of a ``grid``-shaped canvas feature map that cover the image (not padding)."""
        rows = min(grid[0], max(1, int(np.ceil(self.resized[0] * grid[0] / self.size - 1e-6))))
        cols = min(grid[1], max(1, int(np.ceil(self.resized[1] * grid[1] / self.size - 1e-6))))
        return rows, cols


def geometry_for(shape: Sequence[int], spec: PreprocessSpec) -> SliceGeometry:
    """The canvas geometry of an image with spatial ``shape`` (H, W) under ``spec``."""
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"empty image of shape {tuple(shape)}")
    if not spec.keep_aspect:
        return SliceGeometry((h, w), (spec.size, spec.size), spec.size)
    scale = spec.size / max(h, w)
    # Rounding as LiteMedSAM's resize_longest_side does: int(x * scale + 0.5).
    new = (min(spec.size, max(1, int(h * scale + 0.5))), min(spec.size, max(1, int(w * scale + 0.5))))
    return SliceGeometry((h, w), new, spec.size)


def three_channels(image: np.ndarray) -> np.ndarray:
    """A ``(H, W)`` or ``(C, H, W)`` image as ``(3, H, W)`` float32.

    One channel is repeated (grayscale MRI/CT, as the teachers were trained); three channels are kept
    (RGB). Other channel counts (multi-modal MRI) use the first channel, repeated: the teachers know no
    other convention.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(None, f"teacher input must be a 2D image (C, H, W), got shape {arr.shape}")
    if arr.shape[0] == 3:
        return arr
    return np.repeat(arr[:1], 3, axis=0)


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> tuple[torch.Tensor, SliceGeometry]:
    """Prepare one 2D image for a teacher.

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` intensities (any range).
        spec: the teacher's recipe.

    Returns:
        ``(canvas, geometry)``: a float32 tensor ``(3, size, size)`` in [0, 1] and the image's place on it.
    """
    rgb = three_channels(image)
    geom = geometry_for(rgb.shape[1:], spec)
    x = torch.from_numpy(np.ascontiguousarray(rgb))[None]
    if geom.resized != geom.original:
        shrinking = geom.resized[0] <= geom.original[0] and geom.resized[1] <= geom.original[1]
        # Area averaging when shrinking (LiteMedSAM uses cv2.INTER_AREA), bilinear when enlarging.
        if shrinking:
            x = F.interpolate(x, size=geom.resized, mode="area")
        else:
            x = F.interpolate(x, size=geom.resized, mode="bilinear", align_corners=False)
    # Min-max after resizing, over all channels together, as in LiteMedSAM's training data pipeline.
    lo, hi = x.amin(), x.amax()
    x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    pad_h, pad_w = spec.size - geom.resized[0], spec.size - geom.resized[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
    return x[0].contiguous(), geom


def canvas_to_original(maps: torch.Tensor, geom: SliceGeometry) -> torch.Tensor:
    """Map canvas-aligned maps ``(N, h, w)`` (any resolution) to the image's original size ``(N, H, W)``.

    The maps are upsampled to the canvas, cropped to the image region and resized to the original size
    (bilinear), as SAM's ``postprocess_masks`` does with mask logits.
    """
    x = maps[None].float()
    if tuple(x.shape[-2:]) != (geom.size, geom.size):
        x = F.interpolate(x, size=(geom.size, geom.size), mode="bilinear", align_corners=False)
    x = x[..., : geom.resized[0], : geom.resized[1]]
    if tuple(x.shape[-2:]) != geom.original:
        x = F.interpolate(x, size=geom.original, mode="bilinear", align_corners=False)
    return x[0]


def pool_to_grid(features: torch.Tensor, geom: SliceGeometry, grid: int) -> torch.Tensor:
    """Average-pool canvas feature maps ``(..., C, h, w)`` over the image region to ``grid`` x ``grid``.

    Padding cells are cut off first, so the pooled features cover exactly the image: flipping or
    rotating the image then flips or rotates the pooled grid (see :func:`uncol.teachers.cache.apply_geometry`).
    """
    rows, cols = geom.valid_cells((features.shape[-2], features.shape[-1]))
    x = features[..., :rows, :cols]
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).float()
    x = F.adaptive_avg_pool2d(x, (grid, grid))
    return x.reshape(*lead, *x.shape[-3:])
