"""Evaluation of a trained run on whole cases of its validation or test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from uncol.atomic import atomic_write_json
from uncol.data.io import write_mask
from uncol.data.readers import load_case
from uncol.data.splits import load_splits
from uncol.devices import select_device
from uncol.errors import UncolError
from uncol.inference import predict_labels
from uncol.metrics import compute_case_metrics, summarize
from uncol.runs import RunPaths, load_run_config, load_weights


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str | None = None,
    convention: str | None = None,
    device: str | None = None,
    save_predictions: bool = False,
    show_progress: bool = True,
    max_cases: int = 0,
) -> dict[str, Any]:
    """Predict every case of ``split`` with the run's selected weights and score it.

    Args:
        run_dir: a finished run folder.
        split: ``val`` or ``test`` (``labeled`` scores the training cases, for diagnostics).
        checkpoint: ``best`` (selected on validation) or ``final``; default from the run's config.
        convention: metric convention (``standard`` or ``medpy``); default from the run's config.
        device: device override (default: the run's ``train.device``).
        save_predictions: also write each predicted mask to ``RUN/predictions_<split>/`` with the
            case's geometry.
        show_progress: draw a progress bar.
        max_cases: score at most this many cases (0 = all).

    Returns:
        The metrics dict (see :func:`uncol.metrics.summarize`) plus ``split``, ``checkpoint`` and
        ``checkpoint_step``; it is also written to ``RUN/metrics_<split>[_<convention>].json``.
    """
    paths = RunPaths(run_dir)
    which = checkpoint or load_run_config(run_dir).eval.checkpoint
    cfg, net, meta = load_weights(run_dir, which)
    conv = convention or cfg.eval.convention
    splits = load_splits(paths.splits)
    cases = {"val": splits.val, "test": splits.test, "labeled": splits.labeled}.get(split)
    if cases is None:
        raise UncolError(f"unknown split {split!r}: use val or test")
    if not cases:
        raise UncolError(f"{paths.splits}: the {split} split is empty")
    if max_cases > 0:
        cases = cases[:max_cases]
    dev = select_device(device or cfg.train.device)
    net.to(dev)
    results = []
    pred_dir = paths.root / f"predictions_{split}"
    for case in tqdm(cases, desc=f"evaluate {split}", disable=not show_progress, dynamic_ncols=True):
        if case.label_path is None:
            raise UncolError(f"{case.image_path}: case {case.case_id} of the {split} split has no label")
        data = load_case(case, cfg.data)
        pred = predict_labels(net, data, cfg, dev)
        spacing = None if conv == "medpy" else data.spacing
        res = compute_case_metrics(
            pred, data.label, cfg.data.num_classes, spacing=spacing, convention=conv,
            empty_both=cfg.eval.empty_both, empty_one=cfg.eval.empty_one,
        )
        results.append((case.case_id, res))
        if save_predictions:
            write_mask(pred_dir / _prediction_name(case.image_path), pred, data)
    out = summarize(results, cfg.data.num_classes, conv)
    out.update({"split": split, "checkpoint": which, "checkpoint_step": meta.get("step")})
    name = f"metrics_{split}.json" if conv == cfg.eval.convention else f"metrics_{split}_{conv}.json"
    atomic_write_json(paths.root / name, out)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _prediction_name(image_path: Path) -> str:
    name = image_path.name
    return name if not name.endswith((".jpg", ".jpeg", ".JPG", ".JPEG")) else Path(name).stem + ".png"
