"""SAM/MedSAM ViT-B teacher: architecture, layer hooks and checkpoint handling, with random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uncol.config import TeacherConfig
from uncol.errors import ConfigError, UncolError
from uncol.teachers import build_teacher

pytest.importorskip("segment_anything")
from uncol.teachers.sam_vit import SamViTBTeacher  # noqa: E402


@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(0)
    # ViT-B (depth 12, dim 768, global attention at 2/5/8/11) at 256 px so the test is fast.
    return SamViTBTeacher(None, img_size=256, token_grid=8)


def test_vit_b_shapes_and_paper_layer_map(small_vit):
    t = small_vit
    assert t.layer_map == {1: "blocks.3", 2: "blocks.7", 3: "blocks.11", 4: "fused"}
    assert len(t.encoder.blocks) == 12 and t.encoder.blocks[0].attn.qkv.in_features == 768
    image = np.random.default_rng(0).normal(size=(1, 50, 70)).astype(np.float32)
    mask = np.zeros((50, 70), np.int64)
    mask[10:30, 20:50] = 1
    out = t.predict(image, t.gt_prompts(mask, 2))
    assert {k: tuple(v.shape) for k, v in out.features.items()} == {
        "blocks.3": (768, 8, 8), "blocks.7": (768, 8, 8), "blocks.11": (768, 8, 8)
    }
    assert out.fused.shape == (1, 256, 8, 8) and out.logits.shape == (1, 50, 70)
    emb = t.encode([image])[0].embedding
    assert emb.shape == (256, 16, 16)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ConfigError, match="teacher.checkpoint"):
        build_teacher(TeacherConfig(name="sam_vit_b", checkpoint=str(tmp_path / "missing.pth"), device="cpu"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UncolError, match="bad.pth"):
        SamViTBTeacher(bad, img_size=256)
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UncolError, match="does not match SAM ViT-B"):
        SamViTBTeacher(wrong, img_size=256)
    other = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(1)}, other)
    with pytest.raises(UncolError, match="unexpected keys"):
        SamViTBTeacher(other, img_size=256)


@pytest.mark.slow
def test_checkpoint_round_trip(small_vit, tmp_path):
    state = {f"{p}.{k}": v for p, m in (("image_encoder", small_vit.encoder), ("prompt_encoder", small_vit.prompt_encoder),
                                       ("mask_decoder", small_vit.mask_decoder)) for k, v in m.state_dict().items()}
    path = tmp_path / "vit_b.pth"
    torch.save({"model": state}, path)
    t = SamViTBTeacher(path, img_size=256, token_grid=8)
    assert len(t.weights_id) == 64 and t.identity.startswith("sam_vit_b|")
    x = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    a, b = t.encode([x])[0], small_vit.encode([x])[0]
    assert torch.equal(a.embedding, b.embedding)
