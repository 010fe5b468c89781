from __future__ import annotations

import numpy as np
import pytest
import torch

from uncol.data.copy_paste import mix, sample_patch_mask


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
