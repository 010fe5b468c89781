"""Feature cache: hits, invalidation on changed image/teacher/preprocessing, damaged entries recomputed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fixtures_data import truncate
from uncol.teachers import FeatureCache
from uncol.teachers import preprocessing as pre


def _image(seed: int = 0, shape: tuple[int, ...] = (1, 48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _entry(cache: FeatureCache, image: np.ndarray, kind: str = "feat"):
    key = cache.feature_key(image) if kind == "feat" else cache.embedding_key(image)
    return cache.path(key, kind)


def test_miss_then_hit_returns_the_same_features(tmp_path, fake_teacher):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    img = _image()
    first = cache.get(img)
    assert t.encoded_images == 1 and set(first) == {"stage1", "stage2"}
    assert first["stage1"].dtype == torch.float16 and first["stage1"].shape == (3, 8, 8)
    again = FeatureCache(t, tmp_path).get(img.copy())  # a fresh object reads from disk
    assert t.encoded_images == 1
    for k in first:
        assert torch.equal(first[k], again[k])
    batch = cache.get_batch([img, _image(1)])
    assert batch["stage2"].shape == (2, 3, 8, 8) and t.encoded_images == 2
    assert torch.equal(batch["stage1"][0], first["stage1"])
    assert cache.stats.hits == 1 and cache.stats.misses == 2


def test_changed_image_teacher_or_preprocessing_invalidates(tmp_path, fake_teacher, monkeypatch):
    img = _image()
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    cache.get(img)
    changed = img.copy()
    changed[0, 3, 5] += 1e-3
    cache.get(changed)
    assert t.encoded_images == 2  # one changed pixel: a new entry

    t2 = fake_teacher(weights="w1")  # other weights
    FeatureCache(t2, tmp_path).get(img)
    assert t2.encoded_images == 1
    t3 = fake_teacher(keep_aspect=False)  # other preprocessing recipe
    FeatureCache(t3, tmp_path).get(img)
    assert t3.encoded_images == 1
    t4 = fake_teacher(token_grid=4)  # other grid
    assert FeatureCache(t4, tmp_path).get(img)["stage1"].shape == (3, 4, 4)
    assert t4.encoded_images == 1

    monkeypatch.setattr(pre, "PREPROCESSING_VERSION", pre.PREPROCESSING_VERSION + 1)  # preprocessing code changed
    t5 = fake_teacher()
    FeatureCache(t5, tmp_path).get(img)
    assert t5.encoded_images == 1
    monkeypatch.undo()
    t6 = fake_teacher()
    FeatureCache(t6, tmp_path).get(img)
    assert t6.encoded_images == 0  # the original entry is still valid


def _damage_truncate(path):
    truncate(path, 0.6)


def _damage_garbage(path):
    path.write_bytes(b"\x00garbage" * 50)


def _damage_flip_payload_byte(path):
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_empty(path):
    path.write_bytes(b"")


def _damage_header_only(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64 * 3 * 2])  # payload partially written


@pytest.mark.parametrize(
    "damage", [_damage_truncate, _damage_garbage, _damage_flip_payload_byte, _damage_empty, _damage_header_only]
)
def test_damaged_entry_is_detected_and_recomputed(tmp_path, fake_teacher, damage):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    img = _image()
    good = cache.get(img)
    path = _entry(cache, img)
    damage(path)
    fresh = FeatureCache(t, tmp_path)
    with pytest.warns(UserWarning, match="damaged teacher cache entry"):
        again = fresh.get(img)
    assert t.encoded_images == 2 and fresh.stats.corrupt == 1
    for k in good:
        assert torch.equal(good[k], again[k])
    # the entry was rewritten and is sound again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureCache(t, tmp_path).get(img)
    assert t.encoded_images == 2


def test_entry_of_another_image_is_not_used(tmp_path, fake_teacher):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    a, b = _image(0), _image(1)
    feats_a = cache.get(a)
    _entry(cache, b).parent.mkdir(parents=True, exist_ok=True)
    _entry(cache, b).write_bytes(_entry(cache, a).read_bytes())  # a misplaced file
    with pytest.warns(UserWarning, match="another key"):
        feats_b = FeatureCache(t, tmp_path).get(b)
    assert not torch.equal(feats_a["stage1"], feats_b["stage1"])


def test_embeddings_are_cached_and_checked(tmp_path, fake_teacher):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    img = _image()
    cache.get(img)  # features only
    assert not cache.contains(img, embeddings=True)
    enc = cache.encode([img], embeddings=True)[0]
    assert enc.embedding is not None and enc.embedding.shape == (8, 16, 16) and t.encoded_images == 2
    assert cache.contains(img, embeddings=True)
    assert cache.encode([img], embeddings=True)[0].embedding.equal(enc.embedding) and t.encoded_images == 2
    truncate(_entry(cache, img, "emb"), 0.3)
    with pytest.warns(UserWarning):
        again = FeatureCache(t, tmp_path).encode([img], embeddings=True)[0]
    assert torch.equal(again.embedding, enc.embedding) and t.encoded_images == 3
    usage = cache.disk_usage()
    assert usage["feat"][0] == 1 and usage["emb"][0] == 1 and usage["emb"][1] > 8 * 16 * 16 * 2


def test_memory_layer_serves_without_disk(tmp_path, fake_teacher):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path, memory_mb=1)
    img = _image()
    cache.get(img)
    _entry(cache, img).unlink()
    cache.get(img)
    assert t.encoded_images == 1 and cache.stats.hits == 1


def test_warm_counts(tmp_path, fake_teacher):
    t = fake_teacher(batch_size=2)
    cache = FeatureCache(t, tmp_path)
    images = [_image(i) for i in range(5)]
    done: list[int] = []
    stats = cache.warm(images, progress=done.append)
    assert (stats.misses, stats.hits) == (5, 0) and done == [2, 2, 1]
    stats = cache.warm(images)
    assert (stats.misses, stats.hits) == (0, 5) and t.encoded_images == 5
