"""Stage-2 box prompts with the paper's jitter (UnCoL, Lu et al., arXiv:2512.13101, Sec. 4.1).

"For 2D inputs, bounding-box prompts are created by shifting ground-truth annotations or pseudo-label
masks by 20 pixels." Stage 1 already jitters its ground-truth boxes (one seeded draw per sample, so that
the semantic target stays a constant of the sample: :mod:`uncol.methods.uncol.targets`). Here the boxes
that stage 2 draws from the EMA teacher's pseudo-labels get the same jitter, ``teacher.box_jitter_px``
given at 1024 px and scaled to the teacher's canvas, drawn anew at every step from the step's seeded
generator, so a run is reproducible and the foundation teacher sees the loose boxes it was trained on.

:meth:`TeacherTargets._decode_prompted` builds its box prompts through :meth:`TeacherTargets.box_prompts`;
this subclass jitters them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uncol.methods.uncol.targets import TeacherTargets
from uncol.teachers.prompts import Prompts, boxes_from_pseudo_label, jitter_in_pixels


class JitteredPromptTargets(TeacherTargets):
    """:class:`TeacherTargets` whose box prompts from class probabilities are jittered.

    Jittered are the stage-2 prompts from pseudo-labels (:meth:`pseudo_label_probabilities`) and, since
    it prompts the same way from the ground truth, the class-wise reliability measurement
    (:meth:`class_reliability`). Point prompts (``teacher.prompt=point``) are unchanged.

    Args:
        *args: as :class:`TeacherTargets`.
        box_jitter_px: largest outward shift of each box side, in pixels at 1024 px (the paper's 20;
            ``teacher.box_jitter_px``); 0: tight boxes, exactly as :class:`TeacherTargets`.
        **kwargs: as :class:`TeacherTargets`.
    """

    def __init__(self, *args: Any, box_jitter_px: float = 0.0, **kwargs: Any) -> None:
        if box_jitter_px < 0:
            raise ValueError(f"box_jitter_px must be >= 0, got {box_jitter_px}")
        self.box_jitter_px = float(box_jitter_px)
        super().__init__(*args, **kwargs)

    def box_prompts(self, probs: np.ndarray, rng: np.random.Generator) -> Prompts:
        """Jittered boxes, one per class present in the argmax of ``probs`` ``(K, H, W)`` of one slice."""
        if self.box_jitter_px <= 0:
            return super().box_prompts(probs, rng)
        spec = self.teacher.spec
        jitter = jitter_in_pixels(self.box_jitter_px, spec.size, probs.shape[1:], spec.keep_aspect)
        return boxes_from_pseudo_label(probs, self.num_classes, jitter, rng, self.cfg.teacher.min_pixels)
