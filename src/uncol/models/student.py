"""The UnCoL student: SimpleViT encoder + knowledge adapter + CNN backbone (U-Net 2D, V-Net 3D).

Lu, Hong and Yang, *Harmonizing Generalization and Specialization: Uncertainty-Informed Collaborative
Learning for Semi-supervised Medical Image Segmentation*, arXiv:2512.13101: "a lightweight segmentation
network with a compact transformer-based image encoder and a CNN-based segmentation backbone"
(Sec. 3.2), a 4-layer SimpleViT with a U-Net (2D) or V-Net (3D) (Sec. 4.1), and a knowledge adapter
that cross-attends from the student's features to teacher-provided ones (Sec. 3.5).

Data flow of :meth:`UnCoLStudent.forward`::

    x ──SimpleViT──> layers[0..3] (B, N, D), grid = size / vit_patch
                         │ layers[-1] = queries
    context ─────────> KnowledgeAdapter ──> adapted (B, N, D) ──reshape──> (B, D, *grid)
    (None: layers[-1])                                                       │
    x ──backbone encoder── level L (stride 2**L = vit_patch) ──TokenFusion──┘── deeper levels ── decoder ──> logits

The token grid and backbone level ``L = log2(vit_patch)`` have the same resolution by construction
(16x16 tokens of a 256x256 slice meet the U-Net's level-4 bottleneck; 8^3 patches meet the V-Net's
level 3), so the fusion needs no resampling. The fused map replaces the level-``L`` features, feeding
both the skip connection and the deeper encoder stages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution
from torch import nn

from uncol.errors import ConfigError
from uncol.models.adapter import KnowledgeAdapter, check_context_dims
from uncol.models.backbones import EncoderDecoder, UNetBackbone, VNetBackbone
from uncol.models.vit import SimpleViT

DEFAULT_VIT_PATCH = {2: 16, 3: 8}


def default_vit_patch(spatial_dims: int) -> int:
    """The ViT patch size used when none is configured: 16 in 2D (as SAM/MedSAM), 8 in 3D."""
    return DEFAULT_VIT_PATCH[spatial_dims]


def check_student_config(
    spatial_dims: int,
    image_size: Sequence[int],
    channels: Sequence[int],
    vit_patch: int | None,
    vit_dim: int,
    vit_heads: int,
    vit_depth: int,
    context_dims: Sequence[int] = (),
) -> int:
    """Validate the student's sizes; returns the backbone level where the tokens are fused.

    Args:
        spatial_dims: 2 or 3.
        image_size: training input size (``train.patch_size``).
        channels: backbone channels per level (``model.channels``).
        vit_patch: ViT patch size; ``None``/0 for the default of ``spatial_dims``.
        vit_dim: token width.
        vit_heads: attention heads.
        vit_depth: transformer layers.
        context_dims: extra context widths of the knowledge adapter.

    Returns:
        ``log2(vit_patch)``: the backbone level whose stride equals the patch size.

    Raises:
        ConfigError: naming the ``model.*``/``train.patch_size`` option at fault.
    """
    patch = vit_patch or default_vit_patch(spatial_dims)
    if len(image_size) != spatial_dims:
        raise ConfigError(
            f"train.patch_size: {spatial_dims} values needed for the {spatial_dims}D student, got {list(image_size)}"
        )
    if patch < 2 or patch & (patch - 1):
        raise ConfigError(
            f"model.vit_patch: must be a power of two >= 2 (the token grid must match a backbone level, "
            f"each of which halves the resolution), got {patch}"
        )
    level = int(math.log2(patch))
    if level > len(channels) - 1:
        raise ConfigError(
            f"model.vit_patch={patch}: its token grid (stride {patch}) matches backbone level {level}, but "
            f"model.channels {list(channels)} has levels 0..{len(channels) - 1} (strides 1..{2 ** (len(channels) - 1)}); "
            "use a smaller vit_patch or more levels"
        )
    factor = 2 ** (len(channels) - 1)
    if any(s % patch or s % factor for s in image_size):
        raise ConfigError(
            f"train.patch_size: {list(image_size)} must be divisible by model.vit_patch={patch} (whole token grid) "
            f"and by {factor} (2^(levels-1) for model.channels {list(channels)})"
        )
    if vit_depth < 1:
        raise ConfigError(f"model.vit_depth: must be >= 1, got {vit_depth}")
    if vit_heads < 1 or vit_dim % vit_heads:
        raise ConfigError(f"model.vit_dim ({vit_dim}) must be divisible by model.vit_heads ({vit_heads})")
    if vit_dim % (2 * spatial_dims):
        raise ConfigError(
            f"model.vit_dim: {vit_dim} must be divisible by {2 * spatial_dims} "
            f"(the {spatial_dims}D sin-cos position embedding splits it over the axes)"
        )
    check_context_dims(context_dims, vit_dim)
    return level


@dataclass
class StudentOutput:
    """Everything :meth:`UnCoLStudent.forward` computes, for distillation and pseudo-labelling.

    Attributes:
        logits: ``(B, num_classes, *spatial)`` at the input resolution.
        layers: the tokens ``(B, N, D)`` after each SimpleViT layer (raw residual stream).
        grid: token grid shape, ``N = prod(grid)``.
        adapted: the knowledge adapter's output tokens ``(B, N, D)`` (what is fused into the backbone).
    """

    logits: torch.Tensor
    layers: list[torch.Tensor]
    grid: tuple[int, ...]
    adapted: torch.Tensor


class TokenFusion(nn.Module):
    """Fuses a token map into backbone features of the same resolution.

    ``out = Conv1x1-Norm-Act(concat[features, Conv1x1-Norm-Act(tokens)])``: the first 1x1 conv brings
    the tokens to the backbone's width, the second mixes both sources back to that width, so the
    backbone downstream sees its usual channel count. 1x1 rather than 3x3 convs keep the fusion cheap
    at the widest levels (256 channels: 0.18 M instead of 1.2 M parameters).
    """

    def __init__(self, spatial_dims: int, token_dim: int, channels: int, norm: str, act: str | tuple) -> None:
        super().__init__()
        self.project = Convolution(spatial_dims, token_dim, channels, kernel_size=1, norm=norm, act=act)
        self.mix = Convolution(spatial_dims, 2 * channels, channels, kernel_size=1, norm=norm, act=act)

    def forward(self, features: torch.Tensor, token_map: torch.Tensor) -> torch.Tensor:
        """Fuse ``token_map`` ``(B, D, *grid)`` into ``features`` ``(B, C, *grid)``."""
        if features.shape[2:] != token_map.shape[2:]:
            raise ValueError(
                f"TokenFusion: token grid {tuple(token_map.shape[2:])} does not match the backbone features "
                f"{tuple(features.shape[2:])}; the input size must be divisible by 2^(levels-1)"
            )
        return self.mix(torch.cat([features, self.project(token_map)], dim=1))


class UnCoLStudent(nn.Module):
    """The prompt-free UnCoL student network, 2D or 3D.

    Args:
        spatial_dims: 2 (U-Net backbone) or 3 (V-Net backbone).
        in_channels: image channels.
        num_classes: classes including background (output channels).
        image_size: training input size (``train.patch_size``); every value must be divisible by
            ``vit_patch`` and by ``2 ** (len(channels) - 1)``.
        vit_patch: isotropic ViT patch size, a power of two; ``None``/0: 16 in 2D, 8 in 3D.
        vit_dim: token width (divisible by ``vit_heads`` and by 4 in 2D / 6 in 3D).
        vit_depth: transformer layers (UnCoL: 4).
        vit_heads: attention heads of the ViT and the adapter.
        vit_mlp_ratio: MLP width of the ViT layers, as a multiple of ``vit_dim``.
        adapter_mlp_ratio: MLP width of the knowledge adapter.
        context_dims: widths of teacher features the adapter accepts besides ``vit_dim``.
        channels: backbone channels per level, finest first.
        vnet_kernel: 3D conv kernel of the V-Net stages (3 or 5).
        norm: ``"batch"`` or ``"instance"`` in the backbone and fusion.
        dropout: dropout rate of backbone, ViT and adapter.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        vit_patch: int | None = None,
        vit_dim: int = 192,
        vit_depth: int = 4,
        vit_heads: int = 4,
        vit_mlp_ratio: float = 2.0,
        adapter_mlp_ratio: float = 1.0,
        context_dims: Sequence[int] = (),
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        vnet_kernel: int = 3,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"UnCoLStudent: spatial_dims must be 2 or 3, got {spatial_dims}")
        self.fusion_level = check_student_config(
            spatial_dims, image_size, channels, vit_patch, vit_dim, vit_heads, vit_depth, context_dims
        )
        self.spatial_dims = spatial_dims
        self.vit_patch = vit_patch or default_vit_patch(spatial_dims)
        self.vit_dim = vit_dim
        self.vit = SimpleViT(
            spatial_dims, in_channels, image_size, self.vit_patch, vit_dim, vit_depth, vit_heads, vit_mlp_ratio, dropout
        )
        self.adapter = KnowledgeAdapter(vit_dim, vit_heads, adapter_mlp_ratio, context_dims, dropout)
        self.backbone: EncoderDecoder
        if spatial_dims == 2:
            self.backbone = UNetBackbone(spatial_dims, in_channels, num_classes, channels, norm, dropout)
            act: str | tuple = ("leakyrelu", {"negative_slope": 0.01})
        else:
            self.backbone = VNetBackbone(spatial_dims, in_channels, num_classes, channels, vnet_kernel, norm, dropout)
            act = "prelu"
        self.fusion = TokenFusion(spatial_dims, vit_dim, channels[self.fusion_level], norm, act)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, return_features: bool = False
    ) -> torch.Tensor | StudentOutput:
        """Segment ``x``, the adapter attending to ``context`` (or, prompt-free, to the student itself).

        Args:
            x: images ``(B, in_channels, *spatial)``.
            context: keys/values of the knowledge adapter: a token sequence ``(B, M, Dc)`` or a feature
                map ``(B, Dc, *grid)``, with ``Dc`` = ``vit_dim`` or one of ``context_dims`` and any
                length. ``None`` (inference): the student's own last-layer tokens, so one forward
                pass of the student alone segments the image.
            return_features: return a :class:`StudentOutput` instead of the logits alone.

        Returns:
            Logits ``(B, num_classes, *spatial)`` at the input resolution, or a :class:`StudentOutput`.
        """
        layers, grid = self.vit(x)
        queries = layers[-1]
        adapted = self.adapter(queries, queries if context is None else context)
        token_map = adapted.transpose(1, 2).reshape(adapted.shape[0], self.vit_dim, *grid)

        def inject(level: int, features: torch.Tensor) -> torch.Tensor:
            return self.fusion(features, token_map) if level == self.fusion_level else features

        logits = self.backbone.decode(self.backbone.encode(x, inject))
        if not return_features:
            return logits
        return StudentOutput(logits=logits, layers=layers, grid=grid, adapted=adapted)
