"""Zero-shot evaluation of the generalized teacher alone (the "G-Tch" row of the paper's Table 4).

Every labeled case of a split is segmented by the frozen teacher prompted with one box per class
from the ground truth of each 2D image or slice: a class absent from a slice gets no prompt and
probability 0 there, and slices without any labeled class are not even encoded. 3D volumes are sliced
along ``teacher.slice_axis``. The masks are scored with the project's metrics (Dice, Jaccard, HD95,
ASD) in the requested conventions. Encoder outputs go through the feature cache (embeddings
included), so a second run, e.g. with box jitter, only pays for the cheap mask decoder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from uncol import teachers
from uncol.atomic import atomic_write_json
from uncol.config import Config
from uncol.data.index import discover
from uncol.data.readers import load_case
from uncol.data.splits import Splits, make_splits
from uncol.data.training import prepare_case
from uncol.data.types import Case, CaseData
from uncol.errors import UncolError
from uncol.metrics import compute_case_metrics, summarize
from uncol.teachers.base import FeatureSource, FoundationTeacher, logits_to_label
from uncol.teachers.prompts import Prompts
from uncol.teachers.slicing import teacher_slice_axis


def resolve_slice_axis(setting: int, data: CaseData) -> int:
    """The spatial axis a 3D case is sliced along (0 for 2D images).

    Args:
        setting: ``teacher.slice_axis``: 0-2 as given; -1 the case's slice axis (data.slice_axis or the
            reader default); -2 the axis whose slices have the largest area (ties: the case's axis).
        data: the loaded case.
    """
    if data.image.ndim == 3:
        return 0
    return teacher_slice_axis(setting, data.spatial_shape, data.slice_axis)


def split_cases(cfg: Config, split: str) -> list[Case]:
    """The cases of ``split`` (``train``, ``labeled``, ``unlabeled``, ``val``, ``test``) as the engine splits them."""
    splits: Splits = make_splits(discover(cfg.data), cfg.split)
    roles = {
        "train": splits.labeled + splits.unlabeled,
        "labeled": splits.labeled,
        "unlabeled": splits.unlabeled,
        "val": splits.val,
        "test": splits.test,
    }
    if split not in roles:
        raise UncolError(f"unknown split {split!r}: use one of {', '.join(roles)}")
    return roles[split]


def gt_prompts_for_case(
    teacher: FoundationTeacher, label: np.ndarray, axis: int, num_classes: int, jitter_at_1024: float, rng: np.random.Generator
) -> list[Prompts]:
    """One :class:`Prompts` per slice (one for a 2D label) with boxes of the classes present there."""
    if label.ndim == 2:
        return [teacher.gt_prompts(label, num_classes, rng, jitter_at_1024)]
    return [
        teacher.gt_prompts(np.take(label, s, axis=axis), num_classes, rng, jitter_at_1024)
        for s in range(label.shape[axis])
    ]


def zero_shot_case(
    teacher: FoundationTeacher,
    data: CaseData,
    num_classes: int,
    axis: int,
    jitter_at_1024: float,
    rng: np.random.Generator,
    cache: FeatureSource | None = None,
) -> np.ndarray:
    """Foreground logits ``(K-1, *spatial)`` of one prepared, labeled case under ground-truth box prompts."""
    if data.label is None:
        raise UncolError(f"{data.meta.get('path')}: case {data.case_id} has no label to prompt the teacher with")
    prompts = gt_prompts_for_case(teacher, data.label, axis, num_classes, jitter_at_1024, rng)
    if data.image.ndim == 3:
        return teacher.predict(data.image, prompts[0], cache).logits.numpy()
    return teacher.predict_volume(data.image, axis, prompts, cache)


def zero_shot_evaluate(
    cfg: Config,
    split: str = "test",
    max_cases: int = 0,
    conventions: Sequence[str] = ("standard", "medpy"),
    jitter_at_1024: float = 0.0,
    seed: int = 0,
    out_dir: str | Path | None = None,
    show_progress: bool = True,
    teacher: FoundationTeacher | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Score the teacher alone on a split, prompted with ground-truth boxes.

    Args:
        cfg: configuration (data, split, ``teacher`` section, metric policies in ``eval``).
        split: ``test`` (default), ``val`` or a training role.
        max_cases: score at most this many cases (0 = all), in split order.
        conventions: metric conventions to report (``standard`` uses the data's spacing, ``medpy`` voxels).
        jitter_at_1024: box jitter (0: tight boxes), given at 1024 px like ``teacher.box_jitter_px``.
        seed: seed of the jitter.
        out_dir: where ``zero_shot_<split>.json`` goes; default ``<output_dir>/<name>_zero_shot``.
        show_progress: draw a progress bar.
        teacher: a teacher to use instead of building ``cfg.teacher``.
        use_cache: read/write encoder outputs through the feature cache.

    Returns:
        ``{"<convention>": summary, ..., "meta": {...}}``; also written as JSON.
    """
    t0 = time.time()
    teacher = teacher or teachers.build_teacher(cfg.teacher)
    cache = teachers.open_cache(cfg, teacher) if use_cache else None
    cases = split_cases(cfg, split)
    if max_cases > 0:
        cases = cases[:max_cases]
    if not cases:
        raise UncolError(f"the {split} split of {cfg.data.root} is empty")
    rng = np.random.default_rng(seed)
    k = cfg.data.num_classes
    results: dict[str, list] = {c: [] for c in conventions}
    axes: dict[str, int] = {}
    for case in tqdm(cases, desc=f"zero-shot {teacher.name} {split}", disable=not show_progress, dynamic_ncols=True):
        if case.label_path is None:
            raise UncolError(f"{case.image_path}: case {case.case_id} of the {split} split has no label")
        data = prepare_case(load_case(case, cfg.data), cfg)
        axis = resolve_slice_axis(cfg.teacher.slice_axis, data)
        axes[case.case_id] = axis
        pred = logits_to_label(zero_shot_case(teacher, data, k, axis, jitter_at_1024, rng, cache))
        for conv in conventions:
            res = compute_case_metrics(
                pred, data.label, k, spacing=None if conv == "medpy" else data.spacing, convention=conv,
                empty_both=cfg.eval.empty_both, empty_one=cfg.eval.empty_one,
            )
            results[conv].append((case.case_id, res))
    out: dict[str, Any] = {conv: summarize(results[conv], k, conv) for conv in conventions}
    stats = cache.stats if cache is not None else None
    out["meta"] = {
        "teacher": teacher.identity,
        "split": split,
        "cases": len(cases),
        "jitter_at_1024": jitter_at_1024,
        "seed": seed,
        "slice_axes": sorted(set(axes.values())),
        "seconds": round(time.time() - t0, 1),
        "cache": None if stats is None else {"hits": stats.hits, "misses": stats.misses, "corrupt": stats.corrupt},
    }
    folder = Path(out_dir) if out_dir is not None else Path(cfg.output_dir) / f"{cfg.name}_zero_shot"
    name = f"zero_shot_{split}" + (f"_jitter{jitter_at_1024:g}" if jitter_at_1024 else "") + ".json"
    atomic_write_json(folder / name, out)
    out["meta"]["path"] = str(folder / name)
    return out
