"""Per-sample teacher targets for training: what a method asks the frozen foundation teacher.

A training method draws augmented views of in-memory samples (:class:`uncol.data.training.SampleSet`).
The teacher is expensive, so everything that does not depend on the training state is computed once
per sample, on the un-augmented sample, and mapped onto each drawn view by the view's flips,
90-degree rotations and free in-plane rotation (:func:`apply_view`; the free rotation resamples the
maps bilinearly, see :mod:`uncol.data.rotation` and benchmarks/rotated_features.py for its error
against re-encoding the rotated image):

* visual targets: encoder features at the configured layers (from the on-disk feature cache);
* semantic targets of labeled samples: the prompt-fused features for boxes from the ground truth
  (one fixed, seeded box jitter per sample), averaged over the prompted classes;
* probabilities for pseudo-label prompts (stage 2): *not* precomputable, since the prompts come from
  the current pseudo-labels; the cached image embedding spares the encoder, only the decoder runs.

2D samples are single images. 3D samples are volumes that the 2D teacher sees slice by slice along
``teacher.slice_axis``; per-slice maps are stacked into a volume. Every target is finally pooled
(adaptive average) onto the student's token grid, so the student and teacher grids are matched
explicitly whatever ``teacher.token_grid`` is: see docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from uncol.config import Config
from uncol.data.rotation import rotate_maps
from uncol.data.training import SampleSet
from uncol.teachers.base import FoundationTeacher, class_probabilities
from uncol.teachers.cache import FeatureCache, transform_view
from uncol.teachers.prompts import (
    Prompts,
    boxes_from_mask,
    boxes_from_pseudo_label,
    jitter_in_pixels,
    points_from_uncertainty,
)
from uncol.teachers.slicing import sample_axis, sample_slices, teacher_slice_indices

#: A drawn view's ``(flips, rot90[, angle[, crop]])``, as :meth:`SampleSet.draw` returns it; ``crop`` is
#: ``(start, patch size, sample size)`` in voxels when the view was cropped from a larger sample.
Geometry = tuple[Any, ...]

#: Fill of rotated feature maps where the view reaches outside the sample: the nearest edge token
#: (a background-like feature, as the rotated image is filled with its minimum) rather than zeros.
FEATURE_FILL: float | None = None


def view_angle(geometry: Geometry) -> float:
    """The free in-plane rotation (degrees) of a view; 0 for the two-element geometry of old callers."""
    return float(geometry[2]) if len(geometry) > 2 else 0.0  # type: ignore[misc]


def view_crop(geometry: Geometry) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """A view's crop ``(start, patch size, sample size)`` in voxels, or ``None`` for a whole-sample view."""
    return geometry[3] if len(geometry) > 3 and geometry[3] is not None else None  # type: ignore[misc]


def _crop_window(crop: tuple[Sequence[int], Sequence[int], Sequence[int]], spatial: Sequence[int]) -> tuple[slice, ...]:
    """The crop in the resolution of maps of the whole sample with ``spatial`` size (e.g. a token grid)."""
    start, size, full = crop
    window = []
    for a, n, f, s in zip(start, size, full, spatial, strict=True):
        lo, hi = a * s / f, (a + n) * s / f
        if not (float(lo).is_integer() and float(hi).is_integer()):
            raise ValueError(
                f"a crop of {list(size)} at {list(start)} from a sample of {list(full)} does not fall on the grid of "
                f"maps of size {list(spatial)} (crop origins must be multiples of the sample/map size ratio)"
            )
        window.append(slice(int(lo), int(hi)))
    return tuple(window)


