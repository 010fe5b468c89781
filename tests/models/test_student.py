"""The UnCoL student: shapes (2D/3D), the knowledge adapter's context, features, sizes, backbones, engine use."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from fixtures_data import make_hdf5_dataset
from uncol.config import config_from_dict
from uncol.engine import Trainer
from uncol.errors import ConfigError
from uncol.models import KnowledgeAdapter, StudentOutput, UnCoLStudent, build_network, count_parameters
from uncol.models.backbones import ResUNetBackbone
from uncol.models.student import TokenInjection
from uncol.models.vit import sincos_position_embedding
from uncol.runs import RunPaths, load_weights

TINY = {"vit_dim": 24, "vit_heads": 4, "context_dims": (20,)}


def student2d(**kw: object) -> UnCoLStudent:
    # 64x64 input, patch 16 -> 4x4 tokens, fused at level 4 (the stride-16 bottom) of a 5-level residual
    # U-Net and added to the skips of levels 0-3 (strides 2, 4, 8, 16).
    args = {"channels": (4, 8, 8, 16, 16), "image_size": (64, 64), **TINY, **kw}
    return UnCoLStudent(2, 1, 3, **args)


def student3d(**kw: object) -> UnCoLStudent:
    # 16x24x16 input, patch 8 -> 2x3x2 tokens, fused at level 3 (the stride-8 bottom) of a 4-level
    # residual U-Net and added to the skips of levels 0-2.
    args = {"channels": (4, 8, 8, 16), "image_size": (16, 24, 16), **TINY, **kw}
    return UnCoLStudent(3, 2, 2, **args)


# The tests compare outputs in train mode: batch norm then normalises with batch statistics, as in
# training. In eval mode an untrained network's running statistics (mean 0, variance 1) let activations
# shrink level after level, so the bottleneck's influence on the logits falls to float-noise size.


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("make", "x_shape", "grid"),
    [(student2d, (2, 1, 64, 64), (4, 4)), (student3d, (2, 2, 16, 24, 16), (2, 3, 2))],
)
def test_prompt_free_forward_and_features(make, x_shape, grid):
    net = make()
    x = torch.randn(*x_shape)
    logits = net(x)
    assert logits.shape == (2, 3 if make is student2d else 2, *x_shape[2:])
    out = net(x, return_features=True)
    assert isinstance(out, StudentOutput)
    assert torch.allclose(out.logits, logits, atol=1e-6)
    assert out.grid == grid
    assert len(out.layers) == 4 and all(t.shape == (2, math.prod(grid), 24) for t in out.layers)
    assert out.adapted.shape == out.layers[-1].shape
    # Prompt-free means: the adapter attends to the student's own last-layer tokens.
    assert torch.allclose(net(x, context=out.layers[-1]), logits, atol=1e-5)


@pytest.mark.parametrize("make", [student2d, student3d])
def test_context_sequence_and_map_of_other_width_and_length(make):
    net = make()
    nd = net.spatial_dims
    x = torch.randn(2, net.vit.patch_embed.in_channels, *((64, 64) if nd == 2 else (16, 24, 16)))
    base = net(x)
    seq = net(x, context=torch.randn(2, 7, 20))  # teacher tokens: width 20, 7 tokens
    fmap = net(x, context=torch.randn(2, 20, *((3, 5) if nd == 2 else (2, 2, 3))))  # teacher feature map
    same_width = net(x, context=torch.randn(2, 11, 24))  # e.g. EMA-teacher tokens, no projection
    for y in (seq, fmap, same_width):
        assert y.shape == base.shape
        assert not torch.allclose(y, base)


def test_adapter_really_uses_the_context():
    net = student2d()
    x = torch.randn(2, 1, 64, 64)
    ctx = torch.randn(2, 9, 20)
    a = net(x, context=ctx, return_features=True)
    b = net(x, context=ctx + torch.randn_like(ctx), return_features=True)
    assert torch.equal(a.layers[-1], b.layers[-1])  # the ViT does not see the context
    assert not torch.allclose(a.adapted, b.adapted)
    assert not torch.allclose(a.logits, b.logits)
    assert torch.allclose(net(x, context=ctx), a.logits)  # deterministic


def test_gradients_reach_the_vit_through_the_adapter():
    net = student2d()
    ctx = torch.randn(2, 9, 20, requires_grad=True)
    net(torch.randn(2, 1, 64, 64), context=ctx).square().mean().backward()
    for name in ("vit.patch_embed.weight", "vit.layers.0.linear1.weight", "adapter.attn.in_proj_weight",
                 "adapter.context_proj.20.1.weight", "injections.4.project.conv.weight",
                 "injections.0.project.conv.weight", "backbone.encoder.0.conv.unit0.conv.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0


def test_bad_contexts_are_rejected():
    net = student2d()
    x = torch.randn(2, 1, 64, 64)
    with pytest.raises(ValueError, match="context width 33"):
        net(x, context=torch.randn(2, 5, 33))
    with pytest.raises(ValueError, match="batch"):
        net(x, context=torch.randn(3, 5, 20))
    with pytest.raises(ValueError, match="tokens"):
        net(x, context=torch.randn(2, 20))


def test_other_input_sizes_and_clean_state_dict():
    net = student2d()
    # fixed sin-cos positions are recomputed for another grid; whole-slice inference at 96x128 works
    assert net.eval()(torch.randn(1, 1, 96, 128)).shape == (1, 3, 96, 128)
    assert not any("pos_embed" in k for k in net.state_dict())  # fixed, so not checkpointed
    pe = sincos_position_embedding((4, 6), 24)
    assert pe.shape == (1, 24, 24) and pe.abs().max() <= 1
    assert len(torch.unique(pe[0], dim=0)) == 24  # every grid position has its own code


def test_parameter_counts_of_the_default_students():
    s2 = UnCoLStudent(2, 1, 5, image_size=(256, 256))
    s3 = UnCoLStudent(3, 1, 2, image_size=(48, 64, 48), channels=(16, 32, 64, 128))
    n2, n3 = count_parameters(s2), count_parameters(s3)
    parts = {n: count_parameters(m) for n, m in s2.named_children()}
    print(f"UnCoL student 2D (256x256, 5 classes): {n2:,} parameters {parts}")
    print(f"UnCoL student 3D (48x64x48, 2 classes): {n3:,} parameters")
    assert s2.fusion_level == 4 and s3.fusion_level == 3
    assert len(s2.injections) == 5 and len(s3.injections) == 4
    # The backbone is the supervised baseline's network, parameter for parameter.
    unet2d = UNet(2, 1, 5, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=1, norm="BATCH")
    assert parts["backbone"] == count_parameters(unet2d)
    assert parts["vit"] + parts["adapter"] + parts["injections"] < 0.7e6  # the transformer side, vit_dim 96
    vnet = UnCoLStudent(3, 1, 2, image_size=(48, 64, 48), backbone="vnet")
    assert vnet.fusion_level == 3 and 9e6 < count_parameters(vnet) < 15e6  # V-Net alone 9.44 M (paper: 13.94 M)


def _monai_unet_levels(unet: UNet) -> tuple[list[nn.Module], list[nn.Module]]:
    """MONAI UNet's down layers (the bottom last) and up layers, finest first, from its nested blocks."""
    downs, ups = [], []
    block = unet.model
    while isinstance(block, nn.Sequential) and len(block) == 3:
        downs.append(block[0])
        ups.append(block[2])
        block = block[1].submodule
    return downs + [block], ups


