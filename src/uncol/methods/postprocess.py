"""Clean-up of predicted label maps before they serve as pseudo-labels.

BCP (Bai et al., "Bidirectional copy-paste for semi-supervised medical image segmentation", CVPR 2023)
keeps, for each foreground class of each teacher prediction, only its largest connected component
(``get_ACDC_2DLargestCC`` / ``LargestCC_pancreas`` in the authors' code): the structures it segments
are single objects, so smaller islands are taken for noise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (all False if the mask is empty).

    Connectivity is full (8 neighbours in 2D, 26 in 3D), the default of ``skimage.measure.label`` that
    the authors' code uses. Ties go to the component found first in raster order.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return components > 0
    sizes = np.bincount(components.ravel())[1:]
    return components == int(np.argmax(sizes)) + 1


def keep_largest_component_per_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Keep the largest connected component of every foreground class in each map; the rest becomes 0.

    Args:
        labels: ``(B, *spatial)`` integer label maps (2D slices or 3D volumes), any device.
        num_classes: number of classes including background (class 0, left as it is).

    Returns:
        Label maps of the same shape, dtype and device.
    """
    maps = labels.detach().cpu().numpy()
    out = np.zeros_like(maps)
    for i, m in enumerate(maps):
        for c in range(1, num_classes):
            out[i][largest_component(m == c)] = c
    return torch.from_numpy(out).to(labels.device)
