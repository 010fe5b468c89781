"""Prediction on new files, keeping each input's geometry (NIfTI affine/spacing, 2D image size)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from uncol.data.io import read_image_file, write_mask
from uncol.devices import select_device
from uncol.errors import DataError
from uncol.inference import predict_labels
from uncol.runs import load_run_config, load_weights

INPUT_SUFFIXES = (".nii.gz", ".nii", ".h5", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def _is_input(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(INPUT_SUFFIXES) and not path.name.startswith(".")


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into the list of image files to predict."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if _is_input(f))
            if not found:
                raise DataError(p, f"no image files in this folder (looked for {', '.join(INPUT_SUFFIXES)})")
            files += found
        elif p.is_file():
            if not p.name.lower().endswith(INPUT_SUFFIXES):
                raise DataError(p, f"unsupported file type (supported: {', '.join(INPUT_SUFFIXES)})")
            files.append(p)
        else:
            raise DataError(p, "no such file or folder")
    return files


def predict_files(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    checkpoint: str | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """Segment image files with a trained run and write one mask per input into ``out_dir``.

    Masks keep the input's geometry: NIfTI outputs have the input's affine and header, 2D outputs the
    input's size (written as PNG class-index images, also for JPEG inputs since JPEG is lossy).

    Returns:
        The written mask paths, in input order.
    """
    which = checkpoint or load_run_config(run_dir).eval.checkpoint
    cfg, net, _ = load_weights(run_dir, which)
    dev = select_device(device or cfg.train.device)
    net.to(dev)
    out = Path(out_dir)
    written = []
    for path in tqdm(collect_inputs(inputs), desc="predict", disable=not show_progress, dynamic_ncols=True):
        data = read_image_file(path)
        if data.image.shape[0] != cfg.data.in_channels:
            if cfg.data.in_channels == 1 and data.image.shape[0] == 3 and np.allclose(data.image[0], data.image[1:]):
                data.image = data.image[:1]  # grey image stored as RGB
            else:
                raise DataError(
                    path, f"image has {data.image.shape[0]} channel(s) but the model expects {cfg.data.in_channels}"
                )
        if cfg.spatial_dims == 3 and data.image.ndim != 4:
            raise DataError(path, "2D image where a 3D volume is expected (the model is 3D)")
        pred = predict_labels(net, data, cfg, dev)
        written.append(write_mask(out / path.name, pred, data))
    return written
