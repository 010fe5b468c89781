"""Float maps of a prediction (entropy, class probabilities) written in the geometry of its input.

Each format gets files a user can open with the usual tools:

* NIfTI input: float32 NIfTI with the input's affine and header; the entropy map has the input's
  spatial shape (nats, ``0 .. ln K``), the probabilities are one 4D file ``(x, y, z, K)``, class
  last (a 2D NIfTI ``(x, y)`` gives ``(x, y, 1, K)``, so the class never lands on a spatial axis).
* 2D image input: the entropy as a 16-bit grayscale PNG of the input's size holding
  ``round(65535 * H / ln K)``, the entropy normalised to ``[0, 1]`` (so ``H = value / 65535 * ln K``
  nats); the probabilities as one float32 TIFF with one page per class (page ``k`` = class ``k``,
  exact values in ``[0, 1]``).
* HDF5 input: datasets ``entropy`` (nats) and ``probabilities`` (class last) in their own files.

Every write is atomic (:mod:`uncol.atomic`).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
from PIL import Image

from uncol.atomic import atomic_write
from uncol.data.readers.common import case_id_of, require_format
from uncol.data.types import CaseData
from uncol.errors import DataError

__all__ = ["MAP_KINDS", "map_path", "write_entropy_map", "write_probability_map"]

#: The maps a prediction can come with.
MAP_KINDS: tuple[str, ...] = ("entropy", "probabilities")

# Full scale of a 16-bit PNG: normalised entropy 1 (uniform probabilities) is stored as this value.
PNG16_MAX = 65535


def map_path(out_dir: str | Path, input_path: str | Path, kind: str) -> Path:
    """Where the ``kind`` map of the prediction of ``input_path`` goes: ``out_dir/<stem>_<kind><ext>``.

    The extension follows the input: NIfTI keeps ``.nii``/``.nii.gz``, HDF5 becomes ``.h5``, 2D
    images become ``.png`` (entropy) or ``.tif`` (probabilities).
    """
    if kind not in MAP_KINDS:
        raise ValueError(f"unknown map kind {kind!r} (expected one of {', '.join(MAP_KINDS)})")
    path = Path(input_path)
    fmt = require_format(path)
    stem = case_id_of(path)
    if fmt == "nifti":
        ext = ".nii" if path.name.lower().endswith(".nii") else ".nii.gz"
    elif fmt == "hdf5":
        ext = ".h5"
    else:
        ext = ".png" if kind == "entropy" else ".tif"
    return Path(out_dir) / f"{stem}_{kind}{ext}"


def _check_shape(path: Path, spatial: tuple[int, ...], reference: CaseData) -> None:
    if spatial != reference.spatial_shape:
        raise DataError(path, f"map shape {spatial} differs from the image shape {reference.spatial_shape}")


def write_entropy_map(path: str | Path, entropy: np.ndarray, num_classes: int, reference: CaseData) -> Path:
    """Write an entropy map (nats, ``(*spatial)``) in the geometry of ``reference``.

    Args:
        path: destination (:func:`map_path`); its extension picks the format.
        entropy: per-voxel entropy in nats, between 0 and ``ln num_classes``.
        num_classes: classes ``K`` of the model (sets the PNG scale and the NIfTI display range).
        reference: the image the prediction was made from.

    Returns:
        The path written.
    """
    path = Path(path)
    entropy = np.asarray(entropy, dtype=np.float32)
    _check_shape(path, tuple(entropy.shape), reference)
    h_max = math.log(num_classes)
    fmt = require_format(path)
    if fmt == "nifti":
        return _write_nifti_float(path, entropy, reference, h_max)
    if fmt == "hdf5":
        return _write_h5(path, "entropy", entropy, {"unit": "nats", "max": h_max})
    if entropy.ndim != 2:
        raise DataError(path, f"a 2D entropy image needs a 2D map, got shape {entropy.shape}")
    scaled = np.rint(np.clip(entropy / h_max, 0.0, 1.0) * PNG16_MAX).astype(np.uint16)
    pil = Image.fromarray(scaled)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def write_probability_map(path: str | Path, probabilities: np.ndarray, reference: CaseData) -> Path:
    """Write class probabilities ``(K, *spatial)`` in the geometry of ``reference``.

    NIfTI and HDF5 files hold them class last (``(*spatial, K)``); a TIFF has one float32 page per
    class.

    Returns:
        The path written.
    """
    path = Path(path)
    probs = np.asarray(probabilities, dtype=np.float32)
    _check_shape(path, tuple(probs.shape[1:]), reference)
    fmt = require_format(path)
    class_last = np.moveaxis(probs, 0, -1)
    if fmt == "nifti":
        if class_last.ndim == 3:  # (x, y, K) would put the classes on the z axis
            class_last = class_last[:, :, None, :]
        return _write_nifti_float(path, np.ascontiguousarray(class_last), reference, 1.0)
    if fmt == "hdf5":
        return _write_h5(path, "probabilities", np.ascontiguousarray(class_last), {"class_axis": -1})
    if probs.ndim != 3:
        raise DataError(path, f"a 2D probability image needs (K, H, W) probabilities, got shape {probs.shape}")
    pages = [Image.fromarray(np.ascontiguousarray(p)) for p in probs]
    return atomic_write(
        path,
        lambda tmp: pages[0].save(tmp, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate"),
    )


def _write_nifti_float(path: Path, array: np.ndarray, reference: CaseData, display_max: float) -> Path:
    """A float32 NIfTI with the reference's affine and header (scaling reset, display range set)."""
    header = reference.meta.get("nifti_header")
    affine = reference.affine
    if affine is None:
        # A reference without world geometry (HDF5, PNG): encode at least its spacing.
        spacing = list(reference.spacing) + [1.0] * (3 - len(reference.spacing))
        affine = np.diag([*spacing[:3], 1.0])
    img: Any
    if isinstance(header, nib.Nifti2Header):
        img = nib.Nifti2Image(array, affine, header=header.copy())
    elif isinstance(header, nib.Nifti1Header):
        img = nib.Nifti1Image(array, affine, header=header.copy())
    else:
        img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(np.float32)
    # The image's intensity scaling and display window do not apply to these values.
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0.0
    img.header["cal_max"] = display_max
    payload = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def _write_h5(path: Path, key: str, array: np.ndarray, attrs: dict[str, Any]) -> Path:
    def _write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as fh:
            ds = fh.create_dataset(key, data=array, compression="gzip")
            for name, value in attrs.items():
                ds.attrs[name] = value

    return atomic_write(path, _write)
