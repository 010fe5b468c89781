"""The teacher interface: preprocessing, original-size outputs, overlaps, absent classes, volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uncol.errors import ConfigError
from uncol.teachers import ABSENT_LOGIT, FeatureCache, Prompts, boxes_from_mask, class_probabilities
from uncol.teachers.preprocessing import (
    PreprocessSpec,
    canvas_to_original,
    geometry_for,
    pool_to_grid,
    preprocess,
)


def test_preprocess_minmax_resize_pad_three_channels():
    image = np.linspace(-50, 150, 40 * 70, dtype=np.float32).reshape(1, 40, 70)
    canvas, geom = preprocess(image, PreprocessSpec(256, keep_aspect=True))
    assert canvas.shape == (3, 256, 256) and geom.resized == (146, 256) and geom.original == (40, 70)
    region = canvas[:, :146, :256]
    assert float(region.min()) == 0.0 and float(region.max()) == 1.0
    assert float(canvas[:, 146:].abs().max()) == 0.0  # padding at the bottom
    assert torch.equal(canvas[0], canvas[2])  # grey repeated
    rgb = np.stack([image[0], image[0] * 0, -image[0]])
    c2, _ = preprocess(rgb, PreprocessSpec(64, keep_aspect=False))
    assert c2.shape == (3, 64, 64) and not torch.equal(c2[0], c2[2])
    assert geometry_for((500, 300), PreprocessSpec(256, True)).resized == (256, 154)  # int(300*256/500+0.5)


def test_canvas_maps_back_to_original_size():
    geom = geometry_for((40, 70), PreprocessSpec(64, True))
    maps = torch.zeros(1, 16, 16)
    maps[0, :, :8] = 1.0  # left half of the canvas = left half of the image (width fills the canvas)
    out = canvas_to_original(maps, geom)
    assert out.shape == (1, 40, 70)
    assert out[0, :, :30].min() > 0.99 and out[0, :, 40:].max() < 0.01
    feats = torch.ones(2, 5, 16, 16)
    feats[:, :, 10:] = 100.0  # padding rows must not leak into the pooled grid
    assert torch.allclose(pool_to_grid(feats, geom, 4), torch.ones(2, 5, 4, 4))


def test_outputs_at_original_size_and_absent_class(fake_teacher):
    t = fake_teacher(size=64, token_grid=8)
    mask = np.zeros((40, 70), np.int64)
    mask[10:20, 5:30] = 1
    image = np.random.default_rng(0).normal(size=(1, 40, 70)).astype(np.float32)
    out = t.predict(image, boxes_from_mask(mask, num_classes=3))
    assert out.logits.shape == (2, 40, 70) and out.present.tolist() == [True, False]
    assert out.fused.shape == (2, 8, 8, 8) and float(out.fused[1].abs().max()) == 0.0
    assert set(out.features) == {"stage1", "stage2"}
    fg = out.foreground_probabilities
    assert fg.shape == (2, 40, 70) and float(fg[1].max()) == 0.0  # absent: exactly 0
    assert float(out.logits[1].max()) == ABSENT_LOGIT
    label = out.label
    inner = label[12:18, 8:27]
    assert (inner == 1).all() and (label[30:, :] == 0).all() and (label[:, 45:] == 0).all()
    assert torch.allclose(out.semantic_target(), out.fused[0])
    probs = out.probabilities
    assert probs.shape == (3, 40, 70) and np.allclose(probs.sum(0), 1.0)


def test_overlapping_classes_higher_logit_wins(fake_teacher):
    t = fake_teacher(size=64)
    prompts = Prompts(np.array([[0, 0, 39, 39], [20, 20, 63, 63]], np.float32), np.array([True, True]))
    out = t.predict(np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32), prompts)
    fg = out.foreground_probabilities
    assert fg[0, 30, 30] > 0.5 and fg[1, 30, 30] > 0.5  # both classes claim the overlap
    assert out.label[30, 30] == 2  # class 2's logit (3) beats class 1's (2)
    assert out.label[5, 5] == 1 and out.label[50, 50] == 2
    # single class: the class distribution is SAM's sigmoid
    logits = np.array([[[-2.0, 0.5]]], np.float32)
    assert np.allclose(class_probabilities(logits)[1], 1 / (1 + np.exp(-logits[0])))


def test_predict_batch_matches_predict(tmp_path, fake_teacher):
    t = fake_teacher()
    rng = np.random.default_rng(5)
    images = [rng.normal(size=(1, 32, 40)).astype(np.float32) for _ in range(3)]
    masks = [np.zeros((32, 40), np.int64) for _ in range(3)]
    masks[0][4:9, 5:20] = 1
    masks[2][10:20, 3:9] = 2
    prompts = [boxes_from_mask(m, 3) for m in masks]
    batch = t.predict_batch(images, prompts, FeatureCache(t, tmp_path))
    for im, p, b in zip(images, prompts, batch, strict=True):
        one = t.predict(im, p)
        assert torch.equal(one.logits, b.logits) and torch.equal(one.fused, b.fused)
    assert t.decode_calls == 4  # image 1 has no prompt: not decoded
    with pytest.raises(ValueError):
        t.predict_batch(images, prompts[:2])


def test_no_prompt_no_decoder(fake_teacher):
    t = fake_teacher()
    out = t.predict(np.ones((1, 32, 32), np.float32), Prompts.empty(3))
    assert t.decode_calls == 0 and out.semantic_target() is None and out.label.max() == 0


def test_point_prompts(fake_teacher):
    t = fake_teacher(size=64)
    p = Prompts(None, np.array([True]), np.array([[[32.0, 32.0]]], np.float32), np.array([[1]]))
    out = t.predict(np.random.default_rng(2).normal(size=(64, 64)).astype(np.float32), p)
    assert out.label[32, 32] == 1 and out.label[5, 5] == 0


def test_volume_slice_by_slice_skips_unprompted_slices(tmp_path, fake_teacher):
    t = fake_teacher(size=32, batch_size=2)
    label = np.zeros((20, 5, 24), np.int64)
    label[4:12, 1, 6:18] = 1
    label[4:12, 3, 6:18] = 2
    volume = np.random.default_rng(0).normal(size=(1, 20, 5, 24)).astype(np.float32)
    prompts = [boxes_from_mask(label[:, s, :], 3) for s in range(5)]
    cache = FeatureCache(t, tmp_path)
    logits = t.predict_volume(volume, axis=1, prompts=prompts, cache=cache)
    assert logits.shape == (2, 20, 5, 24) and t.encoded_images == 2  # only slices 1 and 3
    assert (logits[:, :, 0] == ABSENT_LOGIT).all()
    assert logits[0, 8, 1, 12] > 0 and logits[1, 8, 1, 12] == ABSENT_LOGIT and logits[1, 8, 3, 12] > 0
    t.predict_volume(volume, axis=1, prompts=prompts, cache=cache)
    assert t.encoded_images == 2  # embeddings came from the cache
    with pytest.raises(ValueError):
        t.predict_volume(volume, axis=1, prompts=prompts[:3])


def test_unknown_layer_is_a_config_error(fake_teacher):
    with pytest.raises(ConfigError, match=r"teacher.layers\[1\].*'blocks.99'"):
        fake_teacher(layers=("stage1", "blocks.99"))
    t = fake_teacher(layers=("neck", "fused"))
    assert t.layer_map == {1: "neck", 2: "fused"} and t.visual_layers == ("neck",)


def test_nested_boxes_give_the_inner_class_its_pixels():
    import torch

    from uncol.teachers.base import logits_to_label, nested_box_logits
    from uncol.teachers.prompts import Prompts

    logits = torch.full((2, 12, 12), -5.0)
    logits[0, 0:10, 0:10] = 4.0  # outer class (ring's box), higher logit everywhere in its box
    logits[1, 3:7, 3:7] = 2.0  # inner class
    boxes = np.array([[0, 0, 9, 9], [3, 3, 6, 6]], np.float32)
    prompts = Prompts(boxes, np.array([True, True]))
    plain = logits_to_label(logits.numpy())
    assert plain[5, 5] == 1  # higher logit: the outer class takes the inner structure
    nested = logits_to_label(nested_box_logits(logits, prompts).numpy())
    assert nested[5, 5] == 2 and nested[1, 1] == 1 and nested[11, 11] == 0
    # Boxes that only overlap (not nested) are left alone, and so are point prompts.
    side = Prompts(np.array([[0, 0, 6, 6], [3, 3, 9, 9]], np.float32), np.array([True, True]))
    assert torch.equal(nested_box_logits(logits, side), logits)
    pts = Prompts(None, np.array([True, True]), np.zeros((2, 1, 2), np.float32), np.ones((2, 1), np.int64))
    assert torch.equal(nested_box_logits(logits, pts), logits)
