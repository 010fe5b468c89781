"""Single-file reading and writing, dispatched on the file extension.

Used for ad-hoc files (``uncol predict IMAGE``) and for writing predictions: a predicted label map
is written in the geometry of the image it was predicted from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uncol.data.readers.common import require_format
from uncol.data.readers.hdf5 import read_hdf5_image, read_hdf5_label, write_hdf5_label
from uncol.data.readers.image2d import read_image2d, read_mask2d, write_png_label
from uncol.data.readers.nifti import read_nifti_image, read_nifti_label, write_nifti_label
from uncol.data.types import CaseData
from uncol.errors import DataError


def read_image_file(path: str | Path, *, image_key: str = "image") -> CaseData:
    """Read any supported image file, without label.

    Args:
        path: a NIfTI (``.nii``/``.nii.gz``), HDF5 (``.h5``, dataset ``image_key``) or 2D image file
            (PNG, JPEG, TIFF, GIF, BMP).
        image_key: HDF5 dataset holding the image.

    Returns:
        :class:`CaseData` with ``case_id`` = file name without extension(s), float32 channel-first
        image, spacing stored in the file (NIfTI zooms) or 1.0 per axis, NIfTI affine and header.

    Raises:
        DataError: missing, unsupported, unreadable or truncated file; NaN or Inf intensities (which
            would turn every prediction of the image into noise, silently).
    """
    path = Path(path)
    fmt = require_format(path)
    if fmt == "nifti":
        data = read_nifti_image(path)
    elif fmt == "hdf5":
        data = read_hdf5_image(path, image_key)
    else:
        data = read_image2d(path)
    finite = np.isfinite(data.image)
    if not finite.all():
        raise DataError(path, f"image contains NaN or Inf intensities ({int((~finite).sum())} values)")
    if not data.spacing:
        data.spacing = (1.0,) * (data.image.ndim - 1)
    return data


def read_mask(
    path: str | Path, *, mask_mode: str = "auto", label_key: str = "label"
) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Read an integer label map from any supported file.

    Args:
        path: NIfTI, HDF5 (dataset ``label_key``) or 2D image mask.
        mask_mode: decoding of 2D masks (see :func:`uncol.data.readers.image2d.read_mask2d`).
        label_key: HDF5 dataset holding the label.

    Returns:
        ``(label, spacing)``: spacing from the NIfTI header, else ``None``.
    """
    path = Path(path)
    fmt = require_format(path)
    if fmt == "nifti":
        label, spacing, _ = read_nifti_label(path)
        return label, spacing
    if fmt == "hdf5":
        return read_hdf5_label(path, label_key), None
    return read_mask2d(path, mask_mode), None


def write_mask(
    path: str | Path,
    label: np.ndarray,
    reference: CaseData,
    *,
    mask_values: str = "index",
    num_classes: int | None = None,
) -> Path:
    """Write a predicted label map with the geometry of the image it was predicted from.

    NIfTI keeps the reference's affine and header (data type uint8, or int16 for many classes);
    2D formats become a PNG of the input's size (a ``.jpg`` path is written as ``.png`` because JPEG
    is lossy) whose pixels encode the classes as ``mask_values`` says (``index``, ``scaled`` or
    ``palette``: :func:`uncol.data.readers.image2d.write_png_label`; ``num_classes`` is the model's
    class count, used by ``scaled`` and ``palette``); HDF5 gets a ``label`` dataset. NIfTI and HDF5
    always hold class ids. Every write is atomic.

    Returns:
        The path actually written.

    Raises:
        DataError: unsupported extension, or a label whose shape differs from the reference's.
    """
    path = Path(path)
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer) and label.dtype != bool:
        raise DataError(path, f"a label map must hold integers, got {label.dtype}")
    if tuple(label.shape) != reference.spatial_shape:
        raise DataError(path, f"label shape {tuple(label.shape)} differs from the image shape {reference.spatial_shape}")
    fmt = require_format(path)
    if fmt == "nifti":
        return write_nifti_label(path, label, reference)
    if fmt == "hdf5":
        return write_hdf5_label(path, label)
    return write_png_label(path, label, reference, mask_values=mask_values, num_classes=num_classes)
