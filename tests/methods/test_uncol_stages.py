"""UnCoL's stages as in the paper: the EMA teacher through both stages, a learning-rate schedule per stage,
jittered stage-2 box prompts, the stage-2 adapter context of labeled images, and UA-MT's entropy gate
(``ln 2`` base) with its confident fractions in log.csv.

Uses the stand-in teacher and tiny datasets of test_uncol.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import test_uncol
import torch
from test_uncol import LAYERS, column, read_log, uncol_config

from fake_teacher import FakeTeacher
from uncol.config import config_from_dict
from uncol.engine import Trainer, lr_factor
from uncol.errors import ConfigError
from uncol.methods.base import StepContext
from uncol.methods.consistency import uncertainty_threshold
from uncol.methods.uncol.distillation import token_mask
from uncol.methods.uncol.jittered_targets import JitteredPromptTargets
from uncol.methods.uncol.pseudo_labels import entropy_threshold
from uncol.teachers.prompts import boxes_from_pseudo_label, jitter_in_pixels

# The fixtures of test_uncol.py: the stand-in teacher and the tiny 2D dataset.
fake_litemedsam = test_uncol.fake_litemedsam
data2d = test_uncol.data2d

# ---- EMA teacher ------------------------------------------------------------------------------------


def test_ema_teacher_follows_the_student_across_the_stage_switch(tmp_path, fake_litemedsam, data2d):
    cfg = uncol_config(tmp_path, data2d, iterations=4)  # stage 1: steps 0-1, stage 2: steps 2-3
    first = Trainer(cfg, tmp_path / "run", show_progress=False, stop_after=2)
    first.fit()
    student1 = {n: p.detach().clone() for n, p in first.method.network.named_parameters()}
    ema1 = {n: p.detach().clone() for n, p in first.method.ema.module.named_parameters()}
    # Stage 1 already averaged: after two steps the teacher is no copy of the student.
    assert any(not torch.allclose(ema1[n], student1[n]) for n in ema1)
    second = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False, stop_after=3)
    second.fit()  # step 2: the first stage-2 step
    student2 = dict(second.method.network.named_parameters())
    ema2 = dict(second.method.ema.module.named_parameters())
    alpha = min(1.0 - 1.0 / (2 + 1), cfg.method.options.ema_decay)  # the EMA's clock runs from step 0
    for n, p in student2.items():
        assert torch.allclose(ema2[n], alpha * ema1[n] + (1 - alpha) * p.detach(), atol=1e-6), n
    # The old behaviour (the teacher reset to the stage-1 student at the switch) would give this instead.
    reset = {n: 0.5 * student1[n] + 0.5 * p.detach() for n, p in student2.items()}
    assert any(not torch.allclose(ema2[n], reset[n], atol=1e-6) for n in reset)


# ---- learning rate ----------------------------------------------------------------------------------


def poly(step: int, length: int) -> float:
    return lr_factor("poly", step, length)


@pytest.mark.parametrize("mode", ["per_stage", "whole_run"])
def test_lr_at_the_first_stage2_step(tmp_path, fake_litemedsam, data2d, mode):
    cfg = uncol_config(tmp_path, data2d, method={"lr_schedule": mode}, iterations=4, val_every=0)
    run = tmp_path / mode
    trainer = Trainer(cfg, run, show_progress=False)
    trainer.fit()
    s1, lr = trainer.method.stage1_steps, cfg.train.lr
    assert s1 == 2
    # log.csv's lr at row `step` is the rate of the step with that zero-based index: row 2 is stage 2's first.
    lrs = dict(zip(column(read_log(run), "step"), column(read_log(run), "lr"), strict=True))
    if mode == "per_stage":
        assert lrs[s1] == pytest.approx(lr)  # restarted at the base rate, as the paper's separate stages
        assert lrs[1] == pytest.approx(lr * poly(1, s1))  # stage 1 decays over its own steps
        assert lrs[3] == pytest.approx(lr * poly(1, 2))
    else:
        assert lrs[s1] == pytest.approx(lr * poly(2, 4))  # one schedule: stage 2 starts decayed
        assert lrs[s1] < 0.6 * lr


def test_lr_factor_is_one_schedule_without_stage2(tmp_path, fake_litemedsam, data2d):
    cfg = uncol_config(tmp_path, data2d, method={"pseudo_labels": "none"}, iterations=4, val_every=0)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    assert [trainer.method.lr_factor(s, poly) for s in range(5)] == [poly(s, 4) for s in range(5)]


# ---- stage-2 prompts --------------------------------------------------------------------------------


def one_sample_targets(tmp_path, data, jitter: float) -> JitteredPromptTargets:
    from uncol.data.index import discover
    from uncol.data.training import SampleSet
    from uncol.teachers.cache import FeatureCache

    cfg = uncol_config(tmp_path, data)
    samples = SampleSet(discover(cfg.data).train[:1], cfg, use_labels=False)
    teacher = FakeTeacher(layers=LAYERS, token_grid=8, size=64)
    return JitteredPromptTargets(
        teacher, FeatureCache(teacher, tmp_path / "cache"), samples, cfg, (8, 8), embeddings=True, box_jitter_px=jitter
    )


def square_pseudo_label() -> torch.Tensor:
    p = torch.zeros(1, 3, 32, 32)
    p[:, 0] = 1.0
    p[:, 0, 8:20, 10:24] = 0.0
    p[:, 2, 8:20, 10:24] = 1.0  # class 2: rows 8-19, columns 10-23
    return p


def test_stage2_box_jitter_is_bounded_and_seeded(tmp_path, data2d):
    targets = one_sample_targets(tmp_path, data2d, jitter=200.0)
    probs = square_pseudo_label()[0].numpy()
    tight = boxes_from_pseudo_label(probs, 3, 0.0, None, targets.cfg.teacher.min_pixels).boxes[1]
    jy, jx = jitter_in_pixels(200.0, 64, (32, 32), True)
    assert jy == pytest.approx(6.25)  # 200 px at 1024 is 12.5 px on the 64 px canvas, 6.25 image px
    boxes = []
    for seed in range(20):
        box = targets.box_prompts(probs, np.random.default_rng(seed)).boxes[1]
        x0, y0, x1, y1 = box
        # Every side moves outward by at most the jitter (and stays in the image).
        assert tight[0] - jx - 1e-5 <= x0 <= tight[0] and tight[1] - jy - 1e-5 <= y0 <= tight[1]
        assert tight[2] <= x1 <= min(31, tight[2] + jx) + 1e-5 and tight[3] <= y1 <= tight[3] + jy + 1e-5
        boxes.append(box)
    assert not all(np.array_equal(b, boxes[0]) for b in boxes)  # jittered, not tight
    again = targets.box_prompts(probs, np.random.default_rng(3)).boxes[1]
    assert np.array_equal(again, boxes[3])  # deterministic under a seed
    # What the foundation teacher is prompted with in stage 2: the same seed, the same probabilities.
    view = ((False, False), 0)
    a = targets.pseudo_label_probabilities([0], [view], square_pseudo_label(), np.random.default_rng(5))
    b = targets.pseudo_label_probabilities([0], [view], square_pseudo_label(), np.random.default_rng(5))
    assert torch.equal(a, b)
    # The stand-in teacher fills its box: a jittered box covers the tight one and more.
    flat = one_sample_targets(tmp_path / "tight", data2d, jitter=0.0)
    t = flat.pseudo_label_probabilities([0], [view], square_pseudo_label(), np.random.default_rng(5))
    fg_j, fg_t = a[0].argmax(0) == 2, t[0].argmax(0) == 2
    assert bool((fg_j | ~fg_t).all()) and int(fg_j.sum()) > int(fg_t.sum())


def test_stage2_box_jitter_option_reaches_the_targets(tmp_path, fake_litemedsam, data2d):
    for on in (True, False):
        cfg = uncol_config(tmp_path, data2d, method={"stage2_box_jitter": on}, iterations=4, val_every=0)
        trainer = Trainer(cfg, tmp_path / f"run{on}", show_progress=False)
        trainer.setup()
        assert cfg.teacher.box_jitter_px > 0
        assert trainer.method.targets_u.box_jitter_px == (cfg.teacher.box_jitter_px if on else 0.0)


# ---- stage-2 adapter context ------------------------------------------------------------------------


def stage2_trainer(tmp_path, data, **method):
    cfg = uncol_config(tmp_path, data, method=method, iterations=4, val_every=0)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    return trainer


def test_stage2_labeled_context_is_the_foundation_teachers_features(tmp_path, fake_litemedsam, data2d):
    trainer = stage2_trainer(tmp_path, data2d)
    meth = trainer.method
    step = meth.stage1_steps
    batch = trainer._to_device(trainer.batches[step])
    n = batch["image"].shape[0]
    ids, views = batch["ids"][:n], batch["geometry"][:n]
    xl, xu = batch["image"][:n], batch["unlabeled_image"]
    with torch.no_grad():
        sem, _ = meth.targets_l.semantic_targets(ids, views, xl.device)
        foundation = meth.network.adapter.context_tokens(sem)  # (n, N, D): projected fused features
        ema_l = meth.ema(xl, return_features=True).layers[-1]
        ema_u = meth.ema(xu, return_features=True).layers[-1][[i % xu.shape[0] for i in range(n)]]
    assert foundation.shape == ema_l.shape and not torch.allclose(foundation, ema_l)
    # The pieces: each token of a mixed image attends to the context of the image its pixels come from.
    m = torch.zeros(n, 32, 32, dtype=torch.bool)
    m[:, :16] = True  # the top half from the other image
    mt = token_mask(m, meth.patch)[:, None]
    with torch.no_grad():
        ctx = meth._stage2_context(xl, ids, views, ema_u, mt)
    top = mt.flatten(1)  # (n, N) True: token from the other image
    assert torch.allclose(ctx[:n][~top], foundation[~top]) and torch.allclose(ctx[:n][top], ema_u[top])
    assert torch.allclose(ctx[n:][~top], ema_u[~top]) and torch.allclose(ctx[n:][top], foundation[top])
    # The real stage-2 step hands the adapter these tokens: each of a labeled-based image's tokens is the
    # foundation teacher's or the paired unlabeled image's EMA token, and some are the foundation's.
    seen: list[torch.Tensor] = []
    hook = meth.network.adapter.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    try:
        meth.train_step(batch, StepContext(step, 4, xl.device))
    finally:
        hook.remove()
    (given,) = seen
    labeled_based = given[:n]
    from_foundation = (labeled_based - foundation).abs().amax(-1) < 1e-5
    from_ema = (labeled_based - ema_u).abs().amax(-1) < 1e-5
    assert bool((from_foundation | from_ema).all()) and bool(from_foundation.any())


def test_stage2_labeled_context_ema_keeps_the_old_behaviour(tmp_path, fake_litemedsam, data2d):
    meth = stage2_trainer(tmp_path, data2d, stage2_labeled_context="ema").method
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        got = meth.labeled_context(x, [0, 1], [((False, False), 0)] * 2)
        assert torch.allclose(got, meth.ema(x, return_features=True).layers[-1])


# ---- entropy gate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4])
def test_entropy_threshold_at_both_ends_of_the_ramp(k):
    for base, scale in (("ln2", math.log(2)), ("lnK", math.log(k))):
        assert uncertainty_threshold(0.0, k, 0.75, 1.0, base) == pytest.approx(0.75 * scale)
        assert uncertainty_threshold(1.0, k, 0.75, 1.0, base) == pytest.approx(scale)
        assert entropy_threshold(1.0, k, base=base) == pytest.approx(scale)
    assert entropy_threshold(1.0, k) == pytest.approx(math.log(2))  # UA-MT's reference code by default


@pytest.mark.parametrize("base", ["ln2", "lnK"])
def test_uncol_threshold_uses_the_configured_base(tmp_path, fake_litemedsam, data2d, base):
    meth = stage2_trainer(tmp_path, data2d, threshold_base=base, consistency_rampup=0.5).method
    scale = math.log(2) if base == "ln2" else math.log(3)
    s1 = meth.stage1_steps
    assert meth.stage2_ramp(s1) == pytest.approx(math.exp(-5))  # r(0) of the Gaussian ramp
    assert meth.threshold(s1) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * scale)
    assert meth.stage2_ramp(s1 + 1) == 1.0 and meth.threshold(s1 + 1) == pytest.approx(scale)  # r = 1


def test_threshold_options_are_checked(tmp_path, data2d):
    base = uncol_config(tmp_path, data2d).to_dict()

    def with_section(**kw: object) -> None:
        config_from_dict(base | {"method": {"name": "uncol", "uncol": base["method"]["uncol"] | kw}})

    with_section(threshold_end=1.5)  # a fraction of ln 2 may exceed 1 with three classes
    with pytest.raises(ConfigError, match="method.uncol.threshold_start/threshold_end"):
        with_section(threshold_base="lnK", threshold_end=1.5)
    with pytest.raises(ConfigError, match="method.uncol.threshold_base"):
        with_section(threshold_base="ln3")


def test_confident_fractions_are_logged(tmp_path, fake_litemedsam, data2d):
    cfg = uncol_config(tmp_path, data2d, val_every=0)
    Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    rows = [r for r in read_log(tmp_path / "run") if float(r["stage"]) == 2]
    assert rows
    for r in rows:
        g, s, f = (float(r[f"confident_{k}"]) for k in ("general", "specialized", "fused"))
        assert 0 <= g <= 1 and 0 <= s <= 1 and max(g, s) <= f <= min(1.0, g + s) + 1e-6
        assert f == pytest.approx(1 - float(r["frac_none"]))
        assert 0.75 * math.log(2) - 1e-6 <= float(r["threshold"]) <= math.log(2) + 1e-6  # UA-MT's ln 2 base
    # The EMA teacher alone: only its fraction.
    spec = dataclasses.replace(cfg, name="spec")
    spec = dataclasses.replace(
        spec, method=dataclasses.replace(spec.method, options=dataclasses.replace(spec.method.options,
                                                                                    pseudo_labels="specialized"))
    )
    Trainer(spec, tmp_path / "spec", show_progress=False).fit()
    rows = [r for r in read_log(tmp_path / "spec") if float(r["stage"]) == 2]
    assert rows and all(0 <= float(r["confident_specialized"]) <= 1 for r in rows)
    assert all(r.get("confident_general", "") == "" for r in rows)


@pytest.mark.parametrize(
    ("stage2_labeled", "unlabeled", "world", "expected"),
    [
        (0, 2, 1, {"labeled": 10 * 4, "unlabeled": 4 * 2}),  # stage 2 reads every drawn image
        (2, 2, 1, {"labeled": 6 * 4 + 4 * 2, "unlabeled": 4 * 2}),  # 2 of the 4 labeled in stage 2
        (2, 4, 1, {"labeled": 6 * 4 + 4 * 2, "unlabeled": 4 * 2}),  # unlabeled images beyond the pairs unused
        (2, 2, 2, {"labeled": 2 * (6 * 4 + 4 * 2), "unlabeled": 2 * 4 * 2}),  # two processes draw twice
    ],
)
def test_images_trained_counts_what_each_stage_reads(tmp_path, data2d, stage2_labeled, unlabeled, world, expected):
    from uncol.methods.registry import images_trained

    cfg = uncol_config(tmp_path, data2d, method={"stage1_fraction": 0.6, "stage2_labeled_batch": stage2_labeled,
                                                "unlabeled_batch_size": unlabeled}, iterations=10, batch_size=4)
    # Runs recorded before the batch followed the stages drew the full batch in every step; now each step draws
    # what it reads: both read the same.
    full_batches = {"labeled": world * 10 * 4, "unlabeled": world * 10 * unlabeled}
    assert images_trained(cfg, 10, full_batches) == expected
    assert images_trained(cfg, 10, expected) == expected
    # Part-way through stage 1 nothing unlabeled has been trained on.
    assert images_trained(cfg, 5, {"labeled": 5 * 4, "unlabeled": 5 * unlabeled}) == {"labeled": 20, "unlabeled": 0}
    stage1_only = uncol_config(tmp_path, data2d, method={"pseudo_labels": "none"}, iterations=10, batch_size=4)
    assert images_trained(stage1_only, 10, {"labeled": 40, "unlabeled": 0}) == {"labeled": 40, "unlabeled": 0}
    # No stage 1 at all: stage 2's batch from step 0.
    stage2_only = uncol_config(tmp_path, data2d, method={"stage1_fraction": 0.0, "stage2_labeled_batch": 2},
                               iterations=10, batch_size=4)
    assert images_trained(stage2_only, 10, {"labeled": 20, "unlabeled": 20}) == {"labeled": 20, "unlabeled": 20}
    from uncol.methods import BatchPhase, DataNeeds
    from uncol.methods.uncol.method import UnCoLMethod

    assert DataNeeds(phases=UnCoLMethod.batch_phases(stage2_only)).phases == (BatchPhase(0, 2, 2),)
