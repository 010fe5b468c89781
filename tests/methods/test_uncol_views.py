"""UnCoL's views: copy-paste modes keep image, label and teacher targets aligned, unmixed images pass
through, and cached teacher targets follow a free rotation of the image.

Uses the stand-in teacher and the tiny datasets and configuration of test_uncol.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from test_uncol import LAYERS, read_log, uncol_config

from fake_teacher import FakeTeacher
from fixtures_data import make_hdf5_dataset, make_nifti_dataset
from uncol import teachers
from uncol.config import AugmentConfig
from uncol.data.transforms import apply_augment, sample_augment
from uncol.engine import Trainer
from uncol.methods.base import StepContext
from uncol.methods.uncol.targets import apply_view


@pytest.fixture
def fake_litemedsam(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace LiteMedSAM by the stand-in teacher (as test_uncol.py does)."""
    monkeypatch.setitem(teachers.TEACHER_FACTORIES, "litemedsam",
                        lambda tc: FakeTeacher(layers=tc.layers, token_grid=tc.token_grid, size=64))


@pytest.fixture(scope="module")
def data2d(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("views2d")
    return make_hdf5_dataset(root / "data", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)


@pytest.fixture(scope="module")
def data3d(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("views3d")
    return make_nifti_dataset(root / "data", n_cases=6, shape=(16, 16, 16), num_classes=3, spacing=(1.0, 1.0, 1.0))

# ---- copy-paste: what stage 1 feeds the student -----------------------------------------------------


def stage1_inputs(tmp_path, data, method: dict) -> tuple[dict, torch.Tensor]:
    """Run one stage-1 step on a constructed batch whose every map says which image it came from.

    Image ``b`` is the constant ``b`` and its label is ``b``; its teacher targets (visual layers and the
    fused features the adapter attends to) are the constant ``b`` on the token grid, and its semantic
    validity is True. Returns what the step handed to the student, the loss and the distillation, and
    the token side.
    """
    cfg = uncol_config(tmp_path, data, method={"stage1_fraction": 1.0, "pseudo_labels": "none"} | method,
                       iterations=2, val_every=0)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    meth = trainer.method
    b, k, s, g = 3, 3, 32, 8
    x = torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1).expand(b, 1, s, s).contiguous()
    y = torch.arange(b).reshape(b, 1, 1).expand(b, s, s).contiguous()
    assert k == cfg.data.num_classes

    def const(c: int) -> torch.Tensor:
        return torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1).expand(b, c, g, g).contiguous()

    got: dict = {}
    meth.targets_l.visual_targets = lambda ids, views, dev: {n: const(c) for n, c in meth.targets_l.visual_channels.items()}
    meth.targets_l.semantic_targets = lambda ids, views, dev: (const(8), torch.ones(b, g, g, dtype=torch.bool))
    forward, distill, semantic = meth._forward, meth._distill, meth._semantic

    def spy_forward(xm, context, own):
        got["x"], got["context"] = xm, context
        return forward(xm, context, own)

    def spy_distill(layers, visual):
        got["visual"] = visual
        return distill(layers, visual)

    def spy_semantic(layers, target, valid):
        got["semantic"], got["valid"] = target, valid
        return semantic(layers, target, valid)

    def spy_loss(logits, labels):
        got["y"] = labels
        return F.cross_entropy(logits, labels)

    meth._forward, meth._distill, meth._semantic, meth.sup_loss = spy_forward, spy_distill, spy_semantic, spy_loss
    batch = {"image": x, "label": y, "ids": [0, 1, 2], "geometry": [((False, False), 0, 0.0)] * b}
    got["logged"] = meth._stage1(batch, StepContext(step=1, iterations=2, device=torch.device("cpu")))
    return got, x


@pytest.mark.parametrize("mode", ["patch", "box"])
def test_copy_paste_keeps_image_label_and_teacher_targets_aligned(tmp_path, fake_litemedsam, data2d, mode):
    got, x = stage1_inputs(tmp_path, data2d, {"copy_paste_mode": mode, "copy_paste_prob": 1.0})
    image = got["x"][:, 0]
    assert torch.equal(image.long(), got["y"])  # every pixel: the label of the image it came from
    assert not torch.equal(got["x"], x)  # and mixing did happen
    assert float(got["logged"]["copy_paste_mixed"]) == 1.0
    # Token by token: each 4x4 cell holds pixels of one image, and every target of that token is that image's.
    cells = image.unfold(1, 4, 4).unfold(2, 4, 4)  # (B, 8, 8, 4, 4)
    assert torch.equal(cells.amin((-1, -2)), cells.amax((-1, -2)))
    token_source = cells[..., 0, 0]
    for t in [got["context"], got["semantic"], *got["visual"].values()]:
        assert torch.equal(t, token_source[:, None].expand_as(t))
    assert got["valid"].all()
    if mode == "box":
        for i in range(3):  # one solid box of round(2/3 x 8) = 5 tokens per side, taken from the partner
            pasted = (token_source[i] != i).nonzero()
            if len(pasted):
                side = pasted.amax(0) - pasted.amin(0) + 1
                assert side.tolist() == [5, 5] and len(pasted) == 25


