"""NIfTI (``.nii`` / ``.nii.gz``) images and label maps, as used by MSD and nnU-Net.

Arrays keep nibabel's ``(x, y, z)`` voxel order so that a prediction can be written back with the
original affine and header unchanged; a 2D model slices such volumes along ``z`` (axis 2).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from uncol.atomic import atomic_write
from uncol.data.readers.common import as_image, as_label, case_id_of, compact_int
from uncol.data.types import CaseData
from uncol.errors import DataError

NIFTI_SLICE_AXIS = 2


def _load(path: Path) -> tuple[Any, np.ndarray]:
    """Load a NIfTI file fully; every failure of nibabel/zlib becomes a :class:`DataError`."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        img = nib.load(str(path))
        # Reading the data here (not lazily later) is what detects truncated/corrupt files.
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel, gzip and zlib raise many unrelated types for a bad file
        raise DataError(path, f"unreadable or truncated NIfTI file ({type(e).__name__}: {e})") from None
    return img, data


def nifti_shape(path: Path) -> tuple[int, ...]:
    """Array shape of a NIfTI file from its header alone (cheap: the data is not read)."""
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as e:  # nibabel raises various types for a broken header
        raise DataError(path, f"unreadable NIfTI header ({type(e).__name__}: {e})") from None


def nifti_spatial_ndim(path: Path) -> int:
    """Spatial dimensions (2 or 3) of a NIfTI image from its header (4D = 3D + channels)."""
    return 2 if len(nifti_shape(path)) == 2 else 3


def _zooms(img: Any, ndim: int) -> tuple[float, ...] | None:
    """Voxel size of the first ``ndim`` axes, or ``None`` when the header stores nonsense (<= 0)."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:ndim])
    if len(zooms) != ndim or not all(np.isfinite(z) and z > 0 for z in zooms):
        return None
    return zooms


def _channels_first(data: np.ndarray, path: Path) -> np.ndarray:
    """``(x,y[,z])`` -> ``(1, ...)``; ``(x,y,z,c)`` and ``(x,y,z,1,c)`` -> ``(c, x, y, z)``."""
    if data.ndim in (2, 3):
        return data[None]
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector convention puts channels on the 5th axis
        data = data[:, :, :, 0, :]
    if data.ndim == 4:
        return np.moveaxis(data, 3, 0)
    raise DataError(path, f"unsupported NIfTI shape {data.shape} (expected 2D, 3D or 3D + channels)")


def read_nifti_image(path: Path, extra_channels: list[Path] | None = None) -> CaseData:
    """Read a NIfTI image (optionally stacking further single-channel files as channels).

    Args:
        path: the image file (for nnU-Net data the ``_0000`` file).
        extra_channels: further files whose volumes become channels 1, 2, ... in order.

    Returns:
        A :class:`CaseData` without label: image ``(C, x, y[, z])`` float32, spacing from the header
        zooms (empty tuple when the header has none), affine and header kept in ``meta``.
    """
    img, data = _load(path)
    image = _channels_first(as_image(data), path)
    parts = [image]
    for extra in extra_channels or []:
        _, more = _load(extra)
        more_img = _channels_first(as_image(more), extra)
        if more_img.shape[1:] != image.shape[1:]:
            raise DataError(
                extra, f"channel shape {more_img.shape[1:]} differs from {image.shape[1:]} of {path.name}"
            )
        parts.append(more_img)
    if len(parts) > 1:
        image = np.concatenate(parts, axis=0)
    ndim = image.ndim - 1
    return CaseData(
        case_id=case_id_of(path),
        image=image,
        label=None,
        spacing=_zooms(img, ndim) or (),
        affine=np.asarray(img.affine, dtype=np.float64),
        slice_axis=NIFTI_SLICE_AXIS,
        meta={
            "path": str(path),
            "format": "nifti",
            "nifti_header": img.header.copy(),
            "channel_files": [str(p) for p in [path, *(extra_channels or [])]],
        },
    )


def read_nifti_label(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None, np.ndarray]:
    """Read a NIfTI label map.

    Returns:
        ``(label, spacing, affine)``: integer array (trailing singleton axes beyond 3 dropped),
        header zooms or ``None``, voxel-to-world affine.
    """
    img, data = _load(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise DataError(path, f"label must be a 2D or 3D array, got shape {data.shape}")
    label = as_label(data, path)
    return label, _zooms(img, label.ndim), np.asarray(img.affine, dtype=np.float64)


def channel_files(image_path: Path, case_id: str, channel_suffix: str) -> list[Path]:
    """Files of channels 1, 2, ... of an nnU-Net style multi-channel case.

    Only applies when the image file is ``case_id + channel_suffix`` and the suffix ends in digits
    (``_0000``): then ``case_0001``, ``case_0002``, ... next to it are further channels.
    """
    match = re.fullmatch(r"(.*?)(\d+)", channel_suffix)
    if not channel_suffix or match is None:
        return []
    ext = image_path.name[len(case_id_of(image_path)) :]
    if case_id_of(image_path) != case_id + channel_suffix:
        return []
    prefix, width, first = match.group(1), len(match.group(2)), int(match.group(2))
    out = []
    k = first + 1
    while True:
        candidate = image_path.with_name(f"{case_id}{prefix}{k:0{width}d}{ext}")
        if not candidate.is_file():
            return out
        out.append(candidate)
        k += 1


def write_nifti_label(path: Path, label: np.ndarray, reference: CaseData) -> Path:
    """Write a label map with the reference's affine and header (data type adapted to the labels)."""
    # uint8 for up to 256 classes, int16 beyond: the smallest type that holds the class ids.
    label = compact_int(np.asarray(label))
    header = reference.meta.get("nifti_header")
    affine = reference.affine
    if affine is None:
        # A reference without world geometry (HDF5, PNG): encode at least its spacing.
        spacing = list(reference.spacing) + [1.0] * (3 - len(reference.spacing))
        affine = np.diag([*spacing[:3], 1.0])
    if isinstance(header, nib.Nifti2Header):
        img: Any = nib.Nifti2Image(label, affine, header=header.copy())
    elif isinstance(header, nib.Nifti1Header):
        img = nib.Nifti1Image(label, affine, header=header.copy())
    else:
        img = nib.Nifti1Image(label, affine)
    img.set_data_dtype(label.dtype)
    # The image's intensity scaling and display window make no sense for class ids.
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0
    img.header["cal_max"] = 0
    payload = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))
