"""CNN segmentation backbones of the UnCoL student, open for feature injection.

UnCoL (Lu, Hong and Yang, arXiv:2512.13101, Sec. 4.1) pairs its transformer encoder with "a
task-specific backbone: U-Net for 2D and V-Net for 3D segmentation". The student fuses transformer
tokens into the backbone at several resolution levels (the level of the token grid's stride and every
finer skip connection), which MONAI's ``UNet``/``VNet`` classes offer no hook for; these backbones are
therefore assembled here from MONAI blocks, with the encoder exposed as a list of stages (stage ``i``
yields features at stride ``strides[i]``) and the decoder as one block per skip level.

* :class:`ResUNetBackbone`: the layout and cost of the supervised baseline, MONAI's ``UNet`` with
  ``num_res_units=1`` (Kerfoot et al., 2018): one residual unit per level whose first convolution has
  stride 2 from the first level on, so no features are computed at full resolution; transposed-conv
  up, concatenated skips. Parameter for parameter the same network as
  ``build_network(arch=unet2d/unet3d)``, written from the same MONAI blocks but with its levels exposed.
* :class:`UNetBackbone`: U-Net (Ronneberger et al., MICCAI 2015) as in the SSL4MIS baselines: two
  3x3 conv-norm-LeakyReLU per level, max-pool down, transposed-conv up, concatenated skips
  (MONAI's ``TwoConv``/``Down``/``UpCat`` blocks).
* :class:`VNetBackbone`: V-Net (Milletari et al., 3DV 2016): residual stages of 1, 2, 3, 3, ... convs
  (PReLU), strided 2x2x2 convs down, transposed 2x2x2 convs up, skips added to the upsampled features
  (the SSL4MIS variant of V-Net, whose 3x3x3 version the UnCoL paper's baselines use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

Inject = Callable[[int, torch.Tensor], torch.Tensor]


class EncoderDecoder(nn.Module):
    """Common driver: ``encoder`` stages, ``decoder`` blocks (one per level above the bottleneck), ``head``.

    Subclasses fill ``self.encoder`` (``nn.ModuleList``; stage ``i`` maps level ``i-1`` features, or
    the image for ``i = 0``, to level ``i``), ``self.decoder`` (``nn.ModuleList``; block ``i`` maps
    ``(level i+1 decoded features, level i skip)`` to level ``i``) and ``self.head``.
    """

    encoder: nn.ModuleList
    decoder: nn.ModuleList
    head: nn.Module
    #: stride of each encoder level's features relative to the input, finest first.
    strides: list[int]

    def encode(self, x: torch.Tensor, inject: Inject | None = None) -> list[torch.Tensor]:
        """Encoder features of every level, finest first.

        Args:
            x: the image.
            inject: optional ``(level, features) -> features`` applied right after each stage, so
                that what it returns feeds both the skip connection and the deeper stages.
        """
        feats = []
        for level, stage in enumerate(self.encoder):
            x = stage(x)
            if inject is not None:
                x = inject(level, x)
            feats.append(x)
        return feats

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits at the finest level from the encoder features of :meth:`encode`."""
        y = feats[-1]
        for level in reversed(range(len(feats) - 1)):
            y = self.decoder[level](y, feats[level])
        return self.head(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain segmentation: image to logits."""
        return self.decode(self.encode(x))


class UNetBackbone(EncoderDecoder):
    """U-Net with plain double-conv blocks.

    Args:
        spatial_dims: 2 (or 3).
        in_channels: image channels.
        num_classes: output channels.
        channels: feature channels per level, finest first (e.g. ``(16, 32, 64, 128, 256)``).
        norm: ``"batch"`` or ``"instance"``.
        dropout: dropout rate inside the conv blocks.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        act = ("leakyrelu", {"negative_slope": 0.01})
        nrm = (norm, {"affine": True})
        c = list(channels)
        self.encoder = nn.ModuleList(
            [TwoConv(spatial_dims, in_channels, c[0], act, nrm, True, dropout)]
            + [Down(spatial_dims, c[i - 1], c[i], act, nrm, True, dropout) for i in range(1, len(c))]
        )
        # UpCat halves the channels with a 2x transposed conv, concatenates the skip, then double conv.
        self.decoder = nn.ModuleList(
            UpCat(spatial_dims, c[i + 1], c[i], c[i], act, nrm, True, dropout, upsample="deconv", halves=True)
            for i in range(len(c) - 1)
        )
        self.head = Convolution(spatial_dims, c[0], num_classes, kernel_size=1, conv_only=True)
        self.strides = [2**i for i in range(len(c))]


class _ResUp(nn.Module):
    """Decoder level of :class:`ResUNetBackbone`: concatenated skip, stride-2 transposed conv, residual unit."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, norm: str, dropout: float, top: bool) -> None:
        super().__init__()
        # Same blocks and defaults as monai.networks.nets.UNet's up layer (kernel 3, PReLU, norm-dropout-act).
        self.up = Convolution(spatial_dims, in_ch, out_ch, strides=2, kernel_size=3, norm=norm, dropout=dropout,
                              is_transposed=True)
        # The top level ends in a bare convolution: its output is the logits.
        self.unit = ResidualUnit(spatial_dims, out_ch, out_ch, strides=1, kernel_size=3, subunits=1, norm=norm,
                                 dropout=dropout, last_conv_only=top)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` (the deeper decoded features) at the skip's resolution; returns twice that resolution."""
        return self.unit(self.up(torch.cat([skip, x], dim=1)))


class ResUNetBackbone(EncoderDecoder):
    """MONAI ``UNet`` (``num_res_units=1``, strides 2) with its levels exposed for injection.

    Encoder level ``i < n - 1`` is a residual unit with stride 2 (features at stride ``2**(i+1)``), level
    ``n - 1`` (the bottom) a residual unit with stride 1, so the two coarsest levels share stride
    ``2**(n-1)``. Decoder block ``i`` concatenates level ``i`` with the deeper decoded features (the
    bottom for ``i = n - 2``), upsamples 2x with a transposed conv and refines with a residual unit;
    block 0 returns the logits at the input resolution, so :attr:`head` is the identity. Module for
    module this is the network ``build_network`` makes for ``arch: unet2d``/``unet3d``, so the student
    built on it costs the baseline's backbone plus its transformer side.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels.
        channels: feature channels per level, finest first (e.g. ``(16, 32, 64, 128, 256)``).
        norm: ``"batch"`` or ``"instance"``.
        dropout: dropout rate inside the conv blocks.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c = list(channels)
        n = len(c)

        def unit(ch_in: int, ch_out: int, stride: int) -> ResidualUnit:
            return ResidualUnit(spatial_dims, ch_in, ch_out, strides=stride, kernel_size=3, subunits=1, norm=norm,
                                dropout=dropout)

        self.encoder = nn.ModuleList(
            [unit(in_channels if i == 0 else c[i - 1], c[i], 2) for i in range(n - 1)] + [unit(c[n - 2], c[n - 1], 1)]
        )
        self.decoder = nn.ModuleList(
            _ResUp(spatial_dims, c[i] + (c[i + 1] if i == n - 2 else c[i]), num_classes if i == 0 else c[i - 1],
                   norm, dropout, top=i == 0)
            for i in range(n - 1)
        )
        self.head = nn.Identity()
        self.strides = [2 ** (i + 1) for i in range(n - 1)] + [2 ** (n - 1)]


class _VNetUp(nn.Module):
    """V-Net decoder level: transposed conv up, add the skip, residual conv stage."""

    def __init__(
        self, spatial_dims: int, in_ch: int, out_ch: int, convs: int, kernel: int, norm: str, dropout: float
    ) -> None:
        super().__init__()
        # kernel = stride = 2: explicit zero paddings (MONAI's "same" padding is undefined for even kernels).
        self.up = Convolution(
            spatial_dims, in_ch, out_ch, strides=2, kernel_size=2, padding=0, output_padding=0,
            is_transposed=True, act="prelu", norm=norm,
        )
        self.stage = ResidualUnit(
            spatial_dims, out_ch, out_ch, kernel_size=kernel, subunits=convs, act="prelu", norm=norm, dropout=dropout
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` to the skip's level and refine their sum."""
        return self.stage(self.up(x) + skip)


class VNetBackbone(EncoderDecoder):
    """V-Net-style residual encoder-decoder.

    Level ``i`` has ``min(i + 1, 3)`` convolutions in both encoder and decoder (V-Net's 1, 2, 3, 3, 3).

    Args:
        spatial_dims: 3 (or 2).
        in_channels: image channels.
        num_classes: output channels.
        channels: feature channels per level, finest first (V-Net: ``(16, 32, 64, 128, 256)``).
        kernel_size: 3 (as in the SSL4MIS V-Net) or 5 (Milletari et al.).
        norm: ``"batch"`` or ``"instance"``.
        dropout: dropout rate inside the conv stages.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        kernel_size: int = 3,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c = list(channels)

        def convs(level: int) -> int:
            return min(level + 1, 3)

        def stage(ch_in: int, ch_out: int, level: int) -> ResidualUnit:
            return ResidualUnit(
                spatial_dims, ch_in, ch_out, kernel_size=kernel_size, subunits=convs(level),
                act="prelu", norm=norm, dropout=dropout,
            )

        encoder: list[nn.Module] = [stage(in_channels, c[0], 0)]
        for i in range(1, len(c)):
            down = Convolution(
                spatial_dims, c[i - 1], c[i], strides=2, kernel_size=2, padding=0, act="prelu", norm=norm
            )
            encoder.append(nn.Sequential(down, stage(c[i], c[i], i)))
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(
            _VNetUp(spatial_dims, c[i + 1], c[i], convs(i), kernel_size, norm, dropout) for i in range(len(c) - 1)
        )
        self.head = Convolution(spatial_dims, c[0], num_classes, kernel_size=1, conv_only=True)
        self.strides = [2**i for i in range(len(c))]