def test_unmixed_images_pass_through_unchanged(tmp_path, fake_litemedsam, data2d):
    got, x = stage1_inputs(tmp_path, data2d, {"copy_paste_mode": "box", "copy_paste_prob": 0.0})
    assert torch.equal(got["x"], x)
    assert torch.equal(got["y"], x[:, 0].long())
    assert float(got["logged"]["copy_paste_mixed"]) == 0.0
    for t in [got["context"], got["semantic"], *got["visual"].values()]:
        assert torch.equal(t, x[:, :1, :8, :8].expand_as(t))


# ---- free rotation: cached targets follow the image -------------------------------------------------


def position_image(shape: tuple[int, ...]) -> np.ndarray:
    """Two channels that are linear functions of position: a token's average is its value at the
    token's centre, before and after any rotation, so pooled targets and pooled images must agree."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    y, x = grids[-2], grids[-1]
    lead = grids[0] if len(shape) == 3 else 0.0
    return np.stack([2.0 * y + 0.5 * x + lead, -x + 0.25 * y + 3.0]).astype(np.float32)


def pool(a: torch.Tensor, cell: int) -> torch.Tensor:
    if a.ndim == 3:
        return F.avg_pool2d(a[None], cell)[0]
    return F.avg_pool3d(a[None], (1, cell, cell))[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_rotated_targets_match_the_rotated_image(dims):
    rng = np.random.default_rng(0)
    shape = (32, 32) if dims == 2 else (4, 32, 32)
    image = position_image(shape)
    targets = pool(torch.from_numpy(image), 4)  # the "cached" features: token grid of the un-augmented sample
    aug = AugmentConfig(flip=True, rotate90=True, rotate_degrees=30.0, intensity=False)
    checked = 0
    for _ in range(10):
        p = sample_augment(aug, dims, rng, square_plane=True)
        assert p.angle != 0.0
        augmented, _ = apply_augment(image, None, p)
        expected = pool(torch.from_numpy(np.ascontiguousarray(augmented)), 4)
        view = (tuple(p.flips), int(p.rot90), float(p.angle))
        mapped = apply_view(targets, view, fill=0.0)
        # Tokens whose whole cell came from inside the image (elsewhere the image holds its fill value).
        ones = ndimage.rotate(np.ones(shape, np.float32), p.angle, axes=(dims - 2, dims - 1), reshape=False, order=1)
        inside = pool(torch.from_numpy(ones)[None], 4)[0] > 0.999
        assert inside.sum() >= 0.4 * inside.numel()
        assert torch.allclose(mapped[:, inside], expected[:, inside], atol=1e-4)
        # Without the rotation the targets would be off: the test can fail.
        unrotated = apply_view(targets, view[:2])
        assert not torch.allclose(unrotated[:, inside], expected[:, inside], atol=1e-2)
        # The inverse brings the view back to the sample (inside).
        back = apply_view(mapped, view, inverse=True, fill=0.0)
        core = (slice(None),) * (dims - 2) + (slice(3, 5), slice(3, 5))
        assert torch.allclose(back[(slice(None), *core)], targets[(slice(None), *core)], atol=1e-4)
        checked += 1
    assert checked == 10


@pytest.mark.parametrize("dims", [2, 3])
def test_uncol_trains_with_free_rotation(tmp_path, fake_litemedsam, data2d, data3d, dims):
    cfg = uncol_config(tmp_path, data2d if dims == 2 else data3d, dims, method={"copy_paste_mode": "box"},
                       iterations=4, val_every=0)
    cfg.augment.rotate_degrees = 20.0
    summary = Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    assert summary.steps_done == 4
    rows = read_log(tmp_path / "run")
    assert [float(r["stage"]) for r in rows] == [1, 1, 2, 2]
    assert all(float(r["loss_visual"]) > 0 for r in rows)


def test_pseudo_label_probabilities_follow_a_rotated_view(tmp_path, data2d):
    from uncol.data.index import discover
    from uncol.data.training import SampleSet
    from uncol.methods.uncol.targets import TeacherTargets
    from uncol.teachers.cache import FeatureCache

    cfg = uncol_config(tmp_path, data2d)
    samples = SampleSet(discover(cfg.data).train[:1], cfg, use_labels=False)
    teacher = FakeTeacher(layers=LAYERS, token_grid=8, size=64)
    targets = TeacherTargets(teacher, FeatureCache(teacher, tmp_path / "cache"), samples, cfg, (8, 8), embeddings=True)
    pseudo = torch.zeros(1, 3, 32, 32)
    pseudo[:, 0] = 1.0
    pseudo[:, 0, 10:22, 12:20] = 0.0
    pseudo[:, 2, 10:22, 12:20] = 1.0
    plain = targets.pseudo_label_probabilities([0], [((False, False), 0, 0.0)], pseudo, np.random.default_rng(0))
    turned = targets.pseudo_label_probabilities([0], [((False, False), 0, 45.0)], pseudo, np.random.default_rng(0))
    assert torch.allclose(turned.sum(1), torch.ones(1, 32, 32), atol=1e-5)
    # The view's corners lie outside the rotated sample: the foundation teacher has no opinion there.
    assert torch.allclose(turned[0, :, 0, 0], torch.full((3,), 1 / 3), atol=1e-5)
    # Prompted at the pseudo-label's class, on the view: the class comes back where the view has it.
    assert turned[0].argmax(0)[16, 16] == plain[0].argmax(0)[16, 16] == 2