@pytest.mark.parametrize(("dims", "channels", "shape"), [(2, (4, 8, 8, 16, 16), (2, 1, 64, 32)), (3, (4, 8, 16), (2, 1, 8, 12, 8))])
def test_residual_backbone_is_monai_unet(dims, channels, shape):
    """Same modules as the supervised baseline (so the same cost): with its weights, the same output."""
    unet = UNet(dims, 1, 3, channels, (2,) * (len(channels) - 1), num_res_units=1, norm="BATCH")
    ours = ResUNetBackbone(dims, 1, 3, channels, "batch")
    assert count_parameters(ours) == count_parameters(unet)
    downs, ups = _monai_unet_levels(unet)
    assert len(downs) == len(ours.encoder) and len(ups) == len(ours.decoder)
    for mine, theirs in zip(ours.encoder, downs, strict=True):
        mine.load_state_dict(theirs.state_dict())
    for mine, theirs in zip(ours.decoder, ups, strict=True):
        mine.up.load_state_dict(theirs[0].state_dict())
        mine.unit.load_state_dict(theirs[1].state_dict())
    x = torch.randn(*shape)
    assert torch.allclose(ours(x), unet(x), atol=1e-6)
    n = len(channels)
    assert ours.strides == [2 ** (i + 1) for i in range(n - 1)] + [2 ** (n - 1)]
    assert [f.shape[2] for f in ours.encode(x)] == [shape[2] // s for s in ours.strides]


def _zero_output(module: nn.Module) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))


