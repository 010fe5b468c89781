from __future__ import annotations

import numpy as np
import pytest
import torch

from uncol.data.copy_paste import mix, mix_with_previous, sample_patch_mask


def test_patch_mask_ratio_and_patch_structure():
    rng = np.random.default_rng(0)
    m = sample_patch_mask((64, 48), 16, 0.6, rng)
    assert m.shape == (64, 48)
    blocks = m.reshape(4, 16, 3, 16)
    # every 16x16 patch is entirely taken or entirely kept
    assert np.all(blocks.all(axis=(1, 3)) | ~blocks.any(axis=(1, 3)))
    assert blocks.all(axis=(1, 3)).sum() == round(0.6 * 12)
    m3 = sample_patch_mask((10, 12, 9), (4, 4, 3), 0.5, np.random.default_rng(1))
    assert m3.shape == (10, 12, 9)
    assert np.array_equal(sample_patch_mask((32, 32), 8, 0.6, np.random.default_rng(5)),
                          sample_patch_mask((32, 32), 8, 0.6, np.random.default_rng(5)))
    with pytest.raises(ValueError):
        sample_patch_mask((8, 8), 4, 1.5, rng)


def test_mix_keeps_image_and_label_aligned():
    rng = np.random.default_rng(3)
    img_a, img_b = torch.zeros(2, 1, 32, 32), torch.ones(2, 1, 32, 32)
    lab_a, lab_b = torch.zeros(2, 32, 32, dtype=torch.long), torch.full((2, 32, 32), 2)
    mask = torch.from_numpy(sample_patch_mask((32, 32), 8, 0.6, rng))
    img, lab = mix(img_a, img_b, mask), mix(lab_a, lab_b, mask)
    assert torch.equal(img[:, 0] == 1, lab == 2)
    assert float(mask.float().mean()) == pytest.approx(10 / 16)
    # per-sample masks
    masks = torch.stack([mask, ~mask])
    img2, lab2 = mix(img_a, img_b, masks[:, None]), mix(lab_a, lab_b, masks)
    assert torch.equal(img2[:, 0] == 1, lab2 == 2)
    assert torch.equal(lab2[1] == 2, ~mask)


@pytest.mark.parametrize("spatial", [(256, 200), (9, 6), (40, 56, 40), (6, 9, 3)])
def test_box_size_and_position_bounds(spatial):
    from uncol.data.copy_paste import box_mask, sample_box

    rng = np.random.default_rng(0)
    size = tuple(int(n * 2 / 3) for n in spatial)  # the authors' int(2/3 x side), per axis
    starts = []
    for _ in range(300):
        box = sample_box(spatial, 2 / 3, rng)
        assert box.size == size
        assert all(0 <= s <= n - k for s, n, k in zip(box.start, spatial, size, strict=True))
        m = box_mask(spatial, box)
        assert m.shape == spatial and m.sum() == np.prod(size)
        inside = tuple(slice(s, s + k) for s, k in zip(box.start, size, strict=True))
        assert m[inside].all()  # one solid box: all of its pixels are inside the slices
        starts.append(box.start)
    starts = np.array(starts)
    if max(spatial) < 10:  # small images: every position, both extremes included, is drawn
        for axis, (n, k) in enumerate(zip(spatial, size, strict=True)):
            assert set(starts[:, axis]) == set(range(n - k + 1))


def test_box_sampling_is_reproducible_and_checks_its_fraction():
    from uncol.data.copy_paste import sample_box

    assert sample_box((64, 64), 0.5, np.random.default_rng(7)) == sample_box((64, 64), 0.5, np.random.default_rng(7))
    assert sample_box((64, 64), 1.0, np.random.default_rng(7)).start == (0, 0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            sample_box((8, 8), bad, np.random.default_rng(0))


def test_mix_with_previous_takes_the_previous_sample_under_the_mask():
    t = torch.arange(3).view(3, 1, 1, 1).float().expand(3, 2, 4, 4)  # sample i holds the value i
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    mask[2, :, 1] = True
    out = mix_with_previous(t, mask[:, None])
    assert torch.equal(out[0, :, :2], torch.full((2, 2, 4), 2.0))  # sample 0's partner is the last one
    assert torch.equal(out[0, :, 2:], torch.zeros(2, 2, 4))
    assert torch.equal(out[1], t[1])  # an all-False mask leaves the sample as it is
    assert torch.equal(out[2, :, :, 1], torch.ones(2, 4)) and torch.equal(out[2, :, :, 0], torch.full((2, 4), 2.0))
