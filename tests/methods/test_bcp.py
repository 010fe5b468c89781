"""BCP: largest components, bidirectional mixing, the region-weighted loss, and both stages end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from baseline_runs import (
    assert_same_modules,
    column,
    data2d,  # noqa: F401 - fixture
    data3d,  # noqa: F401 - fixture
    modules_of,
    read_log,
    teacher_differs_from_student,
    tiny_config,
)

import uncol
from uncol.config import config_from_dict
from uncol.data.copy_paste import Box, box_mask, mix
from uncol.engine import RunPaths, Trainer
from uncol.errors import ConfigError
from uncol.methods import StepContext
from uncol.methods.bcp import BCP, bidirectional_copy_paste, region_loss
from uncol.methods.losses import masked_dice_ce
from uncol.methods.postprocess import keep_largest_component_per_class

# ---- largest connected component per class -----------------------------------------------------------


def test_largest_component_keeps_the_biggest_blob_of_each_class_2d():
    lab = torch.zeros(2, 12, 12, dtype=torch.long)
    lab[0, 1:5, 1:5] = 1  # 16 pixels: kept
    lab[0, 8:10, 8:10] = 1  # 4 pixels: dropped
    lab[0, 6, 1] = 2  # a lone pixel of class 2: dropped
    lab[0, 6:9, 3:6] = 2  # 9 pixels of class 2: kept
    lab[0, 10, 1] = 2
    lab[0, 11, 2] = 2  # touches (10, 1) only diagonally: one component of 2, still smaller than 9
    lab[1, 0, 0] = 1  # the second map: a single pixel per class is its own largest component
    out = keep_largest_component_per_class(lab, 3)
    expected = torch.zeros_like(lab)
    expected[0, 1:5, 1:5] = 1
    expected[0, 6:9, 3:6] = 2
    expected[1, 0, 0] = 1
    assert torch.equal(out, expected)
    assert out.dtype == lab.dtype


def test_largest_component_uses_full_connectivity_in_3d():
    lab = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    lab[0, 0, 0, 0] = lab[0, 1, 1, 1] = lab[0, 2, 2, 2] = 1  # corner-connected diagonal line: 3 voxels
    lab[0, 4:6, 4:6, 4] = 1  # 4 face-connected voxels: the largest
    lab[0, 5, 0, 5] = 2
    out = keep_largest_component_per_class(lab, 3)
    assert out[0, 4:6, 4:6, 4].eq(1).all() and out.eq(1).sum() == 4
    assert out[0, 5, 0, 5] == 2
    line = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    line[0, 0, 0, 0] = line[0, 1, 1, 1] = line[0, 2, 2, 2] = 1
    line[0, 5, 5, 5] = 1
    assert keep_largest_component_per_class(line, 2).eq(1).sum() == 3  # the diagonal line is one component


# ---- mixing and loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(12, 10), (8, 6, 10)])
def test_bidirectional_copy_paste_keeps_images_and_labels_aligned(spatial):
    rng = np.random.default_rng(0)
    b, k = 4, 3
    yl = torch.from_numpy(rng.integers(0, k, (b, *spatial)))
    yu = torch.from_numpy(rng.integers(0, k, (b, *spatial)))
    # Labeled pixel values are 10 + label, unlabeled ones 20 + pseudo-label: each value names its source.
    xl, xu = (10 + yl).float().unsqueeze(1), (20 + yu).float().unsqueeze(1)
    box = torch.from_numpy(box_mask(spatial, Box(start=(1,) * len(spatial), size=tuple(n // 2 for n in spatial))))
    (x_u, y_u), (x_l, y_l) = bidirectional_copy_paste(xl, yl, xu, yu, box)
    assert x_u.shape == (b // 2, 1, *spatial) and y_l.shape == (b // 2, *spatial)
    for image, label in ((x_u, y_u), (x_l, y_l)):
        value = image[:, 0]
        assert torch.equal(value - torch.where(value >= 20, 20, 10), label.float())  # image and label agree
    # unlabeled surroundings around a labeled box, from the first halves
    assert (x_u[:, 0][:, box] < 20).all() and (x_u[:, 0][:, ~box] >= 20).all()
    assert torch.equal(y_u[:, box], yl[:2][:, box]) and torch.equal(y_u[:, ~box], yu[:2][:, ~box])
    # labeled surroundings around an unlabeled box, from the second halves
    assert (x_l[:, 0][:, box] >= 20).all() and (x_l[:, 0][:, ~box] < 20).all()
    assert torch.equal(y_l[:, box], yu[2:][:, box]) and torch.equal(y_l[:, ~box], yl[2:][:, ~box])


def test_region_loss_weighs_each_region_on_its_own():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 10, 10)
    labels = torch.randint(0, 3, (2, 10, 10))
    box = torch.from_numpy(box_mask((10, 10), Box(start=(2, 3), size=(6, 6))))
    inside = box.expand(2, 10, 10)
    outer, inner = masked_dice_ce(logits, labels, ~inside), masked_dice_ce(logits, labels, inside)
    assert region_loss(logits, labels, box, 0.5, 1.0).item() == pytest.approx(0.5 * outer.item() + inner.item())
    # Each region is averaged over its own pixels: a 36-pixel box counts as much as its 64-pixel surroundings.
    assert region_loss(logits, labels, box, 1.0, 1.0).item() == pytest.approx(outer.item() + inner.item())
    other = labels.clone()
    other[~inside] = (other[~inside] + 1) % 3
    assert region_loss(logits, other, box, 0.0, 1.0).item() == pytest.approx(inner.item())


# ---- end to end --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_bcp_both_stages_end_to_end(tmp_path, data2d, data3d, dims):  # noqa: F811 - fixtures
    cfg = tiny_config(tmp_path, data2d if dims == 2 else data3d, "bcp", dims, options={"pretrain_fraction": 0.5})
    out = uncol.train(cfg, show_progress=False, run_dir=tmp_path / "run", evaluate_splits=("test",))
    assert out["train"]["steps_done"] == 6
    assert 0.0 <= out["test"]["summary"]["mean"]["dice"]["mean"] <= 1.0
    rows = read_log(tmp_path / "run")
    assert column(rows, "stage") == [1, 1, 1, 2, 2, 2]
    assert all(math.isfinite(v) and v > 0 for v in column(rows, "loss"))
    assert len(column(rows, "loss_unlabeled_outside")) == 3 and len(column(rows, "loss_labeled_outside")) == 3
    assert all(0.0 <= v <= 1.0 for v in column(rows, "largest_component_reset"))
    assert teacher_differs_from_student(modules_of(tmp_path / "run"))
    # Pretraining draws no unlabeled images: every drawn image is trained on.
    b = cfg.train.batch_size
    assert out["train"]["images_seen"] == {"labeled": 6 * b, "unlabeled": 3 * b}
    assert out["train"]["images_trained"] == out["train"]["images_seen"]
    assert RunPaths(tmp_path / "run").branch_point(3).exists()  # the switch checkpoint is kept


def test_teacher_starts_from_the_pretrained_student_with_constant_momentum(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "bcp", options={"pretrain_fraction": 0.5}, iterations=4, val_every=0)
    first = Trainer(cfg, tmp_path / "run", show_progress=False, stop_after=2)  # pretraining: steps 0-1
    first.fit()
    pretrained = {n: p.detach().clone() for n, p in first.method.network.named_parameters()}
    second = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False, stop_after=3)
    second.fit()
    ema = dict(second.method.ema.module.named_parameters())
    # Step 2 set the teacher to the pretrained student, then averaged with momentum 0.99, no warm-up.
    for n, p in second.method.network.named_parameters():
        assert torch.allclose(ema[n], 0.99 * pretrained[n] + 0.01 * p.detach(), atol=1e-6), n


def test_resume_across_the_stage_switch_is_identical(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "bcp", options={"pretrain_fraction": 0.5})
    Trainer(cfg, tmp_path / "ref", show_progress=False).fit()
    Trainer(cfg, tmp_path / "run", show_progress=False, stop_after=3).fit()  # stopped exactly at the switch
    Trainer(cfg, tmp_path / "run", resume=True, show_progress=False).fit()
    assert_same_modules(modules_of(tmp_path / "ref"), modules_of(tmp_path / "run"))
    assert column(read_log(tmp_path / "ref"), "loss") == column(read_log(tmp_path / "run"), "loss")


def test_pretraining_mixes_the_two_halves_of_the_labeled_batch(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "bcp", options={"pretrain_fraction": 1.0}, batch_size=4)
    method = BCP(cfg, torch.nn.Conv2d(1, 3, 1))
    assert not method.uses_unlabeled and method.deferred_options() == (0, frozenset())
    ctx = StepContext(0, 6, torch.device("cpu"))
    box = method.box((32, 32), ctx)
    assert int(box.sum()) == 21 * 21 and torch.equal(box, method.box((32, 32), ctx))  # int(32 x 2/3) per side
    y = torch.randint(0, 3, (4, 32, 32))
    x = y.float().unsqueeze(1)
    out = method.train_step({"image": x, "label": y}, ctx)
    logits = method.network(mix(x[:2], x[2:], box))
    expected = 0.5 * region_loss(logits, mix(y[:2], y[2:], box), box, 1.0, 1.0)
    assert out["loss"].item() == pytest.approx(expected.item())


def test_options_and_batch_size_are_checked(tmp_path, data2d):  # noqa: F811
    base = tiny_config(tmp_path, data2d, "bcp").to_dict()
    with pytest.raises(ConfigError, match="train.batch_size"):
        config_from_dict(base, ["train.batch_size=3"])
    for bad, key in (({"box_fraction": 0.0}, "method.bcp.box_fraction"),
                     ({"pretrain_fraction": 1.5}, "method.bcp.pretrain_fraction"),
                     ({"unlabeled_weight": -1.0}, "method.bcp.unlabeled_weight")):
        with pytest.raises(ConfigError, match=key):
            config_from_dict(base | {"method": {"name": "bcp", "bcp": bad}})


def test_self_training_weighs_pseudo_labels_in_both_directions(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "bcp", options={"pretrain_fraction": 0.0, "unlabeled_weight": 0.25,
                                                       "teacher_mode": "eval"}, batch_size=4)
    torch.manual_seed(0)
    method = BCP(cfg, torch.nn.Conv2d(1, 3, 3, padding=1))
    xl, xu = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    yl = torch.randint(0, 3, (4, 32, 32))
    ctx = StepContext(0, 6, torch.device("cpu"))
    out = method.train_step({"image": xl, "label": yl, "unlabeled_image": xu}, ctx)
    assert out["stage"].item() == 2.0
    pseudo = keep_largest_component_per_class(method.ema(xu).argmax(1), 3)
    box = method.box((32, 32), ctx)
    net = method.network
    unlabeled_outside = region_loss(net(mix(xu[:2], xl[:2], box)), mix(pseudo[:2], yl[:2], box), box, 0.25, 1.0)
    labeled_outside = region_loss(net(mix(xl[2:], xu[2:], box)), mix(yl[2:], pseudo[2:], box), box, 1.0, 0.25)
    assert out["loss_unlabeled_outside"].item() == pytest.approx(unlabeled_outside.item(), rel=1e-5)
    assert out["loss_labeled_outside"].item() == pytest.approx(labeled_outside.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * (unlabeled_outside + labeled_outside).item(), rel=1e-5)
