"""How far the frozen foundation teacher disagrees with the trained model on an unlabeled scan.

The teacher is prompted the way UnCoL's second stage prompts it from pseudo-labels: one box per class
around the model's predicted class on each 2D image or slice (:func:`~uncol.teachers.prompts.boxes_from_pseudo_label`,
classes with fewer than ``teacher.min_pixels`` pixels get no box), along ``teacher.slice_axis`` in
volumes. Its masks are compared with the model's over the whole scan: the disagreement is ``1 -``
the mean Dice over the prompted classes. A scan where the model predicts no class anywhere gives the
teacher nothing to segment, so it has no disagreement (``None``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from uncol.config import Config
from uncol.data.training import prepare_case
from uncol.data.types import CaseData
from uncol.metrics import compute_dice
from uncol.teachers.base import FeatureSource, FoundationTeacher, logits_to_label
from uncol.teachers.prompts import Prompts, boxes_from_pseudo_label
from uncol.teachers.zero_shot import resolve_slice_axis

__all__ = ["TeacherDisagreement", "mask_disagreement"]


def mask_disagreement(model: np.ndarray, teacher: np.ndarray, classes: np.ndarray) -> float:
    """``1 -`` the mean Dice of ``classes`` between two class maps of the same shape."""
    return 1.0 - float(np.mean([compute_dice(model == c, teacher == c) for c in classes]))


class TeacherDisagreement:
    """Disagreement of a foundation teacher with a model's predictions.

    Args:
        cfg: the run's configuration (intensity normalisation, ``teacher.*`` options, classes).
        teacher: the frozen teacher.
        cache: its feature cache, or ``None`` to run the encoder every time.
    """

    def __init__(self, cfg: Config, teacher: FoundationTeacher, cache: FeatureSource | None = None) -> None:
        self.cfg = cfg
        self.teacher = teacher
        self.cache = cache

    def _prompts(self, probs: np.ndarray) -> Prompts:
        return boxes_from_pseudo_label(probs, self.cfg.data.num_classes, 0.0, None, self.cfg.teacher.min_pixels)

    def __call__(self, data: CaseData, probs: np.ndarray) -> float | None:
        """The disagreement on one scan.

        Args:
            data: the scan as read (raw intensities; normalised here as in training).
            probs: the model's class probabilities ``(K, *spatial)`` of the scan.

        Returns:
            ``1 -`` mean Dice over the prompted classes, or ``None`` when no class was prompted.
        """
        # The teacher sees the image normalised as in training and zero-shot evaluation (and as cached).
        prepared = prepare_case(dataclasses.replace(data, image=data.image.copy(), label=None), self.cfg)
        if probs.ndim == 3:
            prompts = self._prompts(probs)
            prompted = prompts.present
            if not prompted.any():
                return None
            logits = self.teacher.predict(prepared.image, prompts, self.cache).logits.numpy()
        else:
            axis = resolve_slice_axis(self.cfg.teacher.slice_axis, prepared)
            per_slice = [self._prompts(np.take(probs, s, axis=axis + 1)) for s in range(probs.shape[axis + 1])]
            prompted = np.any([p.present for p in per_slice], axis=0)
            if not prompted.any():
                return None
            logits = self.teacher.predict_volume(prepared.image, axis, per_slice, self.cache)
        return mask_disagreement(probs.argmax(axis=0), logits_to_label(logits), np.flatnonzero(prompted) + 1)
