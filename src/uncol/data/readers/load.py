"""Load one :class:`Case` as validated :class:`CaseData`, whatever its format."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uncol.config import DataConfig
from uncol.data.readers.common import require_format
from uncol.data.readers.hdf5 import read_hdf5_image, read_hdf5_label
from uncol.data.readers.image2d import read_image2d, read_mask2d
from uncol.data.readers.nifti import channel_files, read_nifti_image, read_nifti_label
from uncol.data.types import Case, CaseData
from uncol.errors import ConfigError, DataError

AFFINE_TOLERANCE = 1e-3
#: Relative difference allowed between the voxel sizes stored in an image and in its label.
SPACING_TOLERANCE = 1e-3


def ndim_problem(found: int, expected: int) -> str:
    """The message for a 2D/3D mismatch (shared with the dataset check)."""
    if found == 3 and expected == 2:
        return "3D volume where a 2D image is expected"
    if found == 2 and expected == 3:
        return "2D image where a 3D volume is expected"
    return f"{found}D array where {expected}D is expected"


def channel_problem(data: CaseData, in_channels: int) -> str | None:
    """The problem of an image whose channel count is not ``data.in_channels`` (shared with the dataset
    check), or ``None``."""
    if data.image.shape[0] == in_channels:
        return None
    return f"image has {data.image.shape[0]} channel(s) but data.in_channels={in_channels}"


def _read_image(case: Case, data_cfg: DataConfig) -> CaseData:
    path = case.image_path
    if case.fmt == "nifti":
        return read_nifti_image(path, channel_files(path, case.case_id, data_cfg.channel_suffix))
    if case.fmt == "hdf5":
        return read_hdf5_image(path, data_cfg.image_key)
    if case.fmt == "image2d":
        return read_image2d(path)
    raise DataError(path, f"unknown reader {case.fmt!r} for case {case.case_id}")


def read_label(
    case: Case, data_cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...] | None]:
    """Read the label of a case (which must have one).

    Returns:
        ``(label, affine, spacing)``: the integer label map and, for NIfTI labels, their affine and
        the voxel size in their header (``None`` elsewhere).
    """
    path = case.label_path
    if path is None:
        raise DataError(case.image_path, f"case {case.case_id} has no label")
    fmt = require_format(path)
    if fmt == "hdf5":
        return read_hdf5_label(path, data_cfg.label_key), None, None
    if fmt == "nifti":
        label, spacing, affine = read_nifti_label(path)
        return label, affine, spacing
    return read_mask2d(path, data_cfg.mask_mode), None, None


def resolve_spacing(
    stored: Sequence[float], configured: Sequence[float], ndim: int, path: object
) -> tuple[float, ...]:
    """Spacing stored in the file, else ``data.spacing``, else 1.0 per axis.

    ``data.spacing`` may list more values than the array has axes (e.g. three values for a dataset
    whose training slices are 2D): the last ``ndim`` values, the in-plane ones, are used then.
    """
    if len(stored) == ndim:
        return tuple(float(s) for s in stored)
    if configured:
        if len(configured) < ndim:
            raise ConfigError(f"data.spacing: {len(configured)} value(s) given for the {ndim}D file {path}")
        return tuple(float(s) for s in configured[-ndim:])
    return (1.0,) * ndim


def check_label(label: np.ndarray, num_classes: int, label_path: object) -> None:
    """Raise :class:`DataError` when a label holds values outside ``[0, num_classes)``."""
    if label.size == 0:
        return
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= num_classes:
        values = np.unique(label)
        bad = [int(v) for v in values if v < 0 or v >= num_classes][:10]
        raise DataError(
            label_path, f"label values outside [0, {num_classes}): {bad} (data.num_classes={num_classes})"
        )


def _check_spacing(image: Sequence[float], label: Sequence[float] | None, case: Case) -> None:
    """Refuse a label whose stored voxel size differs from its image's: one of the two headers is wrong,
    and distances in millimetres would silently use the image's."""
    if not image or label is None or len(label) != len(image):
        return
    if not np.allclose(np.asarray(label), np.asarray(image), rtol=SPACING_TOLERANCE, atol=1e-6):
        shown = ", ".join(f"{v:.4g}" for v in label), ", ".join(f"{v:.4g}" for v in image)
        raise DataError(
            case.label_path, f"label spacing ({shown[0]}) differs from the spacing ({shown[1]}) of image {case.image_path}"
        )


def load_case(case: Case, data_cfg: DataConfig, expect_ndim: int | None = None) -> CaseData:
    """Load and validate one case.

    Args:
        case: the case to load; its label is read when ``case.label_path`` is set.
        data_cfg: dataset options (HDF5 keys, mask mode, spacing, slice axis, number of classes).
        expect_ndim: when given, the number of spatial dimensions the caller needs (2 or 3).

    Returns:
        The validated case: finite float32 image ``(C, *spatial)``, label ``spatial`` with values in
        ``[0, num_classes)`` or ``None``, spacing, affine, slice axis and reader meta
        (``meta["path"]`` is the image file, ``meta["label_path"]`` the label file or ``None``).

    Raises:
        DataError: unreadable/truncated file, NaN/Inf intensities, 2D/3D mismatch, image/label
            shape, spacing or affine mismatch, label values out of range. The message names the file.
    """
    data = _read_image(case, data_cfg)
    data.case_id = case.case_id
    path = case.image_path
    ndim = data.image.ndim - 1
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(path, ndim_problem(ndim, expect_ndim))
    finite = np.isfinite(data.image)
    if not finite.all():
        raise DataError(path, f"image contains NaN or Inf intensities ({int((~finite).sum())} values)")
    if case.label_path is not None:
        label, label_affine, label_spacing = read_label(case, data_cfg)
        if tuple(label.shape) != data.spatial_shape:
            raise DataError(
                case.label_path,
                f"label shape {tuple(label.shape)} differs from image shape {data.spatial_shape} of {path}",
            )
        if data.affine is not None and label_affine is not None:
            diff = float(np.abs(data.affine - label_affine).max())
            if diff > AFFINE_TOLERANCE:
                raise DataError(
                    case.label_path,
                    f"label affine differs from the affine of image {path} (max difference {diff:.4g})",
                )
        # After the affine: a header whose voxel size disagrees with an equal affine is what is left.
        _check_spacing(data.spacing, label_spacing, case)
        check_label(label, data_cfg.num_classes, case.label_path)
        data.label = label
    data.spacing = resolve_spacing(data.spacing, data_cfg.spacing, ndim, path)
    if ndim == 3:
        if data_cfg.slice_axis >= 3:
            raise ConfigError(f"data.slice_axis: must be -1, 0, 1 or 2, got {data_cfg.slice_axis}")
        if data_cfg.slice_axis >= 0:
            data.slice_axis = data_cfg.slice_axis
    else:
        data.slice_axis = 0
    data.meta["label_path"] = None if case.label_path is None else str(case.label_path)
    return data
