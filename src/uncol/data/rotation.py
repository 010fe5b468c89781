"""Free in-plane rotation of maps, matching the image augmentation, for targets computed before it.

:func:`uncol.data.transforms.apply_augment` rotates images with ``scipy.ndimage.rotate`` about the
centre of the last two axes (``reshape=False``). Targets computed once on the un-augmented sample
(cached teacher features, their prompt-fused features and validity, teacher probabilities) are
mapped onto the drawn view by :func:`rotate_maps`, the same rotation done with ``affine_grid`` /
``grid_sample`` at whatever resolution the maps have: a token grid of ``g`` x ``g`` cells covering an
``S`` x ``S`` image has the same centre and the same normalised coordinates as the image, so a map at
token resolution turns exactly as the pixels above it. benchmarks/rotated_features.py measures how
close this comes to re-encoding the rotated image with the real teacher.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rotation_theta(angle: float, height: int, width: int) -> torch.Tensor:
    """The ``(2, 3)`` ``affine_grid`` matrix (``align_corners=False``) rotating an ``height`` x ``width``
    map by ``angle`` degrees the way ``scipy.ndimage.rotate(..., axes=(-2, -1))`` does.

    A positive angle turns the content like ``np.rot90`` (counter-clockwise on screen). Rotation is in
    pixel units: on a non-square map the normalised coordinates are rescaled, so shapes stay rigid.
    """
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    # Output pixel offsets (x: columns, y: rows) come from the source at R^-1; in normalised units
    # (x_n = 2 dx / W, y_n = 2 dy / H) the off-diagonal terms pick up the aspect ratio.
    return torch.tensor([[c, -s * height / width, 0.0], [s * width / height, c, 0.0]], dtype=torch.float32)


def rotate_maps(x: torch.Tensor, angle: float, fill: float | None = 0.0) -> torch.Tensor:
    """Rotate maps ``(..., H, W)`` by ``angle`` degrees about the centre of the last two axes (bilinear).

    Args:
        x: float or bool maps; every leading axis (channels, batch, the first axis of a volume) is
            rotated alike. Bool maps are rotated as 0/1 and thresholded at 0.5.
        angle: degrees, the sign convention of :func:`uncol.data.transforms.apply_augment`.
        fill: value where the rotated map reaches outside the source: a constant (a convex
            combination near the edge, so probabilities still sum to one), or ``None`` for the
            nearest edge value (features: a plausible background token rather than a zero vector).

    Returns:
        The rotated maps, same shape, dtype and device as ``x``.
    """
    if x.ndim < 2:
        raise ValueError(f"rotate_maps needs maps (..., H, W), got shape {tuple(x.shape)}")
    if not angle:
        return x
    is_bool = x.dtype == torch.bool
    h, w = int(x.shape[-2]), int(x.shape[-1])
    y = x.reshape(1, -1, h, w).float()
    theta = rotation_theta(angle, h, w).to(y.device)[None]
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    padding = "border" if fill is None else "zeros"
    out = F.grid_sample(y, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    if fill:
        # Bilinear weights of in-source neighbours: 1 inside, 0 far outside, in between at the edge.
        inside = F.grid_sample(torch.ones_like(y[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        out = out + float(fill) * (1.0 - inside)
    out = out.reshape(x.shape)
    return out > 0.5 if is_bool else out.to(x.dtype)
