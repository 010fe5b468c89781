"""A dataset's fingerprint: what ``uncol init`` plans a configuration from.

The layout is recognised by :func:`uncol.data.layout.detect_layout` and every case is loaded once by
:func:`uncol.data.check.check_dataset` (so the problems ``uncol data check`` reports come with it);
the fingerprint adds per-case shapes, spacings and slice axes, and for 2D masks the mask mode that
``data.mask_mode=auto`` resolves to. nnU-Net plans from the same kind of summary (Isensee et al.,
Nat Methods 2021): median shape and spacing, intensity range, modality.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from uncol.config import DataConfig
from uncol.data.check import CheckReport, check_dataset
from uncol.data.layout import detect_layout
from uncol.data.readers.image2d import read_mask2d
from uncol.data.types import Case, CaseData
from uncol.errors import DataError

# Sampled masks whose decoding is reported: enough to see a mixed dataset, cheap on a large one.
_MASK_SAMPLES = 20
# The modes ``auto`` can resolve to, tried in this order (a palette mask also thresholds cleanly).
_AUTO_MODES = ("palette", "binary", "index")


@dataclass(frozen=True)
class CaseInfo:
    """Geometry of one loaded case.

    Attributes:
        role: ``train``, ``val``, ``test`` or ``unlabeled`` (as discovered, before splitting).
        case_id: the case's id.
        shape: spatial shape of the array.
        spacing: pixel/voxel size per spatial axis (mm; 1 where the format stores none).
        channels: image channels.
        slice_axis: the axis a 2D network slices a 3D case along (reader default or ``data.slice_axis``).
    """

    role: str
    case_id: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    channels: int
    slice_axis: int


@dataclass
class DatasetFingerprint:
    """Everything ``uncol init`` knows about a dataset.

    Attributes:
        data: the detected data options (``root`` made absolute).
        report: the dataset check (counts, classes, intensities, problems).
        cases: geometry of every case that loaded.
        mask_modes: image2d: the mode ``auto`` resolved to -> number of sampled masks.
    """

    data: DataConfig
    report: CheckReport
    cases: list[CaseInfo] = field(default_factory=list)
    mask_modes: dict[str, int] = field(default_factory=dict)

    @property
    def names_known(self) -> bool:
        """Whether the dataset names its classes (``dataset.json``)."""
        return bool(self.data.class_names)

    def role_cases(self, *roles: str) -> list[CaseInfo]:
        """Cases of the given roles."""
        return [c for c in self.cases if c.role in roles]

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the training pool (the majority, as the check reports minorities)."""
        pool = self.role_cases("train") or self.cases
        if not pool:
            raise DataError(self.data.root, "no case of the dataset could be loaded (see the problems listed)")
        return Counter(len(c.shape) for c in pool).most_common(1)[0][0]

    def training_cases(self) -> list[CaseInfo]:
        """Training-pool and extra unlabeled cases of the majority dimension: what a network trains on."""
        nd = self.ndim
        return [c for c in self.role_cases("train", "unlabeled") if len(c.shape) == nd]

    def median_shape(self) -> tuple[int, ...]:
        """Median spatial shape of the training cases, per axis."""
        shapes = [c.shape for c in self.training_cases()]
        return tuple(int(round(statistics.median(s[a] for s in shapes))) for a in range(self.ndim))

    def max_shape(self) -> tuple[int, ...]:
        """Largest extent of the training cases along each axis."""
        shapes = [c.shape for c in self.training_cases()]
        return tuple(max(s[a] for s in shapes) for a in range(self.ndim))

    def median_spacing(self) -> tuple[float, ...]:
        """Median spacing of the training cases, per axis."""
        spacings = [c.spacing for c in self.training_cases()]
        return tuple(float(statistics.median(s[a] for s in spacings)) for a in range(self.ndim))

    def channels(self) -> int:
        """Image channels of most cases."""
        return Counter(c.channels for c in self.cases).most_common(1)[0][0] if self.cases else self.data.in_channels

    def layout_text(self) -> str:
        """The detected layout and matching rule, in words."""
        d = self.data
        if d.format == "nifti":
            text = f"NIfTI folders {d.images_dir}/ + {d.labels_dir}/"
            if d.channel_suffix:
                text += f", nnU-Net channel files ({d.channel_suffix}, ...)"
            if d.test_images_dir:
                text += f", test folders {d.test_images_dir}/" + (f" + {d.test_labels_dir}/" if d.test_labels_dir else "")
        elif d.format == "hdf5":
            lists = [x for x in (d.train_list, d.val_list, d.test_list, d.unlabeled_list) if x]
            text = f"SSL4MIS HDF5, lists {', '.join(lists)}, files {d.path_pattern}"
            if d.group_regex:
                text += f", patients grouped by {d.group_regex}"
        else:
            rule = "same stem" if d.mask_match == "stem" else f"stem + '{d.mask_suffix}'"
            text = f"2D image files in {d.images_dir}/ with masks in {d.labels_dir}/, matched by {rule}"
        if d.unlabeled_dir:
            text += f"; extra unlabeled images in {d.unlabeled_dir}/"
        return text

    def mask_mode_text(self) -> str:
        """What ``data.mask_mode=auto`` does with the sampled masks (image2d), e.g. ``binary (20 of 20 masks)``."""
        total = sum(self.mask_modes.values())
        return ", ".join(f"{mode} ({n} of {total} sampled masks)" for mode, n in self.mask_modes.items())


def _auto_mask_mode(path: Path) -> str | None:
    """The mode ``auto`` resolves to for one mask: the explicit mode that decodes it identically.

    Asking the reader itself (rather than restating its rule) keeps this in step with
    :func:`uncol.data.readers.image2d.read_mask2d`. ``None`` for an unreadable mask (reported by the check).
    """
    try:
        auto = read_mask2d(path, "auto")
    except DataError:
        return None
    for mode in _AUTO_MODES:
        try:
            if (read_mask2d(path, mode) == auto).all():
                return mode
        except DataError:
            continue
    return None  # pragma: no cover - auto always equals one of the explicit modes


def _mask_modes(labels: list[Path]) -> dict[str, int]:
    step = max(1, len(labels) // _MASK_SAMPLES)
    modes = Counter(m for m in (_auto_mask_mode(p) for p in labels[::step][:_MASK_SAMPLES]) if m is not None)
    return dict(modes.most_common())


def fingerprint_dataset(root: str | Path) -> DatasetFingerprint:
    """Detect a dataset folder's layout and load every case once.

    Raises:
        DataError: not a folder, or a layout none of the readers recognise.
    """
    data = detect_layout(root)
    data.root = str(Path(root).resolve())
    infos: list[CaseInfo] = []
    labels: list[Path] = []

    def visit(role: str, case: Case, loaded: CaseData) -> None:
        infos.append(
            CaseInfo(role, case.case_id, loaded.spatial_shape, tuple(loaded.spacing), int(loaded.image.shape[0]),
                     loaded.slice_axis)
        )
        if case.label_path is not None:
            labels.append(case.label_path)

    report = check_dataset(data, on_case=visit)
    modes = _mask_modes(labels) if data.format == "image2d" else {}
    return DatasetFingerprint(data=data, report=report, cases=infos, mask_modes=modes)
