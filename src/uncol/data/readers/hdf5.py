"""HDF5 cases in the SSL4MIS layout: one file per case with an image and a label dataset.

Arrays are ``(H, W)`` for 2D slices and ``(D, H, W)`` for volumes (a 2D model slices along D,
axis 0). An optional ``spacing`` attribute on the image dataset is honoured; SSL4MIS files have none.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from uncol.atomic import atomic_write
from uncol.data.readers.common import as_image, as_label, case_id_of, compact_int
from uncol.data.types import CaseData
from uncol.errors import DataError

HDF5_SLICE_AXIS = 0


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return h5py.File(path, "r")
    except OSError as e:  # h5py reports truncated/corrupt files as OSError
        raise DataError(path, f"unreadable or truncated HDF5 file ({e})") from None


def _dataset(fh: h5py.File, key: str, path: Path, what: str) -> h5py.Dataset:
    obj = fh.get(key)
    if not isinstance(obj, h5py.Dataset):
        keys = ", ".join(sorted(fh.keys())) or "none"
        raise DataError(path, f"no {what} dataset '{key}' in the file (keys: {keys})")
    return obj


def _read(ds: h5py.Dataset, path: Path) -> np.ndarray:
    try:
        return np.asarray(ds[()])
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable or truncated HDF5 dataset '{ds.name}' ({e})") from None


def hdf5_info(path: Path, image_key: str, label_key: str) -> tuple[tuple[int, ...], bool]:
    """Image shape and whether a label dataset exists, from one cheap open of the file."""
    with _open(path) as fh:
        shape = tuple(_dataset(fh, image_key, path, "image").shape)
        return shape, isinstance(fh.get(label_key), h5py.Dataset)


def read_hdf5_image(path: Path, image_key: str = "image") -> CaseData:
    """Read the image of an HDF5 case.

    Returns:
        A :class:`CaseData` without label: image ``(1, H, W)`` or ``(1, D, H, W)`` float32; spacing
        from a ``spacing`` attribute when present, else empty.
    """
    with _open(path) as fh:
        ds = _dataset(fh, image_key, path, "image")
        data = _read(ds, path)
        attr = ds.attrs.get("spacing")
    if data.ndim not in (2, 3):
        raise DataError(path, f"image '{image_key}' must be 2D (H,W) or 3D (D,H,W), got shape {data.shape}")
    spacing: tuple[float, ...] = ()
    if attr is not None:
        values = tuple(float(v) for v in np.atleast_1d(attr))
        if len(values) == data.ndim and all(v > 0 for v in values):
            spacing = values
    return CaseData(
        case_id=case_id_of(path),
        image=as_image(data)[None],
        label=None,
        spacing=spacing,
        affine=None,
        slice_axis=HDF5_SLICE_AXIS,
        meta={"path": str(path), "format": "hdf5"},
    )


def read_hdf5_label(path: Path, label_key: str = "label") -> np.ndarray:
    """Read and validate (integer values) the label dataset of an HDF5 case."""
    with _open(path) as fh:
        data = _read(_dataset(fh, label_key, path, "label"), path)
    return as_label(data, path)


def write_hdf5_label(path: Path, label: np.ndarray, label_key: str = "label") -> Path:
    """Write a label map as dataset ``label_key`` of a new HDF5 file (atomically)."""
    label = compact_int(np.asarray(label))

    def _write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset(label_key, data=label, compression="gzip")

    return atomic_write(path, _write)
