"""SimpleViT: the compact transformer image encoder of the UnCoL student.

A plain ViT as simplified by Beyer, Zhai and Kolesnikov, *Better plain ViT baselines for ImageNet-1k*
(arXiv:2205.01580): non-overlapping patch embedding, a *fixed* sine-cosine position embedding instead
of a learned one, no class token and pre-norm transformer layers. UnCoL (Lu, Hong and Yang,
arXiv:2512.13101, Sec. 4.1) uses four such layers as the student's image encoder, in 2D and 3D.

The transformer layers are torch's :class:`~torch.nn.TransformerEncoderLayer` in its pre-norm form
(``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` with GELU), which uses the fused attention kernels.
(MONAI's ``TransformerBlock`` is the same block but needs the extra ``einops`` dependency.) Every
layer's tokens are returned because UnCoL distils each of them from a teacher layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from uncol.errors import ConfigError


def sincos_position_embedding(
    grid: Sequence[int], dim: int, temperature: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """Fixed sine-cosine position embedding of a 2D or 3D token grid.

    The ``dim`` channels are split evenly between the grid axes; each axis gets ``sin`` and ``cos`` of
    its integer coordinate times ``dim / (2 * ndim)`` geometrically spaced frequencies (Beyer et al.
    2022, Sec. 2; Vaswani et al. 2017). Being a function of the grid, it is computed for any input size.

    Args:
        grid: token grid shape, e.g. ``(16, 16)`` or ``(6, 8, 6)``.
        dim: embedding width; must be divisible by ``2 * len(grid)``.
        temperature: wavelength scale of the lowest frequency.
        device: where to build the tensor.

    Returns:
        ``(1, prod(grid), dim)``, tokens in row-major (``flatten``) order of the grid.
    """
    nd = len(grid)
    if dim % (2 * nd):
        raise ConfigError(f"model.vit_dim: {dim} must be divisible by {2 * nd} for a {nd}D sin-cos position embedding")
    per_axis = dim // (2 * nd)
    omega = 1.0 / temperature ** (torch.arange(per_axis, dtype=torch.float32, device=device) / per_axis)
    coords = torch.meshgrid(*(torch.arange(g, dtype=torch.float32, device=device) for g in grid), indexing="ij")
    parts = []
    for c in coords:
        angles = c.reshape(-1, 1) * omega[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)[None]


class SimpleViT(nn.Module):
    """Patch embedding, fixed sin-cos positions and ``depth`` pre-norm transformer layers.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        image_size: training input size (one value per spatial axis); each must be a multiple of
            ``patch_size``. Other sizes (multiples of ``patch_size``) also work: the position
            embedding is recomputed for their grid.
        patch_size: isotropic patch size (16 in 2D, e.g. 8 in 3D).
        dim: token width.
        depth: number of transformer layers.
        heads: attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout rate inside the transformer layers.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        image_size: Sequence[int],
        patch_size: int,
        dim: int,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"SimpleViT: spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(image_size) != spatial_dims:
            raise ConfigError(f"SimpleViT: image_size {list(image_size)} needs {spatial_dims} values")
        if patch_size < 1 or any(s % patch_size for s in image_size):
            raise ConfigError(
                f"train.patch_size {list(image_size)} must be a multiple of model.vit_patch={patch_size} "
                "along every axis (the token grid must be whole)"
            )
        if depth < 1:
            raise ConfigError(f"model.vit_depth: must be >= 1, got {depth}")
        if heads < 1 or dim % heads:
            raise ConfigError(f"model.vit_dim ({dim}) must be divisible by model.vit_heads ({heads})")
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.dim = dim
        self.grid = tuple(s // patch_size for s in image_size)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        # A convolution with kernel = stride = patch is exactly a linear map of each flattened patch.
        self.patch_embed = conv(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        # Fixed, so not a parameter; non-persistent so checkpoints hold only learned weights.
        self.register_buffer("pos_embed", sincos_position_embedding(self.grid, dim), persistent=False)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=dim,
                nhead=heads,
                dim_feedforward=int(round(dim * mlp_ratio)),
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, ...]]:
        """Encode an image.

        Args:
            x: ``(B, in_channels, *spatial)``, each spatial size a multiple of ``patch_size``.

        Returns:
            ``(layers, grid)``: the tokens ``(B, N, dim)`` after each transformer layer (the raw
            residual stream: pre-norm layers apply no final norm), and the token grid shape with
            ``N = prod(grid)``.
        """
        spatial = x.shape[2:]
        if len(spatial) != self.spatial_dims or any(s % self.patch_size for s in spatial):
            raise ValueError(
                f"SimpleViT: input spatial size {tuple(spatial)} is not a multiple of the patch size {self.patch_size}"
            )
        feat = self.patch_embed(x)
        grid = tuple(feat.shape[2:])
        tokens = feat.flatten(2).transpose(1, 2)
        pos = self.pos_embed if grid == self.grid else sincos_position_embedding(grid, self.dim, device=x.device)
        tokens = tokens + pos.to(tokens.dtype)
        layers = []
        for layer in self.layers:
            tokens = layer(tokens)
            layers.append(tokens)
        return layers, grid
