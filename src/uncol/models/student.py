"""The UnCoL student: SimpleViT encoder + knowledge adapter + CNN backbone (residual U-Net, U-Net or V-Net).

Lu, Hong and Yang, *Harmonizing Generalization and Specialization: Uncertainty-Informed Collaborative
Learning for Semi-supervised Medical Image Segmentation*, arXiv:2512.13101: "a lightweight segmentation
network with a compact transformer-based image encoder and a CNN-based segmentation backbone"
(Sec. 3.2), a 4-layer SimpleViT with a U-Net (2D) or V-Net (3D) (Sec. 4.1), and a knowledge adapter
that cross-attends from the student's features to teacher-provided ones (Sec. 3.5).

Data flow of :meth:`UnCoLStudent.forward` (``T`` = the adapter's token map, ``L`` = the deepest
backbone level whose stride equals ``vit_patch``, ``P_i(T)`` = ``Norm(Conv1x1(D -> C_i)(T))`` resized
to level ``i``; see :class:`TokenInjection`)::

    x ──SimpleViT──> layers[0..3] (B, N, D), grid = size / vit_patch
                         │ layers[-1] = queries
    context ─────────> KnowledgeAdapter ──> adapted (B, N, D) ──reshape──> T (B, D, *grid)
    (None: layers[-1])                                                       │
    x ──encoder── level L: f_L + P_L(T) ── deeper levels ──┐                 │
                  skip L-1: f_{L-1} + P_{L-1}(T) ──> decoder block L-1 <─────┘
                  ...
                  skip 0:   f_0 + P_0(T)         ──> decoder block 0 ──> logits

The token grid and backbone level ``L`` have the same resolution by construction (16x16 tokens of a
256x256 slice meet the bottom of the 2D residual U-Net, stride 16; 8^3 patches meet stride-8 level 3
in 3D), so no resampling is needed there; the sum replaces the level-``L`` features. Every finer skip
connection, on its way into the decoder, gets the token map projected to its width and resized to its
resolution, added. So the adapter's output reaches the mask at every decoder scale, rather than through
one level that the decoder can bypass via the finer skips (paper Sec. 3.5: the adapter conditions the
student's segmentation on teacher-provided features; with the single-level 1x1 fusion of the first
version, zeroing the adapter output changed 0.52% of a trained student's pixels, issue 13).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn import functional as F

from uncol.errors import ConfigError
from uncol.models.adapter import KnowledgeAdapter, check_context_dims
from uncol.models.backbones import EncoderDecoder, ResUNetBackbone, UNetBackbone, VNetBackbone
from uncol.models.vit import SimpleViT

DEFAULT_VIT_PATCH = {2: 16, 3: 8}
#: ``model.student_backbone`` values. ``resunet``, the default, is the supervised ``unet2d``/``unet3d``
#: baseline's layout: the student then costs that baseline plus its transformer side (issue 13; the
#: double-conv U-Net made the 2D student 5.9x the baseline, the V-Net the 3D one 8x).
BACKBONES = ("resunet", "unet", "vnet")


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
        ``log2(vit_patch)``: the token grid's stride as a power of two; every backbone has a level of
        that stride (the level of the U-Net/V-Net of that index; see :attr:`UnCoLStudent.fusion_level`).

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
        adapted: the knowledge adapter's output tokens ``(B, N, D)`` (what is fused into the backbone
            at the token level and added to every finer skip connection).
    """

    logits: torch.Tensor
    layers: list[torch.Tensor]
    grid: tuple[int, ...]
    adapted: torch.Tensor