@pytest.mark.parametrize("backbone", ["resunet", "unet", "vnet"])
def test_adapter_reaches_the_logits_at_every_decoder_scale(backbone):
    """Each injection carries the adapter's output into the logits, on its own (issue 13: one 1x1 fusion
    at one level left a trained student's mask almost independent of the adapter)."""
    net = student2d(backbone=backbone)
    x = torch.randn(2, 1, 64, 64)
    out = net(x, return_features=True)
    assert len(net.injections) == net.fusion_level + 1 >= 3
    # Gradients of the logits reach the adapter output through each injection alone: the token map's
    # gradient with only injection i live is non-zero for every i.
    for i in range(len(net.injections)):
        handles = [_zero_output(inj.project) for j, inj in enumerate(net.injections) if j != i]
        adapted = []
        h = net.adapter.register_forward_hook(lambda _m, _i, o, store=adapted: store.append(o) or o.retain_grad())
        net(x).square().mean().backward()
        for handle in [*handles, h]:
            handle.remove()
        grad = adapted[0].grad
        assert grad is not None and grad.abs().sum() > 0, f"injection {i}"
        proj = net.injections[i].project.conv.weight.grad
        assert proj is not None and proj.abs().sum() > 0, f"injection {i}"
        net.zero_grad(set_to_none=True)
    # Zeroing any one injection changes the logits; zeroing the adapter output changes them too.
    base = out.logits.detach()
    for i, inj in enumerate(net.injections):
        handle = _zero_output(inj.project)
        changed = (net(x) - base).abs().mean()
        handle.remove()
        assert changed > 1e-3 * base.abs().mean(), f"injection {i}"
    handle = _zero_output(net.adapter)
    assert not torch.allclose(net(x), base, atol=1e-4)
    handle.remove()
    assert torch.allclose(net(x), base, atol=1e-6)  # the hooks are gone


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": (72, 64)}, "train.patch_size"),
        ({"vit_patch": 12}, "power of two"),
        ({"vit_patch": 32}, "level 5"),
        ({"vit_heads": 5}, "vit_heads"),
        ({"vit_dim": 26, "vit_heads": 2}, "divisible by 4"),
        ({"context_dims": (24,)}, "context_dims"),
        ({"vit_depth": 0}, "vit_depth"),
        ({"backbone": "resnet"}, "student_backbone"),
    ],
)
def test_bad_sizes_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        student2d(**kwargs)


def test_3d_sin_cos_needs_width_divisible_by_6():
    with pytest.raises(ConfigError, match="divisible by 6"):
        student3d(vit_dim=32)


def test_config_builds_the_student_and_validates_it():
    cfg = config_from_dict({"model": {"arch": "uncol_student3d", "channels": [4, 8, 8, 16]}, "train": {"patch_size": [16, 24, 16]}})
    assert cfg.spatial_dims == 3
    net = build_network(cfg.model, 1, 2, cfg.train.patch_size)
    assert isinstance(net, UnCoLStudent) and net.vit_patch == 8 and net.backbone_name == "resunet"
    vnet_cfg = dataclasses.replace(cfg.model, student_backbone="vnet")
    assert build_network(vnet_cfg, 1, 2, cfg.train.patch_size).backbone_name == "vnet"
    with pytest.raises(ConfigError, match="model.student_backbone"):
        config_from_dict({"model": {"arch": "uncol_student2d", "student_backbone": "vgg"}})
    with pytest.raises(ConfigError, match="train.patch_size"):
        build_network(cfg.model, 1, 2)
    assert config_from_dict({"model": {"arch": "uncol_student2d"}}).spatial_dims == 2
    with pytest.raises(ConfigError, match="model.vit_patch=16"):
        config_from_dict({"model": {"arch": "uncol_student2d", "channels": [4, 8, 16]}, "train": {"patch_size": [32, 32]}})
    with pytest.raises(ConfigError, match="model.context_dims"):
        config_from_dict({"model": {"arch": "uncol_student2d", "context_dims": [96]}})


def test_adapter_alone_accepts_any_context_length():
    adapter = KnowledgeAdapter(16, 2, context_dims=(8,)).eval()
    x = torch.randn(3, 10, 16)
    assert adapter(x, torch.randn(3, 1, 8)).shape == x.shape
    assert adapter(x, torch.randn(3, 8, 2, 3, 4)).shape == x.shape


def test_supervised_training_with_the_student_arch(tmp_path: Path):
    data = make_hdf5_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, slices=2, shape=(32, 32), num_classes=3)
    cfg = config_from_dict(
        {
            "name": "student",
            "output_dir": str(tmp_path / "runs"),
            "data": dataclasses.asdict(data),
            "model": {"arch": "uncol_student2d", "channels": [4, 8, 16], "vit_patch": 4, "vit_dim": 16, "vit_heads": 2},
            "train": {"iterations": 2, "batch_size": 2, "patch_size": [32, 32], "val_every": 0,
                      "checkpoint_every": 1, "threads": 1, "device": "cpu"},
        }
    )
    run = tmp_path / "runs" / "student"
    summary = Trainer(cfg, run, show_progress=False).fit()
    assert summary.steps_done == 2 and summary.parameters > 0
    assert RunPaths(run).final.exists()
    cfg_back, net, _ = load_weights(run, "final")
    assert isinstance(net, UnCoLStudent) and cfg_back == cfg
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_token_injection_resizes_to_finer_levels_and_refuses_coarser_ones():
    inj = TokenInjection(2, 8, 4, "batch").eval()
    tokens = torch.randn(2, 8, 4, 4)
    assert inj(torch.zeros(2, 4, 16, 16), tokens).shape == (2, 4, 16, 16)
    # Same grid: no resizing, the projected tokens are added as they are.
    assert torch.allclose(inj(torch.zeros(2, 4, 4, 4), tokens), inj.project(tokens))
    with pytest.raises(ValueError, match="coarser than the token grid"):
        inj(torch.zeros(2, 4, 2, 2), tokens)
