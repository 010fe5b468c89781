"""Guess the :class:`DataConfig` of a dataset folder, so that ``uncol data check FOLDER`` needs no config.

Recognised layouts (tried in this order):
    * nnU-Net / MSD NIfTI: ``imagesTr/`` + ``labelsTr/`` (``dataset.json`` read for classes/channels);
    * NIfTI ``images/`` + ``labels/`` (also under ``TrainingSet/``);
    * SSL4MIS HDF5: ``*.list`` files naming ``.h5`` cases;
    * 2D image files: ``images/`` + ``masks/`` (or ``labels/``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from uncol.config import DataConfig
from uncol.data.readers.common import case_id_of, format_of
from uncol.data.readers.hdf5 import read_hdf5_label
from uncol.data.readers.image2d import read_image2d, read_mask2d
from uncol.data.readers.nifti import nifti_shape, read_nifti_label
from uncol.errors import DataError

_LABEL_SAMPLES = 20
_NIFTI_FOLDERS: tuple[tuple[str, str], ...] = (
    ("imagesTr", "labelsTr"),
    ("images", "labels"),
    ("TrainingSet/images", "TrainingSet/labels"),
    ("TrainingSet/imagesTr", "TrainingSet/labelsTr"),
)
_NIFTI_TEST_FOLDERS: dict[str, tuple[str, str]] = {"imagesTr": ("imagesTs", "labelsTs")}
_TRAIN_LISTS: tuple[str, ...] = ("train_slices.list", "train.list")
_VAL_LISTS: tuple[str, ...] = ("val.list", "valid.list", "validation.list")
_TEST_LISTS: tuple[str, ...] = ("test.list",)
_UNLABELED_LISTS: tuple[str, ...] = ("unlabeled.list", "unlabelled.list")
_PATH_PATTERNS: tuple[str, ...] = ("{case}.h5", "data/{case}.h5", "data/slices/{case}.h5", "{case}/image.h5")
_MASK_FOLDERS: tuple[str, ...] = ("masks", "labels")
_UNLABELED_FOLDERS: tuple[str, ...] = ("unlabeled", "unlabelled", "imagesUn")
_DEFAULT_MASK_SUFFIX = DataConfig().mask_suffix
_PATIENT_RX = re.compile(r"^patient\d+")

LAYOUTS_LOOKED_FOR = (
    "imagesTr/ + labelsTr/ (nnU-Net/MSD NIfTI), images/ + labels/ of NIfTI files (also under TrainingSet/), "
    "*.list files naming .h5 files (SSL4MIS HDF5), images/ + masks/ or labels/ of 2D image files"
)


def _files(folder: Path, fmt: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and format_of(p) == fmt)


def _sample(items: list[Any], n: int = _LABEL_SAMPLES) -> list[Any]:
    """Up to ``n`` items spread evenly over the list (first items alone may all be background)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def _classes_from(read: Callable[[Path], np.ndarray], paths: list[Path]) -> int:
    """Largest label value in the sampled files, plus one (at least 2).

    Unreadable files are skipped: guessing the layout must not fail on the very problems that
    ``uncol data check`` is there to report.
    """
    top = 1
    for path in paths:
        try:
            label = read(path)
        except DataError:
            continue
        if label.size:
            top = max(top, int(label.max()))
    return max(2, top + 1)


def _unlabeled_dir(folder: Path) -> str:
    for name in _UNLABELED_FOLDERS:
        sub = folder / name
        if sub.is_dir() and any(format_of(p) for p in sub.iterdir() if p.is_file()):
            return name
    return ""


