"""Network inputs from a run's own images, prepared exactly as inference prepares them.

The parity check of an export compares ONNX Runtime with PyTorch on these inputs rather than on
noise: real images drive the network through the activation ranges it was trained for (noise can
leave batch-norm layers far outside them, where rounding behaves differently).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from uncol.config import Config
from uncol.data.readers import load_case
from uncol.data.splits import load_splits
from uncol.data.training import prepare_case
from uncol.data.transforms import pad_to_size, resize_image
from uncol.data.types import Case
from uncol.errors import ConfigError, DataError

# Give up after this many unreadable cases: a run folder copied without its data should not make
# the export try every case of a large dataset.
_MAX_FAILURES = 5


def _center_crop(image: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Pad (with the image minimum, as inference pads) then crop the centre ``size`` of ``(C, *spatial)``."""
    image, _, _ = pad_to_size(image, None, size)
    starts = [(s - p) // 2 for s, p in zip(image.shape[1:], size, strict=True)]
    sl = tuple(slice(a, a + p) for a, p in zip(starts, size, strict=True))
    return np.ascontiguousarray(image[(slice(None), *sl)])


def _network_inputs(case: Case, cfg: Config, count: int) -> list[np.ndarray]:
    """Up to ``count`` inputs ``(C, *patch)`` of one case: its middle slices (2D) or its centre patch (3D)."""
    data = prepare_case(load_case(replace(case, label_path=None), cfg.data), cfg)
    patch = tuple(cfg.train.patch_size)
    if cfg.spatial_dims == 3:
        if data.image.ndim != 4:
            return []
        return [_center_crop(data.image, patch)]
    if data.image.ndim == 3:
        slices = [data.image]
    else:
        axis = data.slice_axis + 1
        n = data.image.shape[axis]
        # Middle slices hold the anatomy; the first and last ones are often empty.
        middle = [n // 2 + k for k in range(count) if 0 <= n // 2 + k < n]
        slices = [np.take(data.image, k, axis=axis) for k in middle]
    if cfg.train.resize_2d:
        return [resize_image(s, patch) for s in slices]
    return [_center_crop(s, patch) for s in slices]


def random_inputs(cfg: Config, count: int, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal inputs ``(count, C, *patch)``: the stand-in when the run's images are unreadable."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, cfg.data.in_channels, *cfg.train.patch_size, generator=gen)


def run_inputs(cfg: Config, run_dir: str | Path, count: int = 2) -> tuple[torch.Tensor, str]:
    """``count`` network inputs from the run's validation, test or training images.

    Cases are taken from the run's ``splits.json`` in the order val, test, labeled, unlabeled; each is
    loaded, normalised as configured and resized (2D, ``train.resize_2d``) or centre-cropped to
    ``train.patch_size``, as whole-case inference feeds the network.

    Args:
        cfg: the run's configuration.
        run_dir: the run folder.
        count: inputs wanted.

    Returns:
        ``(inputs (count, C, *patch), description)``; the description names the source images, or
        says why seeded random inputs were used instead (data not readable from here).
    """
    try:
        splits = load_splits(Path(run_dir) / "splits.json")
    except DataError as e:
        return random_inputs(cfg, count), f"seeded random inputs (no usable splits.json: {e})"
    inputs: list[np.ndarray] = []
    sources: list[str] = []
    failures: list[str] = []
    for case in [*splits.val, *splits.test, *splits.labeled, *splits.unlabeled]:
        if len(inputs) >= count or len(failures) >= _MAX_FAILURES:
            break
        try:
            found = _network_inputs(case, cfg, count - len(inputs))
        except (DataError, ConfigError) as e:
            failures.append(str(e))
            continue
        inputs += found
        sources += [case.case_id] * len(found)
    if len(inputs) < count:
        why = failures[0] if failures else "no case of the run gives an input of the network's dimension"
        return random_inputs(cfg, count), f"seeded random inputs (the run's images are not readable here: {why})"
    batch = torch.from_numpy(np.stack(inputs[:count]).astype(np.float32))
    return batch, "images of case(s) " + ", ".join(dict.fromkeys(sources[:count]))
