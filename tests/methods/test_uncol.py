"""UnCoL end to end on tiny data (2D and 3D, both stages), its ablations, resumption and its pieces.

The foundation teacher is the stand-in of tests/fake_teacher.py (registered under the name
``litemedsam``), so the tests exercise every code path without the 1.7 s-per-image real encoder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import uncol
from fake_teacher import FakeTeacher
from fixtures_data import make_hdf5_dataset, make_nifti_dataset
from uncol import teachers
from uncol.config import AugmentConfig, Config, config_from_dict
from uncol.data.transforms import apply_augment, sample_augment
from uncol.engine import RunPaths, Trainer
from uncol.errors import ConfigError, UncolError
from uncol.methods.losses import masked_dice_ce
from uncol.methods.uncol.distillation import token_mask
from uncol.methods.uncol.targets import apply_view

LAYERS = ["stage1", "stage2", "neck", "fused"]


@pytest.fixture
def fake_litemedsam(monkeypatch: pytest.MonkeyPatch) -> list[FakeTeacher]:
    """Replace LiteMedSAM by the stand-in teacher; returns the instances built."""
    built: list[FakeTeacher] = []

    def factory(tc):
        t = FakeTeacher(layers=tc.layers, token_grid=tc.token_grid, size=64)
        built.append(t)
        return t

    monkeypatch.setitem(teachers.TEACHER_FACTORIES, "litemedsam", factory)
    return built


@pytest.fixture(scope="module")
def data2d(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("uncol2d")
    return make_hdf5_dataset(root / "data", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)


@pytest.fixture(scope="module")
def data3d(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("uncol3d")
    return make_nifti_dataset(root / "data", n_cases=6, shape=(16, 16, 16), num_classes=3, spacing=(1.0, 1.0, 1.0))


def uncol_config(tmp_path: Path, data, dims: int = 2, method: dict | None = None, **train: object) -> Config:
    patch = [32, 32] if dims == 2 else [16, 16, 16]
    values = {
        "name": f"uncol{dims}d",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 2 if dims == 2 else 0.5, "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {
            "arch": f"uncol_student{dims}d", "channels": [8, 16, 32], "vit_patch": 4, "vit_dim": 24,
            "vit_heads": 2, "vit_depth": 4, "context_dims": [8],
        },
        "augment": {"flip": True, "rotate90": dims == 2, "rotate_degrees": 0.0, "intensity": True},
        # The paper's adapter context exercises the teacher-context paths; the default is tested on its own.
        "method": {"name": "uncol", "uncol": {"unlabeled_batch_size": 2, "consistency_weight": 0.5,
                                              "stage1_fraction": 0.5, "adapter_context": "teacher"} | (method or {})},
        "teacher": {"name": "litemedsam", "layers": LAYERS, "token_grid": 8, "prompt": "box" if dims == 2 else "point",
                    "min_pixels": 2},
        "train": {
            "iterations": 6, "batch_size": 2, "patch_size": patch, "val_every": 3, "checkpoint_every": 2,
            "log_every": 1, "threads": 1, "lr": 0.01, "device": "cpu",
        }
        | train,
    }
    if dims == 3:
        values["data"]["slice_axis"] = 2
    return config_from_dict(values)


def read_log(run: Path) -> list[dict[str, str]]:
    with open(RunPaths(run).log_csv) as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.mark.parametrize("dims", [2, 3])
def test_both_stages_end_to_end(tmp_path, fake_litemedsam, data2d, data3d, dims):
    cfg = uncol_config(tmp_path, data2d if dims == 2 else data3d, dims)
    run = tmp_path / "run"
    summary = Trainer(cfg, run, show_progress=False).fit()
    assert summary.steps_done == 6
    rows = read_log(run)
    stages = column(rows, "stage")
    assert stages == [1, 1, 1, 2, 2, 2]
    # Stage 1 draws the labeled batch only; stage 2 the stage2_labeled_batch images it reads and as many
    # unlabeled ones as it pairs them with: every drawn image is trained on.
    m = cfg.method.options
    b = cfg.train.batch_size
    n = min(b, m.stage2_labeled_batch or b)
    assert summary.images_seen == {"labeled": 3 * b + 3 * n, "unlabeled": 3 * min(n, m.unlabeled_batch_size)}
    assert summary.images_trained == summary.images_seen
    # Stage 1: supervised + both distillation paths with a ramped weight.
    s1 = rows[:3]
    assert all(float(r["loss_visual"]) > 0 and float(r["loss_semantic"]) > 0 for r in s1)
    w = [float(r["w_distill"]) for r in s1]
    assert w[0] < w[-1] <= 1.0
    # Stage 2: pseudo-label loss, ramps, threshold and the per-teacher fractions, which sum to 1.
    s2 = rows[3:]
    for r in s2:
        fr = [float(r[k]) for k in ("frac_none", "frac_general", "frac_special", "frac_both")]
        assert sum(fr) == pytest.approx(1.0, abs=1e-6)
        assert float(r["loss_visual"]) > 0
        assert 0 < float(r["threshold"]) <= np.log(3) + 1e-6
    assert column(rows, "w_pseudo")[-1] == pytest.approx(0.5, abs=1e-6)
    # The foundation teacher was prompted from pseudo-labels during stage 2 (decoder calls after set-up).
    teacher = fake_litemedsam[-1]
    assert teacher.decode_calls > 0
    # The prompt-free student is what is selected, saved and evaluated on whole test cases.
    assert RunPaths(run).best.exists()
    result = uncol.evaluate(run, "test")
    assert 0.0 <= result["summary"]["mean"]["dice"]["mean"] <= 1.0


# The EMA teacher across the stage switch, the per-stage learning rate, the stage-2 prompts, adapter
# context and entropy gate: tests/methods/test_uncol_stages.py.


def test_resume_across_the_stage_switch_is_identical(tmp_path, fake_litemedsam, data2d):
    cfg = uncol_config(tmp_path, data2d)
    ref = tmp_path / "ref"
    Trainer(cfg, ref, show_progress=False).fit()
    run = tmp_path / "run"
    Trainer(cfg, run, show_progress=False, stop_after=3).fit()  # stopped exactly at the switch
    Trainer(cfg, run, resume=True, show_progress=False).fit()
    assert_same_modules(ref, run)


def assert_same_modules(ref: Path, run: Path) -> None:
    """The latest checkpoints of two UnCoL runs hold identical network, EMA and projection weights."""
    a, b = modules_of(ref), modules_of(run)
    for part in ("network", "ema", "projections"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resumption"


def with_method(cfg: Config, **method: object) -> Config:
    options = dataclasses.replace(cfg.method.options, **method)
    return dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, options=options))


def modules_of(run: Path) -> dict:
    return torch.load(RunPaths(run).latest, map_location="cpu", weights_only=False)["modules"]


def test_stage2_ablation_branched_from_the_stage1_checkpoint_equals_a_run_from_scratch(tmp_path, fake_litemedsam, data2d):
    full = uncol_config(tmp_path, data2d)  # stage 1: steps 0-2, stage 2: 3-5; validation at 3 and 6
    Trainer(full, tmp_path / "full", show_progress=False).fit()
    point = RunPaths(tmp_path / "full").branch_point(3)
    assert point.exists()  # the engine keeps the stage-switch checkpoint of every UnCoL run
    # The unlabeled batch too: stage 1 draws no unlabeled images.
    ablation = with_method(full, pseudo_labels="specialized", threshold_start=0.3, consistency_weight=0.3,
                           unlabeled_batch_size=1)
    Trainer(ablation, tmp_path / "scratch", show_progress=False).fit()
    branch = tmp_path / "branch"
    Trainer(ablation, branch, show_progress=False, branch_from=point).fit()
    a, b = modules_of(tmp_path / "scratch"), modules_of(branch)
    for part in ("network", "ema", "projections"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs between the branch and the scratch run"
    # Logs and validation rows of stage 1 are carried over; stage 2 is the ablation's own.
    def values(run: Path) -> list[dict[str, str]]:  # wall times differ; empty columns depend on the source run
        return [{k: v for k, v in r.items() if v != "" and k != "time_s"} for r in read_log(run)]

    assert values(branch) == values(tmp_path / "scratch")
    assert column(read_log(branch), "stage") == [1, 1, 1, 2, 2, 2]
    meta = json.loads(RunPaths(branch).branched_from.read_text())
    assert meta["step"] == 3 and "method.uncol.pseudo_labels" in meta["changed_options"]
    best = torch.load(RunPaths(branch).best, map_location="cpu", weights_only=False)
    ref = torch.load(RunPaths(tmp_path / "scratch").best, map_location="cpu", weights_only=False)
    assert best["step"] == ref["step"]
    assert all(torch.equal(best["network"][k], ref["network"][k]) for k in ref["network"])


def test_drawing_only_what_each_stage_reads_trains_the_same_weights(tmp_path, fake_litemedsam, data2d, monkeypatch):
    # Stage 2 reads 1 of the 2 labeled images of stage 1's batch and pairs it with 1 unlabeled image.
    cfg = uncol_config(tmp_path, data2d, method={"stage2_labeled_batch": 1, "unlabeled_batch_size": 1})
    phased = Trainer(cfg, tmp_path / "phased", show_progress=False).fit()
    from uncol.methods.base import DataNeeds
    from uncol.methods.uncol.method import UnCoLMethod

    # The loader as it was before the phases: the full labeled batch and the unlabeled images in every step.
    monkeypatch.setattr(UnCoLMethod, "data_needs",
                        lambda self: DataNeeds(unlabeled_batch_size=1, crop_multiple=self.patch))
    full = Trainer(cfg, tmp_path / "full", show_progress=False).fit()
    assert full.images_seen == {"labeled": 6 * 2, "unlabeled": 6 * 1}
    assert phased.images_seen == {"labeled": 3 * 2 + 3 * 1, "unlabeled": 3 * 1}
    assert phased.images_trained == full.images_trained == phased.images_seen
    a, b = modules_of(tmp_path / "phased"), modules_of(tmp_path / "full")
    for part in ("network", "ema", "projections"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs when the unread images are drawn"


def test_branching_refuses_options_that_stage1_read(tmp_path, fake_litemedsam, data2d):
    full = uncol_config(tmp_path, data2d)
    Trainer(full, tmp_path / "full", show_progress=False).fit()
    paths = RunPaths(tmp_path / "full")
    changed = with_method(full, copy_paste_ratio=0.3)
    with pytest.raises(ConfigError, match="method.uncol.copy_paste_ratio"):
        Trainer(changed, tmp_path / "b1", show_progress=False, branch_from=paths.branch_point(3)).fit()
    # No stage 2 moves the stage switch: not a stage-2 option.
    with pytest.raises(ConfigError, match="method.uncol.pseudo_labels"):
        Trainer(with_method(full, pseudo_labels="none"), tmp_path / "b2", show_progress=False,
                branch_from=paths.branch_point(3)).fit()
    # A checkpoint past the switch has already used the stage-2 options.
    with pytest.raises(ConfigError, match="step3.pt"):
        Trainer(with_method(full, threshold_start=0.3), tmp_path / "b3", show_progress=False,
                branch_from=tmp_path / "full").fit()
    with pytest.raises(UncolError, match="no such checkpoint"):
        Trainer(full, tmp_path / "b4", show_progress=False, branch_from=tmp_path / "nothing.pt").fit()


# Table 4 of the paper: each row as options, and what must (not) happen in it.
TABLE4 = {
    "student_only": ({"distill": "none", "pseudo_labels": "none", "adapter_context": "self"}, {"name": "none"}),
    "generalized_teacher_only": ({"distill": "none", "pseudo_labels": "generalized"}, {}),
    "specialized_teacher_only": ({"distill": "none", "pseudo_labels": "specialized", "adapter_context": "self"},
                                 {"name": "none"}),
    "visual_distillation": ({"distill": "visual", "pseudo_labels": "none"}, {}),
    "semantic_distillation": ({"distill": "semantic", "pseudo_labels": "none"}, {}),
    "dual_distillation": ({"distill": "both", "pseudo_labels": "none"}, {}),
    "specialized_pseudo_labels": ({"distill": "both", "pseudo_labels": "specialized"}, {}),
    "averaged_pseudo_labels": ({"distill": "both", "pseudo_labels": "average"}, {}),
    "uncertainty_pseudo_labels": ({"distill": "both", "pseudo_labels": "uncertainty"}, {}),
}


@pytest.mark.parametrize("row", list(TABLE4))
def test_table4_rows(tmp_path, fake_litemedsam, data2d, row):
    method, teacher = TABLE4[row]
    cfg = uncol_config(tmp_path, data2d, method=method, iterations=4, val_every=0)
    if teacher:
        cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, **teacher))
    run = tmp_path / row
    Trainer(cfg, run, show_progress=False).fit()
    rows = read_log(run)
    stages = column(rows, "stage")
    vis, sem = column(rows, "loss_visual"), column(rows, "loss_semantic")
    uses_teacher = teacher.get("name") != "none"
    assert bool(fake_litemedsam) == uses_teacher
    if method["pseudo_labels"] == "none":
        assert stages == [1, 1, 1, 1]  # no stage 2: the pretraining rows of Table 4
    else:
        assert stages == [1, 1, 2, 2]
        assert all(v >= 0 for v in column(rows, "loss_pseudo"))
    assert (max(vis) > 0) == (method["distill"] in ("both", "visual"))
    assert (max(sem) > 0) == (method["distill"] in ("both", "semantic"))
    last = rows[-1]
    if method["pseudo_labels"] in ("generalized", "average", "uncertainty"):
        # Both teachers were consulted: the per-teacher fractions are logged.
        assert last["frac_both"] != "" and float(last["frac_none"]) <= 1.0
    elif method["pseudo_labels"] == "specialized":
        # The foundation teacher is never prompted for pseudo-labels: only the EMA teacher's confidence is logged.
        assert last.get("frac_general", "") == "" and last["frac_specialized_confident"] != ""


def test_config_errors_name_the_option(tmp_path, data2d):
    base = uncol_config(tmp_path, data2d)
    with pytest.raises(ConfigError, match="model.arch"):
        config_from_dict(base.to_dict() | {"model": base.to_dict()["model"] | {"arch": "unet2d"}})
    # Free rotation is allowed: cached teacher targets follow it (tests/methods/test_uncol_views.py).
    config_from_dict(base.to_dict() | {"augment": base.to_dict()["augment"] | {"rotate_degrees": 15.0}})
    with pytest.raises(ConfigError, match="method.uncol.copy_paste_box"):
        section = base.to_dict()["method"]["uncol"] | {"copy_paste_box": 0.0}
        config_from_dict(base.to_dict() | {"method": {"name": "uncol", "uncol": section}})
    with pytest.raises(ConfigError, match="method.uncol.copy_paste_prob"):
        section = base.to_dict()["method"]["uncol"] | {"copy_paste_prob": 1.5}
        config_from_dict(base.to_dict() | {"method": {"name": "uncol", "uncol": section}})
    with pytest.raises(ConfigError, match="teacher.name"):
        config_from_dict(base.to_dict() | {"teacher": base.to_dict()["teacher"] | {"name": "none"}})
    with pytest.raises(ConfigError, match="copy_paste_patch"):
        section = base.to_dict()["method"]["uncol"] | {"copy_paste_patch": 6}
        config_from_dict(base.to_dict() | {"method": {"name": "uncol", "uncol": section}})


def test_missing_context_width_is_a_config_error(tmp_path, fake_litemedsam, data2d):
    cfg = uncol_config(tmp_path, data2d)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, context_dims=[]))
    with pytest.raises(ConfigError, match="model.context_dims"):
        Trainer(cfg, tmp_path / "run", show_progress=False).fit()


def test_3d_volume_larger_than_patch_is_a_config_error(tmp_path, fake_litemedsam, data3d):
    cfg = uncol_config(tmp_path, data3d, dims=3, patch_size=[8, 8, 8])
    with pytest.raises(ConfigError, match="train.patch_size"):
        Trainer(cfg, tmp_path / "run", show_progress=False).fit()


# ---- pieces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_apply_view_matches_the_augmentation_and_inverts(dims):
    rng = np.random.default_rng(3)
    shape = (8, 8) if dims == 2 else (6, 8, 8)
    image = rng.normal(size=(1, *shape)).astype(np.float32)
    aug = AugmentConfig(flip=True, rotate90=True, rotate_degrees=0.0, intensity=False)
    for _ in range(12):
        p = sample_augment(aug, dims, rng, square_plane=True)
        augmented, _ = apply_augment(image, None, p)
        view = (tuple(p.flips), int(p.rot90))
        mapped = apply_view(torch.from_numpy(image), view)
        assert torch.equal(mapped, torch.from_numpy(np.ascontiguousarray(augmented)))
        assert torch.equal(apply_view(mapped, view, inverse=True), torch.from_numpy(image))


def test_token_mask_is_the_pixel_mask_at_token_resolution():
    from uncol.data.copy_paste import sample_patch_mask

    m = torch.from_numpy(sample_patch_mask((32, 32), 8, 0.6, np.random.default_rng(0)))[None]
    t = token_mask(m, 8)
    assert t.shape == (1, 4, 4)
    up = t.repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert torch.equal(up, m)


def test_masked_dice_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8))
    zero = masked_dice_ce(logits, labels, torch.zeros(2, 8, 8))
    assert zero.item() == 0.0
    zero.backward()  # a graph exists even with nothing supervised
    full = masked_dice_ce(logits, labels, torch.ones(2, 8, 8))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert full.item() > ce.item()  # CE + a positive Dice term
    # Pixels outside the mask do not matter: changing their labels leaves the loss unchanged.
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    other = labels.clone()
    other[:, 4:] = (other[:, 4:] + 1) % 3
    assert masked_dice_ce(logits, labels, mask).item() == pytest.approx(masked_dice_ce(logits, other, mask).item())


def test_lazy_unlabeled_targets_give_identical_training(tmp_path, fake_litemedsam, data2d):
    eager = uncol_config(tmp_path, data2d, iterations=4, val_every=0)
    lazy = uncol_config(tmp_path, data2d, method={"lazy_unlabeled_targets": True}, iterations=4, val_every=0)
    Trainer(eager, tmp_path / "eager", show_progress=False).fit()
    Trainer(lazy, tmp_path / "lazy", show_progress=False).fit()
    a = torch.load(RunPaths(tmp_path / "eager").latest, map_location="cpu", weights_only=False)["modules"]["network"]
    b = torch.load(RunPaths(tmp_path / "lazy").latest, map_location="cpu", weights_only=False)["modules"]["network"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_foundation_teacher_has_no_opinion_where_nothing_is_prompted(tmp_path, data2d):
    from uncol.data.index import discover
    from uncol.data.training import SampleSet
    from uncol.methods.uncol.targets import TeacherTargets
    from uncol.teachers.cache import FeatureCache

    cfg = uncol_config(tmp_path, data2d)
    samples = SampleSet(discover(cfg.data).train[:1], cfg, use_labels=False)
    teacher = FakeTeacher(layers=LAYERS, token_grid=8, size=64)
    targets = TeacherTargets(teacher, FeatureCache(teacher, tmp_path / "cache"), samples, cfg, (8, 8), embeddings=True)
    view = ((True, False), 1)
    background = torch.zeros(1, 3, 32, 32)
    background[:, 0] = 1.0
    p = targets.pseudo_label_probabilities([0], [view], background, np.random.default_rng(0))
    assert torch.allclose(p, torch.full_like(p, 1 / 3))  # uniform: maximal entropy, never confident
    # A prompted class comes back where the pseudo-label put it, on the same (augmented) view.
    pseudo = background.clone()
    pseudo[:, 0, 4:12, 20:30] = 0.0
    pseudo[:, 2, 4:12, 20:30] = 1.0
    p = targets.pseudo_label_probabilities([0], [view], pseudo, np.random.default_rng(0))
    assert p[0].argmax(0)[8, 25] == 2 and p[0].argmax(0)[28, 4] == 0


def test_default_adapter_context_is_the_students_own_tokens(tmp_path, fake_litemedsam, data2d):
    from uncol.methods.uncol.options import UnCoLOptions

    default = UnCoLOptions().adapter_context
    assert default == "self"
    cfg = uncol_config(tmp_path, data2d, method={"adapter_context": default}, iterations=4)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.fit()
    assert not trainer.method.teacher_context  # no teacher features as keys/values, in either stage
    assert trainer.method.use_semantic  # the teacher still reaches the student through distillation


def test_context_dropout_trains_the_inference_path(tmp_path, fake_litemedsam, data2d):
    from uncol.methods.uncol import UnCoLMethod

    cfg = uncol_config(tmp_path, data2d, method={"self_context_prob": 0.5}, iterations=4, val_every=0)
    Trainer(cfg, tmp_path / "run", show_progress=False).fit()  # mixed batches (own + teacher context) train
    # The merged forward equals separate forwards, image by image.
    trainer = Trainer(cfg, tmp_path / "run2", show_progress=False)
    trainer.setup()
    method: UnCoLMethod = trainer.method
    method.network.eval()
    x = torch.randn(3, 1, 32, 32)
    ctx = torch.randn(3, 8, 8, 8)
    own = torch.tensor([True, False, True])
    with torch.no_grad():
        merged = method._forward(x, ctx, own).logits
        assert torch.allclose(merged[0], method.network(x[0:1])[0], atol=1e-5)
        assert torch.allclose(merged[1], method.network(x[1:2], context=ctx[1:2])[0], atol=1e-5)


def test_teacher_slice_indices():
    from uncol.teachers.slicing import teacher_slice_indices

    assert teacher_slice_indices(40, 4) == list(range(2, 40, 4))
    assert teacher_slice_indices(16, 8) == [4, 12]  # one slice near the centre of each 8-slice token row
    assert teacher_slice_indices(5, 1) == [0, 1, 2, 3, 4]
    assert teacher_slice_indices(3, 8) == [1]  # never empty


def test_slice_stride_feeds_the_teacher_every_nth_slice(tmp_path, data3d):
    from uncol.data.index import discover
    from uncol.data.training import SampleSet
    from uncol.methods.uncol.targets import TeacherTargets
    from uncol.teachers.cache import FeatureCache

    base = uncol_config(tmp_path, data3d, dims=3)
    cfg = dataclasses.replace(base, teacher=dataclasses.replace(base.teacher, slice_stride=4))
    samples = SampleSet(discover(cfg.data).train[:1], cfg, use_labels=False)
    teacher = FakeTeacher(layers=LAYERS, token_grid=8, size=64)
    targets = TeacherTargets(teacher, FeatureCache(teacher, tmp_path / "cache"), samples, cfg, (4, 4, 4), embeddings=True)
    assert teacher.encoded_images == 4  # slices 2, 6, 10, 14 of 16 along the slice axis (2)
    assert targets.visual_targets([0], [((False,) * 3, 0)], torch.device("cpu"))["stage1"].shape[2:] == (4, 4, 4)
    # Stage-2 probabilities: the teacher votes on the slices it sees, is uniform (no opinion) on the others.
    pseudo = torch.zeros(1, 3, 16, 16, 16)
    pseudo[:, 0] = 1.0
    pseudo[:, 0, 3:12, 3:12, :] = 0.0
    pseudo[:, 1, 3:12, 3:12, :] = 1.0
    p = targets.pseudo_label_probabilities([0], [((False,) * 3, 0)], pseudo, np.random.default_rng(0))
    seen, unseen = p[0, :, :, :, 6], p[0, :, :, :, 7]
    # Point prompts: the stand-in returns small discs around the points, all inside the class-1 square.
    fg = seen.argmax(0) == 1
    assert fg.any() and not fg[12:].any() and not fg[:, 12:].any()
    assert torch.allclose(unseen, torch.full_like(unseen, 1 / 3))
    assert teacher.encoded_images == 4  # stage 2 reads the cached embeddings of the same slices


def test_class_reliability_measures_the_teacher_against_the_ground_truth(tmp_path, data2d):
    from types import SimpleNamespace

    from uncol.data.training import Sample
    from uncol.methods.uncol.targets import TeacherTargets
    from uncol.teachers.cache import FeatureCache

    cfg = uncol_config(tmp_path, data2d)
    label = np.zeros((32, 32), np.int64)
    label[4:12, 4:12] = 1  # a square: the stand-in teacher's box prompt returns it exactly
    label[12:30, 12:30] = 2
    label[15:27, 15:27] = 0  # a ring: the box returns its hole too, as SAM does for ACDC's myocardium
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    samples = SimpleNamespace(samples=[Sample("hand-built", image, label)])
    teacher = FakeTeacher(layers=LAYERS, token_grid=8, size=64)
    targets = TeacherTargets(teacher, FeatureCache(teacher, tmp_path / "cache"), samples, cfg, (8, 8), embeddings=True)
    dice = targets.class_reliability(np.random.default_rng(0))
    # The stand-in's boxes reach a pixel past the far edge: near 1 for the square, and for the ring at
    # most what a filled 18 x 18 box scores on it.
    assert dice[1] > 0.85
    ring, box = 18 * 18 - 12 * 12, 18 * 18
    assert 0.5 < dice[2] <= 2 * ring / (ring + box) + 1e-9
    assert dice[0] < 1.0


def test_class_gate_takes_the_vote_from_the_foundation_teacher(tmp_path, fake_litemedsam, data2d):
    import json

    # Blobs are no boxes: the stand-in teacher scores below 1 on every class, so a gate at 1 leaves it no vote.
    cfg = uncol_config(tmp_path, data2d, method={"teacher_min_dice": 1.0}, val_every=0)
    Trainer(cfg, tmp_path / "gated", show_progress=False).fit()
    report = json.loads((tmp_path / "gated" / "teacher_reliability.json").read_text())
    assert report["voting_classes"] == [] and all(0 <= d < 1 for d in report["dice"].values())
    rows = [r for r in read_log(tmp_path / "gated") if float(r["stage"]) == 2]
    assert rows and all(float(r["frac_general"]) == 0 and float(r["frac_both"]) == 0 for r in rows)
    # Without the gate the same run lets the foundation teacher vote.
    Trainer(uncol_config(tmp_path, data2d, val_every=0), tmp_path / "open", show_progress=False).fit()
    rows = [r for r in read_log(tmp_path / "open") if float(r["stage"]) == 2]
    assert any(float(r["frac_general"]) + float(r["frac_both"]) > 0 for r in rows)
    assert not (tmp_path / "open" / "teacher_reliability.json").exists()


def test_3d_run_with_slice_stride(tmp_path, fake_litemedsam, data3d):
    cfg = uncol_config(tmp_path, data3d, dims=3, val_every=0)
    cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, slice_stride=8))
    Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    rows = read_log(tmp_path / "run")
    assert column(rows, "stage") == [1, 1, 1, 2, 2, 2]
    # The teacher sees 2 of 16 slices: it cannot be confident on more than 1/8 of the voxels.
    assert all(float(r["frac_general"]) + float(r["frac_both"]) <= 2 / 16 + 1e-6 for r in rows[3:])


def test_stage2_without_visual_distillation(tmp_path, fake_litemedsam, data2d):
    cfg = uncol_config(tmp_path, data2d, method={"stage2_visual": False}, val_every=0)
    Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    rows = read_log(tmp_path / "run")
    s1 = [r for r in rows if float(r["stage"]) == 1]
    s2 = [r for r in rows if float(r["stage"]) == 2]
    assert all(float(r["loss_visual"]) > 0 for r in s1)  # stage 1 keeps both paths
    assert s2 and all(float(r["loss_visual"]) == 0 and float(r["w_distill"]) == 0 for r in s2)
    assert all(float(r["loss_pseudo"]) > 0 for r in s2)
