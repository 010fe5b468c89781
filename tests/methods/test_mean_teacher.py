"""Mean Teacher end to end (2D and 3D), its EMA warm-up, resumption, teacher noise and option checks."""

from __future__ import annotations

import math

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
from uncol.engine import Trainer
from uncol.errors import ConfigError
from uncol.methods import StepContext
from uncol.methods.mean_teacher import MeanTeacher, step_generator, teacher_noise


@pytest.mark.parametrize("dims", [2, 3])
def test_mean_teacher_end_to_end(tmp_path, data2d, data3d, dims):  # noqa: F811 - fixtures
    cfg = tiny_config(tmp_path, data2d if dims == 2 else data3d, "mean_teacher", dims)
    out = uncol.train(cfg, show_progress=False, run_dir=tmp_path / "run", evaluate_splits=("test",))
    assert out["train"]["steps_done"] == 6
    assert 0.0 <= out["test"]["summary"]["mean"]["dice"]["mean"] <= 1.0
    rows = read_log(tmp_path / "run")
    for key in ("loss", "loss_sup", "loss_cons"):
        values = column(rows, key)
        assert len(values) == 6 and all(v == v and abs(v) < 1e6 for v in values), key
    assert max(column(rows, "loss_cons")) > 0  # the student and the noisy-input teacher disagree
    w = column(rows, "w_cons")  # Gaussian ramp over the whole run towards consistency_weight
    assert w == sorted(w) and w[0] == pytest.approx(0.2 * torch.tensor(-5.0).exp().item())
    assert teacher_differs_from_student(modules_of(tmp_path / "run"))


def test_first_ema_update_copies_the_student_then_averages(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "mean_teacher", iterations=4, val_every=0)
    first = Trainer(cfg, tmp_path / "run", show_progress=False, stop_after=1)
    first.fit()
    m = first.method
    assert isinstance(m, MeanTeacher)
    after1 = {n: p.detach().clone() for n, p in m.network.named_parameters()}
    for n, p in m.ema.module.named_parameters():
        assert torch.equal(p, after1[n]), n  # momentum min(1 - 1/1, 0.99) = 0 at step 0 (the references')
    second = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False, stop_after=2)
    second.fit()
    ema = dict(second.method.ema.module.named_parameters())
    for n, p in second.method.network.named_parameters():
        assert torch.allclose(ema[n], 0.5 * after1[n] + 0.5 * p.detach(), atol=1e-6), n  # 1 - 1/2 at step 1


def test_resume_gives_identical_student_and_teacher(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "mean_teacher")
    Trainer(cfg, tmp_path / "ref", show_progress=False).fit()
    Trainer(cfg, tmp_path / "run", show_progress=False, stop_after=3).fit()  # 3: between two checkpoints
    Trainer(cfg, tmp_path / "run", resume=True, show_progress=False).fit()
    assert_same_modules(modules_of(tmp_path / "ref"), modules_of(tmp_path / "run"))
    assert column(read_log(tmp_path / "ref"), "loss") == column(read_log(tmp_path / "run"), "loss")


def test_teacher_noise_is_clamped_and_reproducible():
    x = torch.zeros(2, 1, 64, 64)
    gen = step_generator(0, 5, 21, torch.device("cpu"))
    noisy = teacher_noise(x, 0.1, 0.2, gen)
    assert noisy.abs().max() <= 0.2 + 1e-7 and (noisy.abs() == 0.2).any()  # N(0, 0.1) exceeds 2 sigma somewhere
    assert 0.08 < float(noisy.std()) < 0.1
    again = teacher_noise(x, 0.1, 0.2, step_generator(0, 5, 21, torch.device("cpu")))
    other = teacher_noise(x, 0.1, 0.2, step_generator(0, 6, 21, torch.device("cpu")))
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)


def test_teacher_mode_train_uses_batch_statistics(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "mean_teacher")
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    method = trainer.method
    x = torch.randn(2, 1, 32, 32) * 3 + 1
    as_references = method.teacher_forward(x)
    assert not method.ema.module.training and not any(m.training for m in method.ema.module.modules())
    with torch.no_grad():
        running = method.ema(x)
    assert not torch.allclose(as_references, running)
    eval_cfg = tiny_config(tmp_path, data2d, "mean_teacher", options={"teacher_mode": "eval"})
    evaluated = MeanTeacher(eval_cfg, method.network)
    with torch.no_grad():
        assert torch.equal(evaluated.teacher_forward(x), evaluated.ema(x))  # running statistics


def test_options_are_checked_with_their_dotted_names(tmp_path, data2d):  # noqa: F811
    base = tiny_config(tmp_path, data2d, "mean_teacher").to_dict()
    for bad, key in (({"ema_decay": 1.5}, "method.mean_teacher.ema_decay"),
                     ({"consistency_rampup": 2.0}, "method.mean_teacher.consistency_rampup"),
                     ({"noise_std": -0.1}, "method.mean_teacher.noise_std")):
        with pytest.raises(ConfigError, match=key):
            config_from_dict(base | {"method": {"name": "mean_teacher", "mean_teacher": bad}})
    cfg = config_from_dict(base, ["method.mean_teacher.unlabeled_batch_size=3"])
    assert cfg.method.options.unlabeled_batch_size == 3


def test_consistency_compares_the_student_with_the_teacher_on_noisy_unlabeled_images(tmp_path, data2d):  # noqa: F811
    def method(noise_std: float) -> MeanTeacher:
        cfg = tiny_config(tmp_path, data2d, "mean_teacher", options={"teacher_mode": "eval", "noise_std": noise_std})
        torch.manual_seed(0)
        return MeanTeacher(cfg, torch.nn.Conv2d(1, 3, 3, padding=1))

    torch.manual_seed(1)
    batch = {"image": torch.randn(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 8, 8)),
             "unlabeled_image": torch.randn(2, 1, 8, 8)}
    ctx = StepContext(0, 6, torch.device("cpu"))
    # At initialisation the teacher is the student: without noise they agree exactly, with noise they do not.
    assert method(0.0).train_step(batch, ctx)["loss_cons"].item() == 0.0
    noisy = method(0.1)
    out = noisy.train_step(batch, ctx)
    p_s = torch.softmax(noisy.network(batch["unlabeled_image"]), dim=1)
    p_t = torch.softmax(noisy.ema(noisy.noisy_unlabeled(batch, ctx)), dim=1)
    assert out["loss_cons"].item() == pytest.approx(((p_s - p_t) ** 2).mean().item()) and out["loss_cons"] > 0
    # w(0) = 0.2 exp(-5): the total is the supervised loss plus the weighted consistency
    expected = out["loss_sup"] + 0.2 * math.exp(-5) * out["loss_cons"]
    assert out["loss"].item() == pytest.approx(expected.item())
