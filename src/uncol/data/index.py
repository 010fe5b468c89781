"""Dataset discovery: turn a :class:`DataConfig` into lists of :class:`Case` references.

Nothing is loaded here beyond file headers (to know whether a case is 2D or 3D). Discovery either
stops at the first problem (:func:`discover`, for training) or collects every problem it finds
(:func:`scan`, for ``uncol data check``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uncol.config import DataConfig
from uncol.data.readers.common import case_id_of, format_of
from uncol.data.readers.hdf5 import hdf5_info
from uncol.data.readers.nifti import nifti_spatial_ndim
from uncol.data.types import Case
from uncol.errors import ConfigError, DataError


@dataclass
class Discovered:
    """The cases of a dataset, by role, before splitting.

    Attributes:
        train: the labeled-capable training pool, in list/file order.
        val: predefined validation cases, or ``None`` when the layout defines none.
        test: predefined test cases, or ``None`` when the layout defines none.
        unlabeled: extra unlabeled cases (``label_path`` is ``None``).
    """

    train: list[Case]
    val: list[Case] | None = None
    test: list[Case] | None = None
    unlabeled: list[Case] = field(default_factory=list)

    def roles(self) -> dict[str, list[Case]]:
        """The non-empty roles by name (``train``, ``val``, ``test``, ``unlabeled``)."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        if self.test is not None:
            out["test"] = self.test
        if self.unlabeled:
            out["unlabeled"] = self.unlabeled
        return out


class Problems:
    """Collects dataset problems, or raises the first serious one.

    Args:
        strict: raise :class:`DataError` at the first *fatal* problem (training) instead of
            collecting it (dataset check). Non-fatal problems (e.g. orphan labels) are always collected.
    """

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[str] = []
        #: the same problems as errors (``path`` and ``problem`` apart), for callers that sort them.
        self.errors: list[DataError] = []

    def add(self, path: str | Path | None, problem: str, fatal: bool = True) -> None:
        """Record a problem about ``path`` (raising it when strict and fatal)."""
        error = DataError(path, problem)
        if self.strict and fatal:
            raise error
        self.items.append(str(error))
        self.errors.append(error)


def make_grouper(group_regex: str) -> Callable[[str], str | None]:
    """Function mapping a case id to its group: first regex group, or the id itself without regex.

    Returns ``None`` for ids that do not match the regex.
    """
    if not group_regex:
        return lambda case_id: case_id
    try:
        rx = re.compile(group_regex)
    except re.error as e:
        raise ConfigError(f"data.group_regex: invalid regex {group_regex!r}: {e}") from None
    if rx.groups < 1:
        raise ConfigError(f"data.group_regex: {group_regex!r} needs a capture group, e.g. '^(patient\\d+)'")

    def group(case_id: str) -> str | None:
        m = rx.search(case_id)
        return None if m is None or m.group(1) is None else m.group(1)

    return group


def _match_regex(data_cfg: DataConfig) -> re.Pattern[str]:
    """The compiled ``data.match_regex`` (one capture group: the case id)."""
    try:
        rx = re.compile(data_cfg.match_regex)
    except re.error as e:
        raise ConfigError(f"data.match_regex: invalid regex {data_cfg.match_regex!r}: {e}") from None
    if not data_cfg.match_regex or rx.groups < 1:
        raise ConfigError("data.match_regex: a regex with one capture group is needed for data.mask_match=regex")
    return rx


def utf8_name(path: Path) -> bool:
    """Whether a file name is valid UTF-8.

    Linux file names are bytes; Python hands undecodable ones over with surrogate characters, which
    every later step that writes the case id as text (JSON, CSV, reports) would refuse.
    """
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_NOT_UTF8 = "file name is not valid UTF-8 (the case id is written into JSON, CSV and reports): rename the file"


