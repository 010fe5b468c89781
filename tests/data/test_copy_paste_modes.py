"""Batch copy-paste masks: BCP's token-aligned box, the patch mosaic, and unmixed images."""

from __future__ import annotations

import numpy as np
import pytest

from uncol.data.copy_paste import box_mask, sample_aligned_box, sample_mix_masks, sample_patch_mask


def masks(mode: str, prob: float = 1.0, n: int = 8, spatial=(32, 48), seed: int = 0) -> np.ndarray:
    return sample_mix_masks(n, spatial, np.random.default_rng(seed), mode=mode, unit=8, patch=8, ratio=0.6,
                            box_fraction=2 / 3, prob=prob)


@pytest.mark.parametrize("spatial", [(32, 48), (16, 24, 32)])
def test_aligned_box_falls_on_the_cell_grid(spatial):
    rng = np.random.default_rng(1)
    cells = [n // 8 for n in spatial]
    for _ in range(50):
        box = sample_aligned_box(spatial, 8, 2 / 3, rng)
        assert all(s % 8 == 0 and k % 8 == 0 for s, k in zip(box.start, box.size, strict=True))
        assert box.size == tuple(8 * round(2 / 3 * c) for c in cells)
        assert all(0 <= s and s + k <= n for s, k, n in zip(box.start, box.size, spatial, strict=True))
    assert sample_aligned_box((32, 32), 8, 1.0, rng).start == (0, 0)
    with pytest.raises(ValueError, match="multiple"):
        sample_aligned_box((30, 32), 8, 0.5, rng)
    with pytest.raises(ValueError, match="fraction"):
        sample_aligned_box((32, 32), 8, 0.0, rng)


def test_box_mode_gives_one_solid_box_per_image():
    for m in masks("box"):
        rows, cols = np.nonzero(m)
        box = m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one solid rectangle, nothing outside it
        assert box.shape == (8 * 3, 8 * 4)  # round(2/3 x 4 cells) = 3, round(2/3 x 6 cells) = 4


def test_patch_mode_always_mixing_keeps_the_old_mask_stream():
    rng = np.random.default_rng(0)
    old = np.stack([sample_patch_mask((32, 48), 8, 0.6, rng) for _ in range(8)])
    assert np.array_equal(masks("patch"), old)


@pytest.mark.parametrize("mode", ["patch", "box"])
def test_probability_leaves_images_unmixed(mode):
    assert not masks(mode, prob=0.0).any()
    assert masks(mode, prob=1.0).reshape(8, -1).any(axis=1).all()
    many = masks(mode, prob=0.5, n=400)
    mixed = many.reshape(400, -1).any(axis=1)
    assert 0.4 < mixed.mean() < 0.6
    # Reproducible from the generator's seed.
    assert np.array_equal(many, masks(mode, prob=0.5, n=400))


def test_bad_mode_and_probability():
    with pytest.raises(ValueError, match="mode"):
        masks("stripes")
    with pytest.raises(ValueError, match="probability"):
        masks("box", prob=1.5)


def test_box_mask_of_aligned_box_is_whole_cells():
    box = sample_aligned_box((32, 32), 8, 0.5, np.random.default_rng(3))
    m = box_mask((32, 32), box).reshape(4, 8, 4, 8)
    assert np.all(m.all(axis=(1, 3)) | ~m.any(axis=(1, 3)))
