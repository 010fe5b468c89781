"""Helpers shared by the format readers: file-type detection and label validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uncol.errors import DataError

NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
HDF5_EXTENSIONS: tuple[str, ...] = (".h5", ".hdf5")
IMAGE2D_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
JPEG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg")

# Longest first so that ".nii.gz" wins over a bare ".gz"-less match.
_ALL_EXTENSIONS: tuple[tuple[str, str], ...] = tuple(
    sorted(
        [(e, "nifti") for e in NIFTI_EXTENSIONS]
        + [(e, "hdf5") for e in HDF5_EXTENSIONS]
        + [(e, "image2d") for e in IMAGE2D_EXTENSIONS],
        key=lambda t: -len(t[0]),
    )
)


def split_extension(name: str) -> tuple[str, str] | None:
    """Split a file name into ``(stem, extension)`` for a supported extension, else ``None``.

    The extension keeps its original case; matching ignores case (``.PNG`` is a PNG).
    """
    lower = name.lower()
    for ext, _ in _ALL_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    return None


def format_of(path: str | Path) -> str | None:
    """Reader name (``nifti``, ``hdf5``, ``image2d``) of a file from its extension, or ``None``."""
    lower = Path(path).name.lower()
    for ext, fmt in _ALL_EXTENSIONS:
        if lower.endswith(ext):
            return fmt
    return None


def case_id_of(path: str | Path) -> str:
    """File name without its (possibly double) supported extension."""
    name = Path(path).name
    parts = split_extension(name)
    return parts[0] if parts is not None else Path(name).stem


def is_jpeg(path: str | Path) -> bool:
    """Whether the file name says JPEG (lossy: masks stored as JPEG need thresholding)."""
    return Path(path).name.lower().endswith(JPEG_EXTENSIONS)


def require_format(path: Path) -> str:
    """Like :func:`format_of` but raise :class:`DataError` for an unsupported file type."""
    fmt = format_of(path)
    if fmt is None:
        supported = ", ".join(NIFTI_EXTENSIONS + HDF5_EXTENSIONS + IMAGE2D_EXTENSIONS)
        raise DataError(path, f"unsupported file type (supported: {supported})")
    return fmt


def compact_int(label: np.ndarray) -> np.ndarray:
    """Cast an integer-valued array to the smallest integer dtype that holds its values.

    Labels are kept small in memory: a 512^3 label map in int64 would take 1 GiB.
    """
    if label.size == 0:
        return label.astype(np.uint8)
    lo, hi = int(label.min()), int(label.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return label.astype(dtype, copy=False)
    return label.astype(np.int64, copy=False)


def as_label(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Validate that a label array holds integer values and return it with an integer dtype.

    Float labels are accepted when every value is a whole number (some datasets, e.g. two
    Hippocampus cases of MSD Task04, store labels as float32).

    Raises:
        DataError: a non-numeric data type, NaN/Inf, or non-integer values.
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return compact_int(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(path, f"label has unsupported data type {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise DataError(path, "label contains NaN or Inf values")
    rounded = np.rint(arr)
    if not np.array_equal(rounded, arr):
        bad = arr[rounded != arr]
        raise DataError(path, f"label has non-integer values (e.g. {float(bad.flat[0])!r}); labels must be class ids")
    return compact_int(rounded.astype(np.int64))


def as_image(array: np.ndarray) -> np.ndarray:
    """Float32 copy-free view where possible (readers return float32 images)."""
    return np.asarray(array, dtype=np.float32)
