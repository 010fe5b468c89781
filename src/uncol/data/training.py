"""Training samples: loading, caching in memory and per-step batch drawing.

A 2D network trains on slices (2D cases, or slices of 3D volumes along their slice axis), resized to
``train.patch_size`` (or randomly cropped/padded to it); a 3D network on random patches of volumes.
Cases are normalised and kept in memory once, so an epoch costs no I/O.

Batches are a pure function of ``(seed, step)``: :class:`StepBatches` seeds one generator per step and
stream, which is what makes an interrupted and resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from uncol.config import AugmentConfig, Config
from uncol.data.readers import load_case
from uncol.data.readers.load import channel_problem
from uncol.data.transforms import (
    apply_augment,
    crop,
    normalize_intensity,
    pad_to_size,
    resize_image,
    resize_label,
    sample_augment,
    sample_crop_start,
    snap_crop_start,
)
from uncol.data.types import Case, CaseData
from uncol.errors import ConfigError, DataError, UncolError


@dataclass
class Sample:
    """One in-memory training item (a 2D slice or a 3D volume), already normalised."""

    source: str
    image: np.ndarray
    label: np.ndarray | None
    #: the case's slice axis (3D samples; what a 2D teacher slices them along by default).
    slice_axis: int = 2


def prepare_case(data: CaseData, cfg: Config) -> CaseData:
    """Normalise a loaded case's intensities as configured (labels untouched)."""
    data.image = normalize_intensity(data.image, cfg.data.normalize)
    return data


def iter_slices(data: CaseData) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """Split a 3D case into 2D slices along its slice axis (a 2D case is returned whole)."""
    if data.image.ndim == 3:
        return [(data.case_id, data.image, data.label)]
    ax = data.slice_axis
    out = []
    for k in range(data.image.shape[ax + 1]):
        img = np.take(data.image, k, axis=ax + 1)
        lab = None if data.label is None else np.take(data.label, k, axis=ax)
        out.append((f"{data.case_id}#{k}", img, lab))
    return out


def expected_ndim(cfg: Config) -> int | None:
    """Spatial dimensions every case of a run must have: 3 for a 3D network, 2 for 2D image files,
    ``None`` where a 2D network also takes volumes (sliced along their slice axis)."""
    if cfg.spatial_dims == 3:
        return 3
    return 2 if cfg.data.format == "image2d" else None


def load_training_case(case: Case, cfg: Config, use_label: bool) -> CaseData:
    """Load one case as training, validation and evaluation need it, or raise why it cannot be used.

    The checks of ``uncol data check`` (:func:`~uncol.data.readers.load.load_case`: readable files,
    shapes, spacing, affine, label values, finite intensities) plus what the run's network needs:
    the 2D/3D kind of :func:`expected_ndim`, ``data.in_channels`` channels, and a label when one is used.

    Raises:
        DataError: naming the file and the problem.
        ConfigError: a ``data`` option that does not fit the file (e.g. ``data.spacing``).
    """
    if not use_label and case.label_path is not None:
        case = replace(case, label_path=None)
    elif use_label and case.label_path is None:
        raise DataError(case.image_path, f"case '{case.case_id}' has no label, and this split needs one")
    expect = expected_ndim(cfg)
    if expect == 3 and case.ndim == 2:  # known from the header: no need to read the data
        raise DataError(case.image_path, "2D image where a 3D volume is expected (model.arch is 3D)")
    data = load_case(case, cfg.data, expect_ndim=expect)
    problem = channel_problem(data, cfg.data.in_channels)
    if problem is not None:
        raise DataError(case.image_path, problem)
    return data


