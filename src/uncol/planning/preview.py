"""The split a configuration will make, and the one-time cost of UnCoL's foundation teacher.

The split is computed by the training code itself (:func:`uncol.data.index.discover` and
:func:`uncol.data.splits.make_splits`), from file listings and headers only, so the preview is the
split training will save to ``splits.json``.

The teacher cost counts the 2D images LiteMedSAM's encoder must see once (its features are then
cached): every labeled training image before training, and the unlabeled ones either before
training too or, with ``method.uncol.lazy_unlabeled_targets``, when stage 2 first draws them. One
encoder pass takes about 2-4 s per image on a CPU (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uncol.config import Config, DataConfig
from uncol.data.index import discover
from uncol.data.readers.hdf5 import HDF5_SLICE_AXIS, hdf5_info
from uncol.data.readers.nifti import NIFTI_SLICE_AXIS, nifti_shape
from uncol.data.splits import Splits, make_splits
from uncol.data.types import Case
from uncol.methods.base import phase_totals
from uncol.methods.uncol.method import UnCoLMethod, stage1_steps
from uncol.teachers.slicing import teacher_slice_axis, teacher_slice_indices

#: Seconds per image of LiteMedSAM's encoder on one CPU core: the range measured in benchmarks/RESULTS.md.
SECONDS_PER_IMAGE = (2.0, 4.0)
ROLE_ORDER = ("labeled", "unlabeled", "val", "test")


@dataclass
class TeacherCost:
    """Images the foundation teacher encodes once for a run, and what that costs.

    Attributes:
        labeled_images: 2D images of the labeled training cases (encoded before training).
        unlabeled_images: 2D images of the unlabeled cases.
        stage2_draws: unlabeled images drawn in stage 2 (steps x the unlabeled images a step pairs).
        lazy_expected: distinct unlabeled images stage 2 is expected to draw (what the lazy option encodes).
        lazy: whether ``method.uncol.lazy_unlabeled_targets`` is already on.
        cache_dir: where the features are cached.
    """

    labeled_images: int
    unlabeled_images: int
    stage2_draws: int
    lazy_expected: int
    lazy: bool
    cache_dir: str

    @staticmethod
    def _span(images: int) -> str:
        lo, hi = (images * s for s in SECONDS_PER_IMAGE)
        if hi < 120:
            return f"{lo:.0f}-{hi:.0f} s"
        if hi < 2 * 3600:
            return f"{lo / 60:.0f}-{hi / 60:.0f} min"
        return f"{lo / 3600:.1f}-{hi / 3600:.1f} h"

    def to_text(self, config_name: str = "CONFIG") -> list[str]:
        """Lines of the preview."""
        eager = self.labeled_images + self.unlabeled_images
        per = f"{SECONDS_PER_IMAGE[0]:.0f}-{SECONDS_PER_IMAGE[1]:.0f} s"
        lines = [f"Foundation teacher (LiteMedSAM), once per image, cached in {self.cache_dir}:"]
        if not self.lazy:
            lines.append(
                f"  {self.labeled_images} labeled + {self.unlabeled_images} unlabeled = {eager} images x {per} on a CPU: "
                f"about {self._span(eager)} before training starts"
            )
        lazy_before = self._span(self.labeled_images)
        lines.append(
            f"  {'lazy (on): ' if self.lazy else 'cheaper: method.uncol.lazy_unlabeled_targets=true encodes '}"
            f"the labeled images first ({self.labeled_images}: {lazy_before}), the unlabeled ones when stage 2 first draws "
            f"them: about {self.lazy_expected} of {self.unlabeled_images} in {self.stage2_draws} draws "
            f"({self._span(self.lazy_expected)} during training)"
        )
        lines.append(f"  or fill the cache beforehand, e.g. in parallel: uncol teacher cache {config_name} --split train --embeddings")
        return lines


@dataclass
class SplitPreview:
    """The split a configuration makes, by role, and the teacher's cost.

    Attributes:
        method: the training method.
        counts: role (labeled, unlabeled, val, test) -> ``cases`` and ``groups``.
        sources: ``val_source`` / ``test_source``: ``predefined``, ``random`` or ``none``.
        uses_unlabeled: whether the method trains on the unlabeled cases.
        teacher: the foundation teacher's cost (UnCoL with a teacher), else None.
    """

    method: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    uses_unlabeled: bool = False
    teacher: TeacherCost | None = None

    @property
    def total_cases(self) -> int:
        """Cases over all roles."""
        return sum(c["cases"] for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out: dict[str, Any] = {"method": self.method, "counts": self.counts, "sources": self.sources,
                               "uses_unlabeled": self.uses_unlabeled}
        if self.teacher is not None:
            out["teacher"] = dict(self.teacher.__dict__)
        return out

    def to_text(self, config_name: str = "CONFIG") -> str:
        """The preview as printed by ``uncol init`` and ``uncol data check CONFIG``."""
        lines = ["Split (cases / groups per role, as training will save it to splits.json):"]
        for role in ROLE_ORDER:
            c = self.counts[role]
            if role == "unlabeled":
                use = f"used by {self.method}" if self.uses_unlabeled else f"not used by {self.method}"
                extra = f" ({use})" if c["cases"] else ""
            elif role in ("val", "test"):
                extra = {"predefined": " (predefined)", "random": " (seeded random draw)", "none": " (none)"}[
                    self.sources.get(f"{role}_source", "none")]
            else:
                extra = ""
            lines.append(f"  {role:<10} {c['cases']:>7} cases {c['groups']:>6} groups{extra}")
        if self.teacher is not None:
            lines += [""] + self.teacher.to_text(config_name)
        return "\n".join(lines)


def _volume_shape(case: Case, data: DataConfig) -> tuple[int, ...]:
    """Spatial shape of a 3D case from its header."""
    if case.fmt == "hdf5":
        return hdf5_info(case.image_path, data.image_key, data.label_key)[0][:3]
    return nifti_shape(case.image_path)[:3]


def _images_2d(cases: list[Case], cfg: Config) -> int:
    """2D images the teacher sees of these cases when a 2D network trains on them: one per slice."""
    data = cfg.data
    total = 0
    for case in cases:
        if case.ndim == 2:
            total += 1
            continue
        default = HDF5_SLICE_AXIS if case.fmt == "hdf5" else NIFTI_SLICE_AXIS
        axis = data.slice_axis if data.slice_axis >= 0 else default
        total += _volume_shape(case, data)[axis]
    return total


def _images_3d(cases: list[Case], cfg: Config) -> int:
    """2D images the teacher sees of 3D training volumes: every ``teacher.slice_stride``-th slice.

    UnCoL 3D pads every volume to ``train.patch_size``, so the slices are counted on that shape.
    """
    patch = tuple(cfg.train.patch_size)
    per_volume = 0
    for case in cases[:1]:
        default = HDF5_SLICE_AXIS if case.fmt == "hdf5" else NIFTI_SLICE_AXIS
        axis = teacher_slice_axis(cfg.teacher.slice_axis, patch, cfg.data.slice_axis if cfg.data.slice_axis >= 0 else default)
        per_volume = len(teacher_slice_indices(patch[axis], cfg.teacher.slice_stride))
    return per_volume * len(cases)


def teacher_cost(cfg: Config, splits: Splits) -> TeacherCost | None:
    """The foundation teacher's one-time cost for an UnCoL configuration (None for other methods or without teacher)."""
    if cfg.method.name != "uncol" or cfg.teacher.name == "none":
        return None
    m = cfg.method.options
    count = _images_2d if cfg.spatial_dims == 2 else _images_3d
    labeled = count(splits.labeled, cfg) if m.distill != "none" else 0
    it = cfg.train.iterations
    stage2_needs_teacher = (m.distill in ("both", "visual") and m.stage2_visual) or m.pseudo_labels in (
        "uncertainty", "average", "generalized")
    has_stage2 = stage1_steps(cfg) < it
    unlabeled = count(splits.unlabeled, cfg) if has_stage2 and stage2_needs_teacher and splits.unlabeled else 0
    # The unlabeled images stage 2 draws, from the batch UnCoL reads per stage.
    draws = phase_totals(UnCoLMethod.batch_phases(cfg), it)["unlabeled"] if unlabeled else 0
    # Stage 2 draws training samples: 2D images (slices) in 2D, whole volumes in 3D.
    samples = unlabeled if cfg.spatial_dims == 2 else len(splits.unlabeled)
    per_sample = unlabeled / samples if samples else 0.0
    # Distinct samples among `draws` uniform draws with replacement: n (1 - (1 - 1/n)^draws).
    distinct = samples * (1 - (1 - 1 / samples) ** draws) if samples and draws else 0.0
    cache = cfg.teacher.cache_dir or str(Path(cfg.output_dir) / "teacher_cache")
    return TeacherCost(
        labeled_images=labeled,
        unlabeled_images=unlabeled,
        stage2_draws=draws,
        lazy_expected=int(math.ceil(distinct * per_sample - 1e-9)),
        lazy=m.lazy_unlabeled_targets,
        cache_dir=cache,
    )


def split_preview(cfg: Config) -> SplitPreview:
    """The split ``cfg`` will make and, for UnCoL, the teacher's one-time cost.

    Raises:
        DataError: the dataset cannot be split as configured (too few groups, unknown files, ...).
    """
    splits = make_splits(discover(cfg.data), cfg.split)
    return SplitPreview(
        method=cfg.method.name,
        counts=splits.summary(),
        sources={k: str(splits.config.get(k, "none")) for k in ("val_source", "test_source")},
        uses_unlabeled=cfg.method.name != "supervised",
        teacher=teacher_cost(cfg, splits),
    )
