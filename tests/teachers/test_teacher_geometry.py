"""apply_geometry on cached features == features of the augmented image (exactly, for an equivariant teacher)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from uncol.data.transforms import AugmentParams, apply_augment
from uncol.teachers import FeatureCache, apply_geometry, invert_geometry


def _params(flips: tuple[bool, bool], k: int) -> AugmentParams:
    return AugmentParams(flips=flips, rot90=k, angle=0.0, scale=1.0, shift=0.0, gamma=1.0, noise_seed=0, noise_std=0.0)


@pytest.mark.parametrize("flips,k", list(itertools.product([(False, False), (True, False), (False, True), (True, True)], range(4))))
def test_features_of_augmented_square_image(tmp_path, fake_teacher, flips, k):
    cache = FeatureCache(fake_teacher(size=64, token_grid=8), tmp_path)
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 64, 64)).astype(np.float32)
    label = (image[0] > 0).astype(np.int64)
    aug_image, aug_label = apply_augment(image, label, _params(flips, k))
    expected = cache.get(aug_image)
    got = apply_geometry(cache.get(image), flips, k)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    # the inverse brings augmented masks back to the cached (un-augmented) view
    assert np.array_equal(invert_geometry(aug_label, flips, k), label)


@pytest.mark.parametrize("flips", [(True, False), (False, True), (True, True)])
def test_flips_of_non_square_image(tmp_path, fake_teacher, flips):
    # 32 x 64 on a 64 canvas: the padding (bottom rows) is cut before pooling, so flips commute exactly.
    cache = FeatureCache(fake_teacher(size=64, token_grid=8), tmp_path)
    image = np.random.default_rng(4).normal(size=(1, 32, 64)).astype(np.float32)
    aug_image, _ = apply_augment(image, None, _params(flips, 0))
    expected = cache.get(aug_image)
    got = apply_geometry(cache.get(image), flips, 0)
    for name in expected:
        assert torch.allclose(got[name].float(), expected[name].float(), atol=1e-3), name


def test_geometry_on_batches_arrays_and_errors():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    y = apply_geometry(x, (True, False), 1)
    assert torch.equal(y[1], apply_geometry(x[1], (True, False), 1))
    assert torch.equal(invert_geometry(y, (True, False), 1), x)
    a = np.arange(16).reshape(4, 4)
    assert np.array_equal(apply_geometry(a, (False, False), 2), a[::-1, ::-1])
    assert np.array_equal(apply_geometry(a, (False, False), 1), np.rot90(a))
    with pytest.raises(ValueError, match="2 flips"):
        apply_geometry(x, (True, False, True), 0)
