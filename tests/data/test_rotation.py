"""rotate_maps turns maps as the image augmentation turns images (scipy.ndimage.rotate), at any resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from uncol.data.rotation import rotate_maps


def smooth(shape: tuple[int, ...]) -> np.ndarray:
    """Two channels of smooth functions of position."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    y, x = grids[-2], grids[-1]
    lead = sum(grids[:-2]) if len(grids) > 2 else 0.0
    return np.stack([np.sin(y / 5) + 0.3 * x / shape[-1] + 0.1 * lead, np.cos(x / 7) * y / shape[-2]]).astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (5, 24, 24)])
@pytest.mark.parametrize("angle", [12.0, -30.0, 90.0])
def test_matches_ndimage_rotate_inside_the_source(shape, angle):
    f = smooth(shape)
    ref = ndimage.rotate(f, angle, axes=(f.ndim - 2, f.ndim - 1), reshape=False, order=1, mode="constant", cval=0)
    got = rotate_maps(torch.from_numpy(f), angle).numpy()
    # Compare where the source point lies well inside the map (edges: the two libraries' padding differs).
    inside = rotate_maps(torch.ones(shape[-2:]), angle, fill=0.0).numpy()
    eroded = ndimage.binary_erosion(inside > 0.999, iterations=2)
    assert eroded.sum() > 0.3 * eroded.size
    np.testing.assert_allclose(got[..., eroded], ref[..., eroded], atol=1e-5)


def test_fill_values_bool_and_identity():
    x = torch.rand(3, 16, 16)
    assert rotate_maps(x, 0.0) is x
    p = torch.softmax(torch.randn(3, 16, 16), 0)
    r = rotate_maps(p, 25.0, fill=1 / 3)
    assert torch.allclose(r.sum(0), torch.ones(16, 16), atol=1e-5)  # still distributions, also at the edge
    assert torch.allclose(r[:, 0, 0], torch.full((3,), 1 / 3))  # a corner from outside: the fill
    border = rotate_maps(torch.ones(2, 16, 16) * 4.0, 40.0, fill=None)
    assert torch.allclose(border, torch.full_like(border, 4.0))  # nearest edge value: constant stays constant
    m = torch.zeros(16, 16, dtype=torch.bool)
    m[4:12, 6:10] = True
    rm = rotate_maps(m, 90.0)
    assert rm.dtype == torch.bool and torch.equal(rm, torch.rot90(m, 1, (0, 1)))
    assert rotate_maps(x.half(), 10.0).dtype == torch.float16
    with pytest.raises(ValueError, match="maps"):
        rotate_maps(torch.ones(4), 10.0)
