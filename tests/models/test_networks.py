from __future__ import annotations

import pytest
import torch

from uncol.config import config_from_dict
from uncol.models import build_network, count_parameters


@pytest.mark.parametrize(
    ("arch", "channels", "shape"),
    [("unet2d", [8, 16, 32], (32, 48)), ("unet3d", [8, 16, 32], (16, 24, 16)), ("vnet", [8, 16], (16, 16, 16))],
)
def test_networks_map_images_to_class_logits(arch, channels, shape):
    cfg = config_from_dict({"model": {"arch": arch, "channels": channels}, "train": {"patch_size": list(shape)}})
    net = build_network(cfg.model, in_channels=2, num_classes=3)
    out = net(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)
    assert count_parameters(net) > 0
