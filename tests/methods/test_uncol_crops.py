"""UnCoL 3D on patches cropped from padded volumes (``train.pad_to``): crops on the token grid, teacher
targets cropped like the image, and training end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_uncol import LAYERS, column, data3d, fake_litemedsam, read_log, uncol_config  # noqa: F401

from fake_teacher import FakeTeacher
from uncol.config import AugmentConfig, config_from_dict
from uncol.data.index import discover
from uncol.data.training import SampleSet, StepBatches
from uncol.data.transforms import apply_augment, sample_augment, snap_crop_start
from uncol.engine import Trainer
from uncol.errors import ConfigError
from uncol.methods.uncol.targets import TeacherTargets, apply_view
from uncol.teachers.cache import FeatureCache


def test_snapped_crop_origins_are_multiples_inside_the_sample():
    assert snap_crop_start([5, 3, 13], [24, 24, 24], [16, 16, 16], 4) == [4, 4, 8]
    assert snap_crop_start([7, 0, 9], [20, 18, 24], [16, 16, 16], 4) == [4, 0, 8]  # 20-16=4, 18-16=2 -> 0
    assert snap_crop_start([5, 3, 13], [24, 24, 24], [16, 16, 16], 1) == [5, 3, 13]


def test_a_cropped_view_crops_maps_of_every_resolution_alike():
    rng = np.random.default_rng(0)
    full = torch.from_numpy(rng.normal(size=(2, 16, 24, 16)).astype(np.float32))
    tokens = F.avg_pool3d(full[None], 4)[0]  # (2, 4, 6, 4): a token grid of the whole sample
    aug = AugmentConfig(flip=True, rotate90=True, rotate_degrees=0.0, intensity=False)
    for _ in range(5):
        start = snap_crop_start(list(rng.integers(0, 9, size=3)), (16, 24, 16), (8, 16, 8), 4)
        p = sample_augment(aug, 3, rng, square_plane=False)
        view = (tuple(p.flips), int(p.rot90), float(p.angle), (tuple(start), (8, 16, 8), (16, 24, 16)))
        window = tuple(slice(a, a + n) for a, n in zip(start, (8, 16, 8), strict=True))
        image, _ = apply_augment(full[(slice(None), *window)].numpy(), None, p)
        # The full-resolution map follows the image exactly; the token grid follows its pooled version.
        assert torch.equal(apply_view(full, view), torch.from_numpy(np.ascontiguousarray(image)))
        assert torch.allclose(apply_view(tokens, view), F.avg_pool3d(torch.from_numpy(np.ascontiguousarray(image))[None], 4)[0],
                              atol=1e-5)
        # The inverse puts the view back where it came from, the fill outside.
        back = apply_view(apply_view(full, view), view, inverse=True, fill=-7.0)
        inside = torch.zeros(16, 24, 16, dtype=torch.bool)
        inside[window] = True
        assert torch.equal(back[:, inside], full[:, inside]) and bool((back[:, ~inside] == -7.0).all())
    off_grid = ((False,) * 3, 0, 0.0, ((2, 0, 0), (8, 16, 8), (16, 24, 16)))
    with pytest.raises(ValueError, match="does not fall on the grid"):
        apply_view(tokens, off_grid)


def crop_config(tmp_path, data, **method):
    cfg = uncol_config(tmp_path, data, 3, method=method, iterations=6, val_every=3)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, patch_size=[8, 8, 8], pad_to=[16, 16, 16]))


def test_padded_volumes_give_token_aligned_crops(tmp_path, data3d):  # noqa: F811
    cfg = crop_config(tmp_path, data3d)
    samples = SampleSet(discover(cfg.data).train[:2], cfg, use_labels=True)
    assert all(s.image.shape[1:] == (16, 16, 16) for s in samples.samples)
    batches = StepBatches(samples, 2, seed=0, augment=None, crop_multiple=4)
    for step in range(6):
        batch = batches[step]
        assert tuple(batch["image"].shape[2:]) == (8, 8, 8)
        for k, (i, g) in enumerate(zip(batch["ids"], batch["geometry"], strict=True)):
            start, size, whole = g[3]
            assert size == (8, 8, 8) and whole == (16, 16, 16) and all(a % 4 == 0 for a in start)
            window = tuple(slice(a, a + 8) for a in start)
            assert np.array_equal(batch["image"][k].numpy(), samples.samples[i].image[(slice(None), *window)])


def test_teacher_targets_of_a_crop_are_the_crop_of_the_targets(tmp_path, data3d):  # noqa: F811
    cfg = crop_config(tmp_path, data3d)
    samples = SampleSet(discover(cfg.data).train[:1], cfg, use_labels=True)
    teacher = FakeTeacher(layers=LAYERS, token_grid=8, size=64)
    targets = TeacherTargets(teacher, FeatureCache(teacher, tmp_path / "cache"), samples, cfg, (4, 4, 4),
                             semantic=True, embeddings=True)
    view = ((False, True, False), 0, 0.0, ((4, 0, 8), (8, 8, 8), (16, 16, 16)))
    visual = targets.visual_targets([0], [view], torch.device("cpu"))
    for name, v in visual.items():
        assert v.shape[2:] == (2, 2, 2)
        whole = targets.visual[name][0].float()[:, 1:3, 0:2, 2:4].flip(-2)
        assert torch.equal(v[0], whole), name
    sem, valid = targets.semantic_targets([0], [view], torch.device("cpu"))
    assert sem.shape[2:] == (2, 2, 2) and valid.shape[1:] == (2, 2, 2)
    # Pseudo-label probabilities of a view go back to the padded volume (no opinion outside the crop).
    pseudo = torch.zeros(1, 3, 8, 8, 8)
    pseudo[:, 0] = 1.0
    probs = targets.pseudo_label_probabilities([0], [view], pseudo, np.random.default_rng(0))
    assert probs.shape == (1, 3, 8, 8, 8)


@pytest.mark.parametrize("refresh", [0.0, 1.0])
def test_uncol_3d_trains_on_crops_of_padded_volumes(tmp_path, fake_litemedsam, data3d, refresh):  # noqa: F811
    cfg = crop_config(tmp_path, data3d, foundation_refresh=refresh, copy_paste_mode="box")
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    summary = trainer.fit()
    assert summary.steps_done == 6
    rows = read_log(tmp_path / "run")
    assert column(rows, "stage") == [1, 1, 1, 2, 2, 2]
    assert all(float(r["loss_visual"]) > 0 for r in rows[:3])
    assert all(len(g) == 4 for g in trainer.batches[0]["geometry"])  # the views were crops


def test_pad_to_is_checked(tmp_path, data3d):  # noqa: F811
    values = crop_config(tmp_path, data3d).to_dict()
    bad = {**values, "train": {**values["train"], "pad_to": [18, 16, 16]}}
    with pytest.raises(ConfigError, match="train.pad_to"):
        config_from_dict(bad)  # not whole tokens (vit_patch 4)
    small = {**values, "train": {**values["train"], "pad_to": [4, 16, 16]}}
    with pytest.raises(ConfigError, match="train.pad_to"):
        config_from_dict(small)  # smaller than the patch


def test_inference_of_a_padded_volume_model_uses_one_window_of_the_padded_size(tmp_path, data3d):  # noqa: F811
    from uncol.data.readers import load_case
    from uncol.inference import inference_window, predict_probabilities

    cfg = crop_config(tmp_path, data3d)
    assert inference_window(cfg) == (16, 16, 16)
    seen: list[tuple[int, ...]] = []

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[2:]))
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    data = load_case(discover(cfg.data).train[0], cfg.data, 3)
    probs = predict_probabilities(Recorder(), data, cfg, torch.device("cpu"))
    assert probs.shape[1:] == data.image.shape[1:]
    assert set(seen) == {(16, 16, 16)}  # whole padded volumes, not 8x8x8 windows blended
    plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, pad_to=[]))
    assert inference_window(plain) == (8, 8, 8)
