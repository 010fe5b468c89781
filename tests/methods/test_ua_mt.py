"""UA-MT end to end (2D and 3D), its threshold schedule, the stochastic teacher passes and option checks."""

from __future__ import annotations

import math

import pytest
import torch
from baseline_runs import (
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
from uncol.engine import Trainer
from uncol.errors import ConfigError
from uncol.methods import StepContext
from uncol.methods.ua_mt import UAMT


@pytest.mark.parametrize("dims", [2, 3])
def test_ua_mt_end_to_end(tmp_path, data2d, data3d, dims):  # noqa: F811 - fixtures
    cfg = tiny_config(tmp_path, data2d if dims == 2 else data3d, "ua_mt", dims, options={"uncertainty_passes": 4})
    out = uncol.train(cfg, show_progress=False, run_dir=tmp_path / "run", evaluate_splits=())
    assert out["train"]["steps_done"] == 6
    rows = read_log(tmp_path / "run")
    for key in ("loss", "loss_sup", "loss_cons", "uncertainty"):
        assert all(math.isfinite(v) for v in column(rows, key)), key
    threshold = column(rows, "threshold")
    assert threshold == sorted(threshold) and math.log(2) * 0.75 < threshold[0] < threshold[-1] <= math.log(2)
    confident = column(rows, "confident")
    assert all(0.0 <= c <= 1.0 for c in confident) and max(confident) > 0
    assert teacher_differs_from_student(modules_of(tmp_path / "run"))


@pytest.mark.parametrize(("base", "scale"), [("ln2", math.log(2)), ("lnK", math.log(3))])
def test_threshold_at_the_start_and_end_of_training(tmp_path, data2d, base, scale):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "ua_mt", options={"threshold_base": base}, iterations=40)
    method = UAMT(cfg, torch.nn.Conv2d(1, 3, 1))
    assert method.threshold(0) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * scale)
    assert method.threshold(40) == pytest.approx(scale)
    half = UAMT(tiny_config(tmp_path, data2d, "ua_mt", options={"threshold_base": base, "threshold_rampup": 0.5},
                            iterations=40), torch.nn.Conv2d(1, 3, 1))
    assert half.threshold(20) == pytest.approx(scale) and half.threshold(10) < scale


def test_uncertainty_passes_use_noise_and_dropout(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "ua_mt", options={"uncertainty_passes": 3, "noise_std": 0.0,
                                                         "teacher_mode": "eval"})
    ctx = StepContext(0, 6, torch.device("cpu"))
    xu = torch.randn(2, 1, 8, 8)
    # No noise, no dropout, running statistics: every pass is the same, the entropy is that of one pass.
    plain = UAMT(cfg, torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1)))
    single = torch.softmax(plain.ema(xu), dim=1)
    expected = -(single * single.clamp_min(1e-8).log()).sum(1)
    assert torch.allclose(plain.uncertainty(xu, ctx), expected, atol=1e-5)
    # Dropout layers drop in the uncertainty passes even with teacher_mode=eval (then go back to eval mode).
    dropped = UAMT(cfg, torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Conv2d(1, 3, 3, padding=1)))
    h = dropped.uncertainty(xu, ctx)
    one = torch.softmax(dropped.ema(xu), dim=1)
    assert h.shape == (2, 8, 8)
    assert not torch.allclose(h, -(one * one.clamp_min(1e-8).log()).sum(1), atol=1e-3)
    assert not any(m.training for m in dropped.ema.module.modules())


def test_resume_and_option_checks(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "ua_mt", options={"uncertainty_passes": 2}, iterations=4, val_every=0)
    Trainer(cfg, tmp_path / "ref", show_progress=False).fit()
    Trainer(cfg, tmp_path / "run", show_progress=False, stop_after=3).fit()
    Trainer(cfg, tmp_path / "run", resume=True, show_progress=False).fit()
    a, b = modules_of(tmp_path / "ref"), modules_of(tmp_path / "run")
    assert all(torch.equal(a[p][k], b[p][k]) for p in a for k in a[p])
    base = cfg.to_dict()
    for bad, key in (({"uncertainty_passes": 0}, "method.ua_mt.uncertainty_passes"),
                     ({"threshold_start": 0.9, "threshold_end": 0.8}, "method.ua_mt.threshold_start"),
                     ({"ema_decay": 0.0}, "method.ua_mt.ema_decay"),
                     ({"threshold_base": "ln3"}, "threshold_base")):
        with pytest.raises(ConfigError, match=key):
            config_from_dict(base | {"method": {"name": "ua_mt", "ua_mt": bad}})


def test_consistency_counts_only_where_the_teacher_is_certain(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "ua_mt", options={"teacher_mode": "eval", "noise_std": 0.0})
    net = torch.nn.Conv2d(1, 3, 1)
    with torch.no_grad():  # logits (-4x, 0, 4x): certain where |x| is large, near uniform where x ~ 0
        net.weight.copy_(torch.tensor([-4.0, 0.0, 4.0]).view(3, 1, 1, 1))
        net.bias.zero_()
    method = UAMT(cfg, net)
    with torch.no_grad():
        net.bias.add_(torch.tensor([0.3, -0.2, 0.1]))  # the student moves away from its teacher
    xu = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(2, 1, 1, 1)
    batch = {"image": torch.randn(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 8, 8)), "unlabeled_image": xu}
    out = method.train_step(batch, StepContext(0, 6, torch.device("cpu")))
    p_t = torch.softmax(method.ema(xu), dim=1)
    p_s = torch.softmax(net(xu), dim=1)
    certain = -(p_t * p_t.log()).sum(1) < (0.75 + 0.25 * math.exp(-5)) * math.log(2)
    assert 0 < float(certain.float().mean()) < 1 and out["confident"].item() == float(certain.float().mean())
    by_hand = ((p_s - p_t) ** 2).sum(1)[certain].sum() / (2 * certain.sum())
    assert out["loss_cons"].item() == pytest.approx(by_hand.item(), rel=1e-5)