class _Builder:
    """Shared state of one discovery run: root, options, grouping and problem collection."""

    def __init__(self, data_cfg: DataConfig, problems: Problems) -> None:
        self.cfg = data_cfg
        self.root = Path(data_cfg.root) if data_cfg.root else Path(".")
        self.problems = problems
        self.grouper = make_grouper(data_cfg.group_regex)
        regex_matching = data_cfg.format == "image2d" and data_cfg.mask_match == "regex"
        self.match_rx = _match_regex(data_cfg) if regex_matching else None

    def case(self, case_id: str, image: Path, label: Path | None, fmt: str, ndim: int) -> Case | None:
        group = self.grouper(case_id)
        if group is None:
            self.problems.add(image, f"case id '{case_id}' does not match data.group_regex {self.cfg.group_regex!r}")
            return None
        return Case(case_id=case_id, image_path=image, label_path=label, group=group, fmt=fmt, ndim=ndim)

    def folder(self, rel: str, option: str) -> Path | None:
        path = self.root / rel
        if not path.is_dir():
            self.problems.add(path, f"folder not found (data.{option})")
            return None
        return path

    def listing(self, folder: Path, fmts: tuple[str, ...]) -> list[Path]:
        """Supported files of a folder in name order (hidden files such as ``._x`` skipped).

        A file whose name is not valid UTF-8 is reported and left out.
        """
        out = []
        for p in sorted(folder.iterdir()):
            if not p.is_file() or p.name.startswith(".") or format_of(p) not in fmts:
                continue
            if not utf8_name(p):
                self.problems.add(p, _NOT_UTF8)
                continue
            out.append(p)
        return out

    def files(self, folder: Path, fmts: tuple[str, ...], what: str) -> list[Path]:
        """:meth:`listing`, reporting a folder without any such file."""
        out = self.listing(folder, fmts)
        if not out:
            self.problems.add(folder, f"empty folder: no {what} files")
        return out

    def unique(self, pool: list[Case], where: Path | None) -> list[Case]:
        seen: dict[str, Case] = {}
        out = []
        for c in pool:
            if c.case_id in seen:
                self.problems.add(
                    c.image_path, f"case id '{c.case_id}' also used by {seen[c.case_id].image_path} ({where})"
                )
                continue
            seen[c.case_id] = c
            out.append(c)
        return out

    # -- NIfTI -------------------------------------------------------------------------------

    def nifti_ids(self, files: list[Path], label_stems: set[str]) -> list[tuple[str, Path]]:
        """Case ids of NIfTI image files, stripping nnU-Net channel suffixes.

        ``case_0000`` becomes case ``case`` (its ``case_0001``... files are further channels of it),
        unless a label is named exactly ``case_0000``: then the file name is the case id.
        """
        suffix = self.cfg.channel_suffix
        stems: dict[str, Path] = {}
        for p in files:
            other = stems.setdefault(case_id_of(p), p)
            if other != p:
                self.problems.add(p, f"duplicate of {other.name} (same case id '{case_id_of(p)}')")
        digits = re.fullmatch(r"(.*?)(\d+)", suffix) if suffix else None
        channel_rx = (
            re.compile(rf"(.*){re.escape(digits.group(1))}(\d{{{len(digits.group(2))}}})") if digits else None
        )
        out = []
        for stem, path in stems.items():
            if suffix and stem.endswith(suffix) and len(stem) > len(suffix) and stem not in label_stems:
                out.append((stem[: -len(suffix)], path))
                continue
            if channel_rx is not None and digits is not None and stem not in label_stems:
                m = channel_rx.fullmatch(stem)
                first = m.group(1) + suffix if m else ""
                if m and int(m.group(2)) > int(digits.group(2)) and first in stems and first not in label_stems:
                    continue  # a further channel, stacked when its case is loaded
            out.append((stem, path))
        return out

    def nifti_pool(self, images_rel: str, labels_rel: str, option: str, need_labels: bool) -> list[Case]:
        image_dir = self.folder(images_rel, f"{option}images_dir")
        if image_dir is None:
            return []
        files = self.files(image_dir, ("nifti",), "NIfTI image (.nii/.nii.gz)")
        labels: dict[str, Path] = {}
        if labels_rel:
            label_dir = self.folder(labels_rel, f"{option}labels_dir")
            if label_dir is None:
                return []
            for p in self.listing(label_dir, ("nifti",)):
                other = labels.setdefault(case_id_of(p), p)
                if other != p:
                    self.problems.add(p, f"duplicate of label {other.name} (same case id '{case_id_of(p)}')")
        elif need_labels:
            self.problems.add(self.root, f"data.{option}labels_dir is not set")
            return []
        pool = []
        used: set[str] = set()
        for case_id, path in self.nifti_ids(files, set(labels)):
            label = labels.get(case_id)
            if labels_rel and label is None:
                self.problems.add(path, f"missing label: no '{case_id}.nii.gz' in {self.root / labels_rel}")
                continue
            used.add(case_id)
            try:
                ndim = nifti_spatial_ndim(path)
            except DataError as e:
                self.problems.add(e.path, e.problem)
                continue
            case = self.case(case_id, path, label, "nifti", ndim)
            if case is not None:
                pool.append(case)
        for stem, path in labels.items():
            if stem not in used:
                self.problems.add(path, "orphan label: no image with this case id", fatal=False)
        return self.unique(pool, image_dir)

    # -- 2D image files ----------------------------------------------------------------------

    def mask_key(self, path: Path, image: bool) -> str | None:
        """The matching key of an image or mask file name, or ``None`` when it has none."""
        cfg = self.cfg
        stem = case_id_of(path)
        if cfg.mask_match == "stem":
            return stem
        if cfg.mask_match == "suffix":
            if image:
                return stem
            return stem[: -len(cfg.mask_suffix)] if cfg.mask_suffix and stem.endswith(cfg.mask_suffix) else None
        m = self.match_rx.search(path.name) if self.match_rx is not None else None
        return None if m is None else m.group(1)

    def image2d_pool(self, images_rel: str, labels_rel: str, option: str, need_labels: bool) -> list[Case]:
        cfg = self.cfg
        image_dir = self.folder(images_rel, f"{option}images_dir")
        if image_dir is None:
            return []
        files = self.files(image_dir, ("image2d",), "2D image (PNG/JPEG/TIFF/GIF/BMP)")
        masks: dict[str, list[Path]] = {}
        mask_dir = None
        if labels_rel:
            mask_dir = self.folder(labels_rel, f"{option}labels_dir")
            if mask_dir is None:
                return []
            for p in self.listing(mask_dir, ("image2d",)):
                key = self.mask_key(p, image=False)
                if key is None:
                    if mask_dir != image_dir:
                        self.problems.add(p, "mask file name does not match the mask naming rule", fatal=False)
                    continue
                masks.setdefault(key, []).append(p)
        elif need_labels:
            self.problems.add(self.root, f"data.{option}labels_dir is not set")
            return []
        if mask_dir == image_dir:
            # Images and masks in one folder: the files that are masks are not images.
            mask_files = {p for ps in masks.values() for p in ps}
            files = [p for p in files if p not in mask_files]
        pool = []
        used: set[str] = set()
        for path in files:
            key = self.mask_key(path, image=True)
            if key is None:
                self.problems.add(path, f"image file name does not match data.match_regex {cfg.match_regex!r}")
                continue
            label = None
            if labels_rel:
                found = masks.get(key, [])
                if not found:
                    self.problems.add(path, f"missing mask: no mask for case '{key}' in {mask_dir}")
                    continue
                if len(found) > 1:
                    names = ", ".join(p.name for p in found)
                    self.problems.add(path, f"ambiguous mask: several masks match case '{key}' ({names})")
                    continue
                label = found[0]
                used.add(key)
            case = self.case(key, path, label, "image2d", 2)
            if case is not None:
                pool.append(case)
        for key, paths in masks.items():
            if key not in used:
                for p in paths:
                    self.problems.add(p, "orphan mask: no image matches it", fatal=False)
        return self.unique(pool, image_dir)

    # -- HDF5 lists --------------------------------------------------------------------------

    def read_list(self, rel: str, option: str) -> tuple[Path, list[str]]:
        path = self.root / rel
        if not path.is_file():
            self.problems.add(path, f"list file not found (data.{option})")
            return path, []
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            self.problems.add(path, f"unreadable list file ({e})")
            return path, []
        ids = []
        seen: set[str] = set()
        for line in text.splitlines():
            entry = line.strip()
            if not entry:
                continue
            if entry.lower().endswith(".h5"):
                entry = entry[:-3]
            if entry in seen:
                self.problems.add(path, f"case '{entry}' is listed twice")
                continue
            seen.add(entry)
            ids.append(entry)
        if not ids:
            self.problems.add(path, "empty list: no case ids")
        return path, ids

    def hdf5_pool(self, rel: str, option: str, need_labels: bool) -> list[Case]:
        cfg = self.cfg
        list_path, ids = self.read_list(rel, option)
        pool = []
        for case_id in ids:
            try:
                path = self.root / cfg.path_pattern.format(case=case_id)
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"data.path_pattern: {cfg.path_pattern!r} must use only '{{case}}' ({e})") from None
            if not path.is_file():
                self.problems.add(path, f"file of case '{case_id}' not found (listed in {list_path.name})")
                continue
            try:
                shape, has_label = hdf5_info(path, cfg.image_key, cfg.label_key)
            except DataError as e:
                self.problems.add(e.path, e.problem)
                continue
            if need_labels and not has_label:
                self.problems.add(
                    path, f"no label dataset '{cfg.label_key}' (listed in {list_path.name}, whose cases need labels)"
                )
                continue
            ndim = 2 if len(shape) == 2 else 3
            case = self.case(case_id, path, path if need_labels else None, "hdf5", ndim)
            if case is not None:
                pool.append(case)
        return pool

    # -- unlabeled folder --------------------------------------------------------------------

    def unlabeled_folder(self, rel: str) -> list[Case]:
        folder = self.folder(rel, "unlabeled_dir")
        if folder is None:
            return []
        files = self.files(folder, ("nifti", "hdf5", "image2d"), "supported image")
        nifti_files = [p for p in files if format_of(p) == "nifti"]
        nifti_ids = {p: cid for cid, p in self.nifti_ids(nifti_files, set())}
        pool = []
        for path in files:
            fmt = format_of(path)
            try:
                if fmt == "nifti":
                    if path not in nifti_ids:
                        continue  # a further channel of a multi-channel case
                    case_id, ndim = nifti_ids[path], nifti_spatial_ndim(path)
                elif fmt == "hdf5":
                    shape, _ = hdf5_info(path, self.cfg.image_key, self.cfg.label_key)
                    case_id, ndim = case_id_of(path), (2 if len(shape) == 2 else 3)
                else:
                    case_id, ndim = case_id_of(path), 2
            except DataError as e:
                self.problems.add(e.path, e.problem)
                continue
            case = self.case(case_id, path, None, str(fmt), ndim)
            if case is not None:
                pool.append(case)
        return self.unique(pool, folder)


