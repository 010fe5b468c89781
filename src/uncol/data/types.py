"""Core data types shared by readers, training and evaluation.

A :class:`Case` is a lightweight *reference* to one sample on disk (cheap to list, pickle and write
into ``splits.json``); :class:`CaseData` is what a reader returns after loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    """One sample of a dataset, as stored on disk.

    Attributes:
        case_id: unique identifier inside the dataset (e.g. ``patient001_frame01_slice_3``).
        image_path: file holding the image (for HDF5 the same file also holds the label).
        label_path: file holding the label, or ``None`` for unlabeled cases.
        group: the patient/subject the case belongs to; splits never separate one group.
        fmt: reader name: ``"nifti"``, ``"hdf5"`` or ``"image2d"``.
        ndim: number of spatial dimensions of the stored array (2 or 3).
    """

    case_id: str
    image_path: Path
    label_path: Path | None
    group: str
    fmt: str
    ndim: int

    @property
    def has_label(self) -> bool:
        """Whether a label is available for this case."""
        return self.label_path is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (used in ``splits.json``)."""
        return {
            "case_id": self.case_id,
            "image_path": str(self.image_path),
            "label_path": None if self.label_path is None else str(self.label_path),
            "group": self.group,
            "fmt": self.fmt,
            "ndim": self.ndim,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        """Inverse of :meth:`to_json`."""
        return cls(
            case_id=d["case_id"],
            image_path=Path(d["image_path"]),
            label_path=None if d["label_path"] is None else Path(d["label_path"]),
            group=d["group"],
            fmt=d["fmt"],
            ndim=int(d["ndim"]),
        )


@dataclass
class CaseData:
    """A loaded case.

    Attributes:
        case_id: the case's identifier.
        image: float32 array, channel first: ``(C, *spatial)``; raw intensities (not normalised),
            guaranteed finite.
        label: integer array ``spatial`` (same spatial shape as the image) with values in
            ``[0, num_classes)``, or ``None``.
        spacing: physical size of one pixel/voxel along each spatial axis of the *array*, in mm
            (1.0 where the format stores none).
        affine: 4x4 voxel-to-world matrix for NIfTI, else ``None``.
        slice_axis: for 3D arrays, the spatial axis along which a 2D model slices the volume
            (HDF5 (D,H,W): 0; NIfTI (x,y,z): 2).
        meta: reader-specific information needed to write a prediction with the same geometry
            (e.g. the NIfTI header, the original 2D image size and mode).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    slice_axis: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape of the image (without the channel axis)."""
        return tuple(self.image.shape[1:])