def apply_view(
    x: torch.Tensor, geometry: Geometry, inverse: bool = False, fill: float | None = 0.0
) -> torch.Tensor:
    """Mirror (or undo) a drawn view's crop, flips, quarter turns and free rotation on maps ``(..., *spatial)``.

    The order of :meth:`uncol.data.training.SampleSet.draw`: the crop (exact, at the maps' own resolution:
    maps of the whole sample on a coarser grid, such as token grids, are cropped at the corresponding
    cells), then as :func:`uncol.data.transforms.apply_augment`: flips, quarter turns
    (:func:`uncol.teachers.cache.transform_view`, exact), and the free rotation in the plane of the last
    two axes (:func:`uncol.data.rotation.rotate_maps`, bilinear); the inverse undoes them in reverse and
    puts the crop back into maps of the whole sample at the patch's resolution, ``fill`` outside it.

    Args:
        x: maps ``(..., *spatial)``, 2D or 3D, float or bool.
        geometry: the view's ``(flips, rot90[, angle[, crop]])``.
        inverse: map from the view back to the sample.
        fill: value where a free rotation reaches outside the source, and outside the crop of an inverse
            (``None``: nearest edge value; 0 outside the crop).
    """
    flips, rot90 = geometry[0], int(geometry[1])
    angle = view_angle(geometry)
    crop = view_crop(geometry)
    nd = len(flips)
    if inverse:
        out = transform_view(rotate_maps(x, -angle, fill), flips, rot90, inverse=True)
        if crop is None:
            return out
        start, size, full = crop
        scale = [s / n for s, n in zip(out.shape[-nd:], size, strict=True)]
        whole = [round(f * k) for f, k in zip(full, scale, strict=True)]
        canvas = torch.full((*out.shape[:-nd], *whole), 0.0 if fill is None else fill, dtype=out.dtype, device=out.device)
        canvas[(..., *_crop_window(crop, whole))] = out
        return canvas
    if crop is not None:
        x = x[(..., *_crop_window(crop, x.shape[-nd:]))]
    return rotate_maps(transform_view(x, flips, rot90), angle, fill)


def _stack_slices(maps: list[torch.Tensor], axis: int) -> torch.Tensor:
    """Per-slice maps ``(C, g, g)`` along ``axis`` -> a volume ``(C, D0, D1, D2')`` in the sample's axis order."""
    vol = torch.stack(maps, dim=1)  # (C, n, g, g): slice axis first
    # Position of each sample axis in vol: sample axis `axis` is vol dim 1, the others keep their order.
    perm = [0]
    others = iter([2, 3])
    for a in range(3):
        perm.append(1 if a == axis else next(others))
    return vol.permute(*perm).contiguous()