class SampleSet:
    """All training items of one stream (labeled or unlabeled), in memory.

    Args:
        cases: the cases to load.
        cfg: the run configuration.
        use_labels: load labels (False for unlabeled streams: their labels are never read).
        progress: optional callback ``(done, total)`` for loading progress.
        on_bad_case: called with ``(case, error)`` for a case that cannot be used, which is then left
            out; without it the first such case raises. Whoever passes it must report the cases it gets.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        cfg: Config,
        use_labels: bool,
        progress: Callable[[int, int], None] | None = None,
        on_bad_case: Callable[[Case, UncolError], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spatial_dims = cfg.spatial_dims
        self.patch_size = tuple(cfg.train.patch_size)
        # 3D volumes are padded to train.pad_to (default: the patch size) and patches cropped from them.
        self.pad_size = cfg.train.padded_size
        self.samples: list[Sample] = []
        for i, case in enumerate(cases):
            try:
                data = prepare_case(load_training_case(case, cfg, use_labels), cfg)
            except (DataError, ConfigError) as e:
                if on_bad_case is None:
                    raise
                on_bad_case(case, e)
                data = None
            if data is not None:
                self._add(data)
            if progress is not None:
                progress(i + 1, len(cases))

    def _add(self, data: CaseData) -> None:
        if self.spatial_dims == 2:
            for sid, img, lab in iter_slices(data):
                if self.cfg.train.resize_2d:
                    img = resize_image(img, self.patch_size)
                    lab = None if lab is None else resize_label(lab, self.patch_size)
                self.samples.append(Sample(sid, img, None if lab is None else lab.astype(np.int64)))
        else:
            img, lab, _ = pad_to_size(data.image, data.label, self.pad_size)
            self.samples.append(
                Sample(data.case_id, img, None if lab is None else lab.astype(np.int64), data.slice_axis)
            )

    def __len__(self) -> int:
        return len(self.samples)

    def draw(
        self, rng: np.random.Generator, augment: AugmentConfig | None, index: int | None = None, crop_multiple: int = 1
    ) -> tuple[np.ndarray, np.ndarray | None, int, tuple[Any, ...]]:
        """Draw one item with ``rng``: pick a sample (or take sample ``index``), crop to the patch size, augment.

        Args:
            rng: the stream's generator.
            augment: augmentation options (``None``: none).
            index: the sample to take (``None``: drawn).
            crop_multiple: crop origins are multiples of it (a method's ``DataNeeds.crop_multiple``).

        Returns:
            ``(image, label, index, geometry)``: image ``(C, *patch)``, label ``patch`` or None, sample
            index, and the augmentation's ``(flips, rot90, angle)`` (what a method needs to map features
            computed on the un-augmented sample, e.g. cached teacher features, onto the drawn view;
            ``angle`` is the free in-plane rotation in degrees, 0 without ``augment.rotate_degrees``), with a
            fourth element ``(start, patch size, sample size)`` when the view was cropped from a larger
            sample (applied before the augmentation).
        """
        idx = int(rng.integers(len(self.samples))) if index is None else int(index)
        s = self.samples[idx]
        image, label = s.image, s.label
        geometry: tuple[Any, ...] = ((False,) * self.spatial_dims, 0, 0.0)
        cropped = None
        if tuple(image.shape[1:]) != self.patch_size:
            image, label, _ = pad_to_size(image, label, self.patch_size)
            start = sample_crop_start(label, image.shape[1:], self.patch_size, rng)
            start = snap_crop_start(start, image.shape[1:], self.patch_size, crop_multiple)
            cropped = (tuple(start), self.patch_size, tuple(image.shape[1:]))
            image, label = crop(image, label, start, self.patch_size)
        if augment is not None:
            square = self.patch_size[-1] == self.patch_size[-2]
            params = sample_augment(augment, self.spatial_dims, rng, square)
            image, label = apply_augment(image, label, params)
            geometry = (tuple(params.flips), int(params.rot90), float(params.angle))
        if cropped is not None:
            geometry = (*geometry, cropped)
        return np.ascontiguousarray(image, dtype=np.float32), (
            None if label is None else np.ascontiguousarray(label, dtype=np.int64)
        ), idx, geometry


class StepBatches(Dataset):
    """Map-style dataset whose item ``step`` is the whole batch of that training step.

    Used with ``DataLoader(batch_size=None, sampler=range(start, iterations))`` so workers prefetch
    whole steps, and the content of step ``s`` depends only on ``(seed, s)``.

    ``phases`` (``(start, labeled, unlabeled)`` per phase, the first starting at step 0) change the batch
    over the run: a step draws only the images its phase reads. Each stream draws its images in the same
    order whatever their number, so a smaller batch holds the first images of the full one.

    With ``world_size`` > 1 (data-parallel training, uncol.distributed_training) every rank draws the
    global batch of ``world_size * batch_size`` samples from the same seeded stream and keeps slice
    ``rank`` of it: the ranks' batches are disjoint draws, and together exactly the batch one process
    with ``world_size`` times the batch size draws. With one process nothing changes.
    """

    LABELED_STREAM = 0
    UNLABELED_STREAM = 1

    def __init__(
        self,
        labeled: SampleSet,
        batch_size: int,
        seed: int,
        augment: AugmentConfig | None,
        unlabeled: SampleSet | None = None,
        unlabeled_batch_size: int = 0,
        views: int = 1,
        rank: int = 0,
        world_size: int = 1,
        crop_multiple: int = 1,
        phases: Sequence[tuple[int, int, int]] = (),
    ) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if len(labeled) == 0:
            raise DataError(None, "no labeled training samples: check the split and data.root")
        # Without phases, one: the same batch in every step.
        self.phases = tuple(tuple(int(v) for v in p) for p in phases) or ((0, batch_size, unlabeled_batch_size),)
        if self.phases[0][0] != 0:
            raise ValueError(f"phases: the first must start at step 0, got {self.phases}")
        if any(n_unlabeled > 0 for _, _, n_unlabeled in self.phases) and (unlabeled is None or len(unlabeled) == 0):
            raise DataError(None, "the method needs unlabeled data but the split has no unlabeled cases")
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.seed = seed
        self.augment = augment
        self.views = views
        self.rank = rank
        self.world_size = world_size
        self.crop_multiple = crop_multiple

    def sizes(self, step: int) -> tuple[int, int]:
        """``(labeled, unlabeled)`` images per rank in ``step``'s batch: those of the last phase begun."""
        return next((n_l, n_u) for start, n_l, n_u in reversed(self.phases) if start <= step)

    def __len__(self) -> int:  # pragma: no cover - indexed by step through a sampler
        return 2**62

    def _stream(
        self, sset: SampleSet, n: int, step: int, stream: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[int], list[tuple[Any, ...]]]:
        rng = np.random.default_rng([self.seed, step, stream])
        images, labels, ids, geometry = [], [], [], []
        for i in range(n * self.world_size):
            idx = None
            for _ in range(self.views):  # views of one sample: its index is drawn once, augmentations each time
                img, lab, idx, geo = sset.draw(rng, self.augment, idx, self.crop_multiple)
                if i // n != self.rank:  # another rank's share of the global batch: drawn only to advance rng
                    continue
                images.append(img)
                labels.append(lab)
                ids.append(idx)
                geometry.append(geo)
        image = torch.from_numpy(np.stack(images))
        label = None if labels[0] is None else torch.from_numpy(np.stack(labels))
        return image, label, ids, geometry

    def __getitem__(self, step: int) -> dict[str, object]:
        n_labeled, n_unlabeled = self.sizes(int(step))
        image, label, ids, geo = self._stream(self.labeled, n_labeled, int(step), self.LABELED_STREAM)
        batch: dict[str, object] = {"step": int(step), "image": image, "label": label, "ids": ids, "geometry": geo}
        if n_unlabeled > 0 and self.unlabeled is not None:
            u_image, _, u_ids, u_geo = self._stream(self.unlabeled, n_unlabeled, int(step), self.UNLABELED_STREAM)
            batch["unlabeled_image"] = u_image
            batch["unlabeled_ids"] = u_ids
            batch["unlabeled_geometry"] = u_geo
        return batch