def _read_dataset_json(path: Path) -> tuple[int | None, list[str], int | None]:
    """``(num_classes, class_names, in_channels)`` from an MSD or nnU-Net v2 ``dataset.json``."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"unreadable dataset.json ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(path, "dataset.json must hold a JSON object")
    num_classes, names = None, []
    labels = meta.get("labels")
    if isinstance(labels, dict) and labels:
        if all(str(k).isdigit() for k in labels):  # MSD: {"0": "background", "1": "..."}
            ids = {int(k): str(v) for k, v in labels.items()}
        else:  # nnU-Net v2: {"background": 0, "name": 1} (region lists ignored)
            ids = {int(v): str(k) for k, v in labels.items() if isinstance(v, int) and not isinstance(v, bool)}
        if ids:
            num_classes = max(ids) + 1
            names = [ids.get(k, str(k)) for k in range(num_classes)]
    channels = meta.get("channel_names", meta.get("modality"))
    in_channels = len(channels) if isinstance(channels, dict) and channels else None
    return num_classes, names, in_channels


def _detect_nifti(folder: Path) -> DataConfig | None:
    for images_rel, labels_rel in _NIFTI_FOLDERS:
        images = _files(folder / images_rel, "nifti")
        labels = _files(folder / labels_rel, "nifti")
        if not images or not (folder / labels_rel).is_dir():
            continue
        stems = [case_id_of(p) for p in images]
        suffix = "_0000" if any(s.endswith("_0000") for s in stems) else ""
        cfg = DataConfig(
            format="nifti", root=str(folder), images_dir=images_rel, labels_dir=labels_rel, channel_suffix=suffix
        )
        test = _NIFTI_TEST_FOLDERS.get(images_rel)
        if test is not None and _files(folder / test[0], "nifti"):
            cfg.test_images_dir = test[0]
            cfg.test_labels_dir = test[1] if _files(folder / test[1], "nifti") else ""
        cfg.unlabeled_dir = _unlabeled_dir(folder)
        dataset_json = (folder / images_rel).parent / "dataset.json"
        num_classes, names, in_channels = (
            _read_dataset_json(dataset_json) if dataset_json.is_file() else (None, [], None)
        )
        if num_classes is None:
            num_classes = _classes_from(lambda p: read_nifti_label(p)[0], _sample(labels))
        else:
            cfg.class_names = names
        if in_channels is None:
            in_channels = _nifti_channels(images, stems, suffix)
        cfg.num_classes = num_classes
        cfg.in_channels = in_channels
        return cfg
    return None


def _nifti_channels(images: list[Path], stems: list[str], suffix: str) -> int:
    """Channels of a NIfTI dataset: nnU-Net channel files of the first case, or the 4th axis."""
    if suffix:
        first = stems[0][: -len(suffix)] if stems[0].endswith(suffix) else stems[0]
        return max(1, sum(1 for s in stems if re.fullmatch(re.escape(first) + r"_\d{4}", s)))
    for path in images[:_LABEL_SAMPLES]:
        try:
            shape = nifti_shape(path)
        except DataError:
            continue  # reported by the check
        return int(shape[3]) if len(shape) == 4 else 1
    return 1


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(errors="replace").splitlines():
        entry = line.strip()
        if entry:
            ids.append(entry[:-3] if entry.lower().endswith(".h5") else entry)
    return ids


def _pattern_for(folder: Path, ids: list[str]) -> str | None:
    """The first path pattern under which the sampled ids of a list all exist."""
    probe = _sample(ids, 5)
    for pattern in _PATH_PATTERNS:
        if probe and all((folder / pattern.format(case=i)).is_file() for i in probe):
            return pattern
    return None


def _detect_hdf5(folder: Path) -> DataConfig | None:
    lists = {p.name: p for p in folder.glob("*.list") if p.is_file()}
    if not lists:
        return None
    train_names = [n for n in _TRAIN_LISTS if n in lists] + sorted(
        n for n in lists if "train" in n and n not in _TRAIN_LISTS
    )
    if not train_names and len(lists) == 1:
        train_names = list(lists)
    for train_name in train_names:
        train_ids = _read_ids(lists[train_name])
        pattern = _pattern_for(folder, train_ids)
        if pattern is None:
            continue  # e.g. ACDC's train.list names volumes that exist only as slices
        cfg = DataConfig(format="hdf5", root=str(folder), train_list=train_name, path_pattern=pattern)
        all_ids = list(train_ids)
        for option, names in (("val_list", _VAL_LISTS), ("test_list", _TEST_LISTS), ("unlabeled_list", _UNLABELED_LISTS)):
            for name in names:
                if name in lists:
                    ids = _read_ids(lists[name])
                    if _pattern_for(folder, ids) == pattern:
                        setattr(cfg, option, name)
                        all_ids += ids
                        break
        if all(_PATIENT_RX.match(i) for i in all_ids):
            cfg.group_regex = r"^(patient\d+)"
        cfg.unlabeled_dir = _unlabeled_dir(folder)
        paths = [folder / pattern.format(case=i) for i in _sample(train_ids)]
        key = cfg.label_key
        cfg.num_classes = _classes_from(lambda p, key=key: read_hdf5_label(p, key), paths)
        return cfg
    return None


def _mask_rule(images: list[Path], masks: list[Path]) -> tuple[str, str]:
    """``(mask_match, mask_suffix)`` that pairs most images with a mask."""
    image_stems = [case_id_of(p) for p in images]
    mask_stems = {case_id_of(p) for p in masks}
    if sum(s in mask_stems for s in image_stems) * 2 >= len(image_stems):
        return "stem", _DEFAULT_MASK_SUFFIX
    for stem in image_stems[:5]:
        for m in sorted(mask_stems):
            if m.startswith(stem) and len(m) > len(stem):
                suffix = m[len(stem) :]
                if sum(s + suffix in mask_stems for s in image_stems) * 2 >= len(image_stems):
                    return "suffix", suffix
    return "stem", _DEFAULT_MASK_SUFFIX


def _channels_of(images: list[Path]) -> int:
    """Channels of the first readable image (1 when none can be read; the check reports why)."""
    for path in images[:_LABEL_SAMPLES]:
        try:
            return int(read_image2d(path).image.shape[0])
        except DataError:
            continue
    return 1


def _detect_image2d(folder: Path) -> DataConfig | None:
    images = _files(folder / "images", "image2d")
    if not images:
        return None
    for masks_rel in _MASK_FOLDERS:
        masks = _files(folder / masks_rel, "image2d")
        if not masks:
            continue
        match, suffix = _mask_rule(images, masks)
        cfg = DataConfig(
            format="image2d", root=str(folder), images_dir="images", labels_dir=masks_rel, mask_match=match,
            mask_suffix=suffix,
        )
        cfg.in_channels = _channels_of(images)
        cfg.num_classes = _classes_from(lambda p: read_mask2d(p, "auto"), _sample(masks))
        cfg.unlabeled_dir = _unlabeled_dir(folder)
        return cfg
    return None


def detect_layout(folder: str | Path) -> DataConfig:
    """Recognise a dataset folder's layout and return a :class:`DataConfig` for it.

    ``num_classes`` comes from ``dataset.json`` when present, else from the largest label value in
    up to 20 label files (+1). HDF5 cases get ``data.group_regex = ^(patient\\d+)`` when every case id
    starts with ``patientNNN`` (ACDC), so that a patient's slices are never split.

    Raises:
        DataError: not a folder, or no recognised layout (the message lists those looked for).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder")
    for detector in (_detect_nifti, _detect_hdf5, _detect_image2d):
        cfg = detector(folder)
        if cfg is not None:
            return cfg
    raise DataError(folder, f"unrecognised dataset layout; looked for: {LAYOUTS_LOOKED_FOR}")