def to_grid(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Adaptive average pooling (or nearest upsampling, where a side is smaller) of ``(N, C, *s)`` to ``grid``."""
    grid = tuple(int(g) for g in grid)
    if tuple(x.shape[2:]) == grid:
        return x
    if all(s >= g for s, g in zip(x.shape[2:], grid, strict=True)):
        return F.adaptive_avg_pool2d(x, grid) if len(grid) == 2 else F.adaptive_avg_pool3d(x, grid)
    return F.interpolate(x, size=grid, mode="nearest")


@dataclass
class TargetStats:
    """Counts of what :class:`TeacherTargets` computed (for the training log)."""

    samples: int = 0
    semantic_prompts: int = 0
    decoded_slices: int = 0


class TeacherTargets:
    """Teacher targets of the samples of one training stream, on the student's token grid.

    Args:
        teacher: the frozen foundation teacher.
        cache: its feature cache (the encoder only runs for images not cached yet).
        samples: the stream's samples.
        cfg: run configuration (``teacher.*`` options, number of classes).
        grid: the student's token grid.
        semantic: also compute semantic targets (needs labels).
        embeddings: make sure the image embeddings are cached too (needed to prompt the teacher
            later, :meth:`pseudo_label_probabilities`).
        lazy: compute each sample's visual targets when it is first drawn instead of all up front
            (large unlabeled pools: training starts at once, and a cache being filled by
            ``uncol teacher cache`` in parallel is used as it grows). Not with ``semantic``.
        progress: optional callback ``(done, total)`` while precomputing.
    """

    def __init__(
        self,
        teacher: FoundationTeacher,
        cache: FeatureCache,
        samples: SampleSet,
        cfg: Config,
        grid: Sequence[int],
        semantic: bool = False,
        embeddings: bool = False,
        lazy: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if lazy and semantic:
            raise ValueError("semantic targets are computed up front (lazy=False)")
        self.teacher = teacher
        self.cache = cache
        self.samples = samples.samples
        self.cfg = cfg
        self.grid = tuple(int(g) for g in grid)
        self.num_classes = cfg.data.num_classes
        self.spatial_dims = len(self.grid)
        self.layers = teacher.visual_layers
        self.stats = TargetStats()
        self.axes = [sample_axis(s, cfg.teacher.slice_axis) for s in self.samples]
        self.stride = cfg.teacher.slice_stride
        self.visual: dict[str, torch.Tensor] = {}
        self.semantic: torch.Tensor | None = None
        self.semantic_valid: torch.Tensor | None = None
        self.embeddings = embeddings
        self.lazy = lazy
        self._lazy_visual: dict[int, dict[str, torch.Tensor]] = {}
        if not lazy:
            self._precompute(semantic, embeddings, progress)

    # ---- precomputation -----------------------------------------------------------------------

    def _volume(self, maps: list[torch.Tensor], axis: int) -> torch.Tensor:
        if self.spatial_dims == 2:
            return maps[0]
        return _stack_slices(maps, axis)

    def _precompute(self, semantic: bool, embeddings: bool, progress: Callable[[int, int], None] | None) -> None:
        visual: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        sem: list[torch.Tensor] = []
        sem_valid: list[torch.Tensor] = []
        jitter_ref = self.cfg.teacher.box_jitter_px
        for i, sample in enumerate(self.samples):
            axis = self.axes[i]
            slices = sample_slices(sample, axis, self.stride)
            encoded = self.cache.encode(slices, embeddings=semantic or embeddings)
            for n, v in self._visual_of(encoded, axis).items():
                visual[n].append(v)
            if semantic:
                if sample.label is None:
                    raise ValueError(f"{sample.source}: semantic targets need a label")
                labels = self._label_slices(sample.label, axis)
                # One fixed, seeded jitter per sample: the target stays a constant of the sample.
                rng = np.random.default_rng([self.cfg.train.seed, i, 7])
                fused_maps, valid_maps = [], []
                for enc, lab in zip(encoded, labels, strict=True):
                    jitter = jitter_in_pixels(jitter_ref, self.teacher.spec.size, lab.shape, self.teacher.spec.keep_aspect)
                    prompts = boxes_from_mask(lab, self.num_classes, jitter, rng)
                    g = self.teacher.token_grid
                    if prompts.present.any():
                        _, fused = self.teacher.decode(enc, prompts)
                        fused_maps.append(fused[torch.from_numpy(prompts.present)].mean(dim=0))
                        valid_maps.append(torch.ones(1, g, g))
                        self.stats.semantic_prompts += int(prompts.present.sum())
                    else:
                        c = enc.embedding.shape[0] if enc.embedding is not None else 0
                        fused_maps.append(torch.zeros(c, g, g))
                        valid_maps.append(torch.zeros(1, g, g))
                sem.append(to_grid(self._volume(fused_maps, axis)[None], self.grid)[0].half())
                sem_valid.append(to_grid(self._volume(valid_maps, axis)[None], self.grid)[0, 0] > 0.5)
            self.stats.samples += 1
            if progress is not None:
                progress(i + 1, len(self.samples))
        self.visual = {n: torch.stack(v) for n, v in visual.items()} if self.samples else {}
        if semantic and self.samples:
            self.semantic = torch.stack(sem)
            self.semantic_valid = torch.stack(sem_valid)

    def _label_slices(self, label: np.ndarray, axis: int) -> list[np.ndarray]:
        """The label slices matching :func:`sample_slices` (a 2D label: itself)."""
        if label.ndim == 2:
            return [label]
        return [np.take(label, s, axis=axis) for s in teacher_slice_indices(label.shape[axis], self.stride)]

    def _visual_of(self, encoded: Sequence[Any], axis: int) -> dict[str, torch.Tensor]:
        """One sample's visual targets on the student grid (float16) from its slices' encoder outputs."""
        out = {}
        for n in self.layers:
            vol = self._volume([e.features[n].float() for e in encoded], axis)
            out[n] = to_grid(vol[None], self.grid)[0].half()
        return out

    def _sample_visual(self, i: int) -> dict[str, torch.Tensor]:
        if not self.lazy:
            return {n: v[i] for n, v in self.visual.items()}
        found = self._lazy_visual.get(i)
        if found is None:
            slices = sample_slices(self.samples[i], self.axes[i], self.stride)
            found = self._visual_of(self.cache.encode(slices, embeddings=self.embeddings), self.axes[i])
            self._lazy_visual[i] = found
        return found

    # ---- lookups --------------------------------------------------------------------------------

    @property
    def visual_channels(self) -> dict[str, int]:
        """Channels of each visual layer's targets."""
        if not self.samples:
            return {}
        return {n: int(v.shape[0]) for n, v in self._sample_visual(0).items()}

    @property
    def semantic_channels(self) -> int:
        """Channels of the semantic targets (0 when not computed)."""
        return 0 if self.semantic is None else int(self.semantic.shape[1])

    def visual_targets(self, ids: Sequence[int], views: Sequence[Geometry], device: torch.device) -> dict[str, torch.Tensor]:
        """Visual targets of drawn views: layer -> ``(B, C, *grid)`` float32."""
        per_sample = [self._sample_visual(i) for i in ids]
        return {
            n: torch.stack([apply_view(v[n].float(), g, fill=FEATURE_FILL) for v, g in zip(per_sample, views, strict=True)])
            .to(device)
            for n in self.layers
        }

    def semantic_targets(
        self, ids: Sequence[int], views: Sequence[Geometry], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Semantic targets ``(B, C, *grid)`` and their validity ``(B, *grid)`` (False where no class was prompted)."""
        if self.semantic is None or self.semantic_valid is None:
            raise RuntimeError("semantic targets were not computed (semantic=False)")
        sem = torch.stack(
            [apply_view(self.semantic[i].float(), g, fill=FEATURE_FILL) for i, g in zip(ids, views, strict=True)]
        )
        # Outside the rotated sample no class was prompted: invalid there.
        valid = torch.stack([apply_view(self.semantic_valid[i], g, fill=0.0) for i, g in zip(ids, views, strict=True)])
        return sem.to(device), valid.to(device)

    @torch.no_grad()
    def pseudo_label_probabilities(
        self,
        ids: Sequence[int],
        views: Sequence[Geometry],
        pseudo: torch.Tensor,
        rng: np.random.Generator,
    ) -> torch.Tensor:
        """The teacher's class probabilities on drawn views, prompted from pseudo-labels.

        Args:
            ids: sample indices of the views.
            views: each view's ``(flips, rot90[, angle])``.
            pseudo: ``(B, K, *spatial)`` class probabilities of the views (e.g. the EMA teacher's),
                where the prompts come from: boxes per class (``teacher.prompt=box``) or points
                sampled from low-uncertainty pixels (``point``), slice by slice in 3D.
            rng: source of prompt sampling (points).

        Returns:
            ``(B, K, *spatial)`` probabilities on the views; uniform (maximal entropy, never confident) on
            images or slices where the pseudo-label gives nothing to prompt, and on slices the teacher
            does not see (``teacher.slice_stride``).
        """
        out = []
        for i, view, p in zip(ids, views, pseudo.detach().float().cpu(), strict=True):
            # Back to the cached, un-augmented sample; where a free rotation brings in nothing, no opinion.
            probs = apply_view(p, view, inverse=True, fill=1.0 / self.num_classes).numpy()
            out.append(self.view_probabilities(i, self.decode_sample(i, probs, rng), view))
        return torch.stack(out).to(pseudo.device)

    def decode_sample(self, i: int, probs: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Prompt the teacher on sample ``i`` from class probabilities ``probs`` ``(K, *spatial)`` of the
        un-augmented sample and decode.

        Returns:
            Teacher slice index (:func:`teacher_slice_indices`; 0 for a 2D sample) -> the teacher's class
            probabilities ``(K, H, W)`` on that slice, for the slices that got a prompt.
        """
        axis = self.axes[i]
        if probs.ndim == 3:
            sources = [probs]
        else:
            sources = [np.take(probs, s, axis=axis + 1) for s in teacher_slice_indices(probs.shape[axis + 1], self.stride)]
        return self._decode_prompted(sample_slices(self.samples[i], axis, self.stride), sources, rng)

    def view_probabilities(self, i: int, decoded: dict[int, np.ndarray], view: Geometry) -> torch.Tensor:
        """Sample ``i``'s decoded slices (:meth:`decode_sample`) as probabilities ``(K, *spatial)`` on a view.

        Where nothing was prompted, or on a slice the teacher does not see (teacher.slice_stride), the
        teacher has no opinion: uniform probabilities (maximal entropy) keep it from ever being
        "confident"; all-background would be confident and would teach the student to miss whatever the
        pseudo-label missed.
        """
        uniform = 1.0 / self.num_classes
        spatial = tuple(self.samples[i].image.shape[1:])
        result = np.full((self.num_classes, *spatial), uniform, np.float32)
        axis = self.axes[i]
        picked = [0] if len(spatial) == 2 else teacher_slice_indices(spatial[axis], self.stride)
        for j, cp in decoded.items():
            if len(spatial) == 2:
                result[:] = cp
            else:
                index: list[slice | int] = [slice(None)] * 4
                index[axis + 1] = picked[j]
                result[tuple(index)] = cp
        return apply_view(torch.from_numpy(result), view, fill=uniform)

    def box_prompts(self, probs: np.ndarray, rng: np.random.Generator) -> Prompts:
        """Tight boxes, one per class present in the argmax of ``probs`` ``(K, H, W)`` of one slice
        (``rng`` unused here; subclasses may jitter them)."""
        return boxes_from_pseudo_label(probs, self.num_classes, 0.0, None, self.cfg.teacher.min_pixels)

    def _decode_prompted(
        self, slices: Sequence[np.ndarray], sources: Sequence[np.ndarray], rng: np.random.Generator
    ) -> dict[int, np.ndarray]:
        """Prompt the teacher on 2D ``slices`` from class probabilities ``(K, H, W)`` of each (``teacher.prompt``:
        one box per class, or points from low-uncertainty pixels) and decode; index -> probabilities
        ``(K, H, W)``, for the slices that got a prompt."""
        tc = self.cfg.teacher
        todo: list[int] = []
        prompts: list[Prompts] = []
        for j, ps in enumerate(sources):
            if tc.prompt == "point":
                pr = points_from_uncertainty(ps, tc.points_per_class, rng, min_pixels=tc.min_pixels)
            else:
                pr = self.box_prompts(ps, rng)
            if pr.present.any():
                todo.append(j)
                prompts.append(pr)
        encoded = self.cache.encode([slices[j] for j in todo], embeddings=True) if todo else []
        decoded: dict[int, np.ndarray] = {}
        for j, enc, pr in zip(todo, encoded, prompts, strict=True):
            logits, _ = self.teacher.decode(enc, pr)
            decoded[j] = class_probabilities(logits.numpy())
            self.stats.decoded_slices += 1
        return decoded

    @torch.no_grad()
    def class_reliability(self, rng: np.random.Generator) -> np.ndarray:
        """The teacher's Dice per class on these (labeled) samples, prompted from their ground truth the way
        :meth:`pseudo_label_probabilities` prompts it from pseudo-labels.

        The ground truth stands in for a perfect pseudo-label (one-hot probabilities), so this is the
        teacher's best case under the stage-2 prompting: a class it fails here it also fails on unlabeled
        images. Dice is pooled over every prompted slice (slices without a prompt, where the teacher
        has no opinion, are left out).

        Returns:
            ``(K,)`` Dice in [0, 1]; NaN for a class absent from both the ground truth and the predictions.
        """
        k = self.num_classes
        inter = np.zeros(k)
        total = np.zeros(k)
        eye = np.eye(k, dtype=np.float32)
        for i, sample in enumerate(self.samples):
            if sample.label is None:
                raise ValueError(f"{sample.source}: the teacher's class reliability needs a label")
            axis = self.axes[i]
            labels = [np.asarray(lab, dtype=np.int64) for lab in self._label_slices(sample.label, axis)]
            onehot = [np.moveaxis(eye[np.clip(lab, 0, k - 1)], -1, 0) for lab in labels]
            decoded = self._decode_prompted(sample_slices(sample, axis, self.stride), onehot, rng)
            for j, cp in decoded.items():
                pred, ref = cp.argmax(0), labels[j]
                for c in range(k):
                    p, g = pred == c, ref == c
                    inter[c] += np.count_nonzero(p & g)
                    total[c] += np.count_nonzero(p) + np.count_nonzero(g)
        dice = np.full(k, np.nan)
        np.divide(2.0 * inter, total, out=dice, where=total > 0)
        return dice