def scan(data_cfg: DataConfig, problems: Problems) -> Discovered:
    """Discover the cases of a dataset, reporting problems to ``problems``.

    Args:
        data_cfg: dataset options.
        problems: collector; a strict one raises at the first fatal problem.

    Returns:
        The cases by role (cases with problems are left out).
    """
    b = _Builder(data_cfg, problems)
    if not b.root.is_dir():
        problems.add(b.root, "dataset root folder not found (data.root)")
        return Discovered(train=[])
    val: list[Case] | None = None
    test: list[Case] | None = None
    if data_cfg.format == "hdf5":
        if not data_cfg.train_list:
            problems.add(b.root, "data.train_list is not set (the hdf5 format reads cases from list files)")
            return Discovered(train=[])
        train = b.hdf5_pool(data_cfg.train_list, "train_list", need_labels=True)
        if data_cfg.val_list:
            val = b.hdf5_pool(data_cfg.val_list, "val_list", need_labels=True)
        if data_cfg.test_list:
            test = b.hdf5_pool(data_cfg.test_list, "test_list", need_labels=True)
    else:
        pool = b.nifti_pool if data_cfg.format == "nifti" else b.image2d_pool
        train = pool(data_cfg.images_dir, data_cfg.labels_dir, "", need_labels=True)
        if data_cfg.test_images_dir:
            test = pool(data_cfg.test_images_dir, data_cfg.test_labels_dir, "test_", need_labels=False)
    unlabeled: list[Case] = []
    if data_cfg.unlabeled_dir:
        unlabeled += b.unlabeled_folder(data_cfg.unlabeled_dir)
    if data_cfg.unlabeled_list:
        if data_cfg.format != "hdf5":
            raise ConfigError("data.unlabeled_list: only used by format hdf5; use data.unlabeled_dir instead")
        unlabeled += b.hdf5_pool(data_cfg.unlabeled_list, "unlabeled_list", need_labels=False)
    return Discovered(train=train, val=val, test=test, unlabeled=unlabeled)


def discover(data_cfg: DataConfig) -> Discovered:
    """Discover the cases of a dataset, raising at the first problem.

    Raises:
        DataError: missing/empty folder or list, image without label, case id not matching
            ``data.group_regex``, unreadable header, missing HDF5 label dataset... naming the file.
        ConfigError: invalid regex or path pattern.
    """
    return scan(data_cfg, Problems(strict=True))
