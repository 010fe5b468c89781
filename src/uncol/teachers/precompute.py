"""``uncol teacher cache``: compute the teacher's encoder outputs of a run's images ahead of training.

The cache is keyed by image content, so this must encode exactly the arrays that will be looked up:

* training splits of a 2D run: the in-memory training samples (normalised, resized to
  ``train.patch_size``) that :class:`uncol.data.training.SampleSet` builds and a method reads back;
* training splits of a 3D run: the in-memory samples' slices along ``teacher.slice_axis``, every
  ``teacher.slice_stride``-th one (volumes normalised and padded to ``train.patch_size``, as UnCoL reads them);
* ``val`` / ``test``: the normalised slices that zero-shot evaluation encodes (slices with at least
  one labeled class), with their image embeddings.

Several processes can share the work: each encodes one shard of the images
(:mod:`uncol.teachers.sharding`) into the same cache folder, whose entries are written atomically
and skipped when already present (:mod:`uncol.teachers.cache`); :mod:`uncol.teachers.cache_job`
picks the shard from ``--shard`` or from torchrun.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from uncol import teachers
from uncol.config import Config
from uncol.data.readers import load_case
from uncol.data.training import SampleSet, prepare_case
from uncol.data.types import Case
from uncol.teachers.base import FoundationTeacher
from uncol.teachers.sharding import Shard, select_shard
from uncol.teachers.slicing import sample_axis, sample_slices
from uncol.teachers.throughput import ShardThroughput
from uncol.teachers.zero_shot import resolve_slice_axis, split_cases

TRAINING_SPLITS = ("train", "labeled", "unlabeled")


def _training_images(cfg: Config, cases: list[Case]) -> Iterator[np.ndarray]:
    # Exactly what uncol.teachers.targets looks up: the in-memory samples (3D: padded to the patch
    # size), sliced along the teacher's axis.
    for sample in SampleSet(cases, cfg, use_labels=False).samples:
        yield from sample_slices(sample, sample_axis(sample, cfg.teacher.slice_axis), cfg.teacher.slice_stride)


def _evaluation_images(cfg: Config, cases: list[Case]) -> Iterator[np.ndarray]:
    for case in cases:
        data = prepare_case(load_case(case, cfg.data), cfg)
        if data.image.ndim == 3:
            yield data.image
            continue
        axis = resolve_slice_axis(cfg.teacher.slice_axis, data)
        for s in range(data.image.shape[axis + 1]):
            if data.label is None or np.take(data.label, s, axis=axis).any():
                yield np.take(data.image, s, axis=axis + 1)


def disk_summary(usage: dict[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    """:meth:`~uncol.teachers.cache.FeatureCache.disk_usage` as ``{kind: {"files": n, "bytes": b}}``."""
    return {kind: {"files": n, "bytes": b} for kind, (n, b) in usage.items()}


def precompute_cache(
    cfg: Config,
    split: str = "train",
    embeddings: bool | None = None,
    max_cases: int = 0,
    show_progress: bool = True,
    teacher: FoundationTeacher | None = None,
    shard: Shard | None = None,
    limit: int = 0,
) -> dict[str, Any]:
    """Encode every image of ``split`` (of this process's shard) that is not cached yet.

    Args:
        cfg: run configuration.
        split: ``train`` (labeled + unlabeled), ``labeled``, ``unlabeled``, ``val`` or ``test``.
        embeddings: also cache full image embeddings (default: only for ``val``/``test``, which
            zero-shot evaluation decodes with prompts).
        max_cases: at most this many cases (0 = all).
        show_progress: draw a progress bar.
        teacher: a teacher to use instead of building ``cfg.teacher``.
        shard: encode only this shard of the images (default: all of them, as shard ``0/1``).
        limit: at most this many images, the first ones listed, before sharding (0 = all).

    Returns:
        Counts (images of the shard, computed, cached before, damaged entries recomputed), seconds,
        disk usage and the shard's :class:`~uncol.teachers.throughput.ShardThroughput` (``throughput``).
    """
    t0 = time.time()
    shard = shard or Shard(0, 1)
    teacher = teacher or teachers.build_teacher(cfg.teacher)
    cache = teachers.open_cache(cfg, teacher)
    cases = split_cases(cfg, split)
    if max_cases > 0:
        cases = cases[:max_cases]
    evaluation = split not in TRAINING_SPLITS
    want_emb = evaluation if embeddings is None else embeddings
    listing = (_evaluation_images if evaluation else _training_images)(cfg, cases)
    listed = list(islice(listing, limit) if limit > 0 else listing)
    # Every process lists the same images and derives the same assignment from their keys alone.
    mine = [listed[i] for i in select_shard([cache.feature_key(im) for im in listed], shard)]
    t1, cpu1 = time.time(), time.process_time()
    label = f"teacher cache {split}" + (f" shard {shard}" if shard.count > 1 else "")
    with tqdm(total=len(mine), desc=label, unit="img", disable=not show_progress, dynamic_ncols=True) as bar:
        stats = cache.warm(mine, want_emb, progress=bar.update)
    t2, cpu2 = time.time(), time.process_time()
    usage = cache.disk_usage()  # this process's view; other writers may still be at work
    throughput = ShardThroughput(
        shard=str(shard),
        listed=len(listed),
        images=len(mine),
        encoded=stats.misses,
        skipped=stats.hits,
        damaged=stats.corrupt,
        setup_seconds=round(t1 - t0, 3),
        encode_seconds=round(t2 - t1, 3),
        encode_cpu_seconds=round(cpu2 - cpu1, 3),
        encode_start=t1,
        encode_end=t2,
    )
    return {
        "split": split,
        "cases": len(cases),
        "listed": len(listed),
        "images": len(mine),
        "computed": stats.misses,
        "cached_before": stats.hits,
        "damaged_recomputed": stats.corrupt,
        "embeddings": want_emb,
        "seconds": round(t2 - t0, 1),
        "cache_dir": str(cache.root),
        "entries_dir": str(cache.entries_dir),
        "disk": disk_summary(usage),
        "throughput": throughput,
    }
