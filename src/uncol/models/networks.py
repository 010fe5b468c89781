"""Segmentation networks of the supervised and semi-supervised baselines, and the UnCoL student.

We wrap MONAI's reference implementations rather than writing our own: a U-Net (Ronneberger et al.,
MICCAI 2015; 3D variant Çiçek et al., MICCAI 2016) in 2D or 3D and a V-Net (Milletari et al., 3DV 2016).
The UnCoL student (Lu, Hong and Yang, arXiv:2512.13101) is :class:`uncol.models.student.UnCoLStudent`;
built here, it is used as a plain prompt-free network ``x -> logits`` by every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet, VNet
from torch import nn

from uncol.config import ModelConfig
from uncol.errors import ConfigError
from uncol.models.student import UnCoLStudent


def build_network(
    model_cfg: ModelConfig, in_channels: int, num_classes: int, image_size: Sequence[int] | None = None
) -> nn.Module:
    """Create the segmentation network described by ``model_cfg``.

    Args:
        model_cfg: architecture options.
        in_channels: image channels.
        num_classes: output channels (classes including background); the network returns logits.
        image_size: the training input size (``train.patch_size``); needed by the UnCoL student, whose
            ViT token grid is ``image_size / vit_patch``.

    Returns:
        A module mapping ``(B, in_channels, *spatial)`` to logits ``(B, num_classes, *spatial)``.
    """
    arch = model_cfg.arch
    if arch in ("unet2d", "unet3d"):
        dims = 2 if arch == "unet2d" else 3
        return UNet(
            spatial_dims=dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=tuple(model_cfg.channels),
            strides=(2,) * (len(model_cfg.channels) - 1),
            num_res_units=1,
            norm=model_cfg.norm.upper(),
            dropout=model_cfg.dropout,
        )
    if arch == "vnet":
        # MONAI's V-Net has fixed widths (16..256); model.channels does not apply to it.
        p = model_cfg.dropout
        return VNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=num_classes,
            dropout_prob_down=p if p > 0 else None,
            dropout_prob_up=(p if p > 0 else None, p),
        )
    if arch in ("uncol_student2d", "uncol_student3d"):
        if image_size is None:
            raise ConfigError(f"model.arch={arch}: the student needs the input size (train.patch_size)")
        return UnCoLStudent(
            spatial_dims=2 if arch == "uncol_student2d" else 3,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=tuple(image_size),
            vit_patch=model_cfg.vit_patch or None,
            vit_dim=model_cfg.vit_dim,
            vit_depth=model_cfg.vit_depth,
            vit_heads=model_cfg.vit_heads,
            context_dims=tuple(model_cfg.context_dims),
            channels=tuple(model_cfg.channels),
            norm=model_cfg.norm,
            dropout=model_cfg.dropout,
            backbone=model_cfg.student_backbone,
        )
    raise ConfigError(f"model.arch: unknown architecture {arch!r}")  # pragma: no cover - validated in config


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def check_network_input(network: nn.Module, shape: tuple[int, ...]) -> None:
    """Run a dummy batch through the network, turning shape errors into a clear ConfigError."""
    was_training = network.training
    network.eval()
    try:
        network(torch.zeros(1, *shape))
    except RuntimeError as e:
        raise ConfigError(f"train.patch_size / model: the network cannot process inputs of shape {shape}: {e}") from None
    finally:
        network.train(was_training)