class TokenInjection(nn.Module):
    """Adds the adapter's token map to backbone features: ``features + resize(Norm(Conv1x1(tokens)))``.

    The 1x1 conv (token width to the level's width) runs on the coarse token grid and the result is
    resized (bilinear/trilinear) to the features, so at the fine levels the cost is one interpolation
    and one addition. The norm gives the injected map the scale of the normalised backbone features,
    so the decoder does not start out treating it as negligible. An addition rather than the concat +
    1x1 mix of the first version: the same linear map of both sources, without a ``2C -> C`` conv
    (at 256 channels that conv alone cost about 7 ms per training image on one CPU thread).
    """

    def __init__(self, spatial_dims: int, token_dim: int, channels: int, norm: str) -> None:
        super().__init__()
        self.project = Convolution(spatial_dims, token_dim, channels, kernel_size=1, norm=norm, act=None)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, features: torch.Tensor, token_map: torch.Tensor) -> torch.Tensor:
        """``features`` ``(B, C, *spatial)`` plus ``token_map`` ``(B, D, *grid)`` projected and resized to it.

        Raises:
            ValueError: when the features are coarser than the token grid (a size not divisible by
                the backbone's coarsest stride).
        """
        t = self.project(token_map)
        if t.shape[2:] != features.shape[2:]:
            if any(f < g for f, g in zip(features.shape[2:], t.shape[2:], strict=True)):
                raise ValueError(
                    f"TokenInjection: backbone features {tuple(features.shape[2:])} are coarser than the token grid "
                    f"{tuple(t.shape[2:])}; the input size must be divisible by 2^(levels-1)"
                )
            t = F.interpolate(t, size=features.shape[2:], mode=self.mode, align_corners=False)
        return features + t


class UnCoLStudent(nn.Module):
    """The prompt-free UnCoL student network, 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
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
        backbone: the CNN backbone (``model.student_backbone``): ``resunet`` (the layout and cost of the
            supervised ``unet2d``/``unet3d`` baseline), ``unet`` (the SSL4MIS double-conv U-Net) or
            ``vnet`` (the SSL4MIS V-Net, the paper's 3D backbone).
        norm: ``"batch"`` or ``"instance"`` in the backbone and the token injections.
        dropout: dropout rate of backbone, ViT and adapter.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        vit_patch: int | None = None,
        vit_dim: int = 96,
        vit_depth: int = 4,
        vit_heads: int = 4,
        vit_mlp_ratio: float = 2.0,
        adapter_mlp_ratio: float = 1.0,
        context_dims: Sequence[int] = (),
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        vnet_kernel: int = 3,
        norm: str = "batch",
        dropout: float = 0.0,
        backbone: str = "resunet",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"UnCoLStudent: spatial_dims must be 2 or 3, got {spatial_dims}")
        check_student_config(spatial_dims, image_size, channels, vit_patch, vit_dim, vit_heads, vit_depth, context_dims)
        if backbone not in BACKBONES:
            raise ConfigError(f"model.student_backbone: must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        self.backbone_name = backbone
        self.spatial_dims = spatial_dims
        self.vit_patch = vit_patch or default_vit_patch(spatial_dims)
        self.vit_dim = vit_dim
        self.vit = SimpleViT(
            spatial_dims, in_channels, image_size, self.vit_patch, vit_dim, vit_depth, vit_heads, vit_mlp_ratio, dropout
        )
        self.adapter = KnowledgeAdapter(vit_dim, vit_heads, adapter_mlp_ratio, context_dims, dropout)
        self.backbone: EncoderDecoder
        if self.backbone_name == "resunet":
            self.backbone = ResUNetBackbone(spatial_dims, in_channels, num_classes, channels, norm, dropout)
        elif self.backbone_name == "unet":
            self.backbone = UNetBackbone(spatial_dims, in_channels, num_classes, channels, norm, dropout)
        else:
            self.backbone = VNetBackbone(spatial_dims, in_channels, num_classes, channels, vnet_kernel, norm, dropout)
        #: the deepest backbone level at the token grid's stride: the tokens are fused there in the
        #: encoder (feeding the deeper levels) and added to every finer skip on its way into the decoder.
        self.fusion_level = max(i for i, s in enumerate(self.backbone.strides) if s == self.vit_patch)
        #: one :class:`TokenInjection` per level ``0..fusion_level``.
        self.injections = nn.ModuleList(
            TokenInjection(spatial_dims, vit_dim, channels[i], norm) for i in range(self.fusion_level + 1)
        )

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

        fusion = self.fusion_level

        def inject(level: int, features: torch.Tensor) -> torch.Tensor:
            return self.injections[level](features, token_map) if level == fusion else features

        feats = self.backbone.encode(x, inject)
        # Levels finer than the fusion level reach the decoder only through their skips, so injecting
        # after the encoder changes what the decoder sees and nothing the encoder computes.
        feats = [self.injections[i](f, token_map) if i < fusion else f for i, f in enumerate(feats)]
        logits = self.backbone.decode(feats)
        if not return_features:
            return logits
        return StudentOutput(logits=logits, layers=layers, grid=grid, adapted=adapted)
