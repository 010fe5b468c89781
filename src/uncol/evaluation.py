"""Evaluation of a trained run on whole cases of its validation or test split.

Besides the overlap and surface metrics of each case, evaluation scores the calibration of the
softmax probabilities and how well voxel-wise uncertainty points at the wrong voxels
(:mod:`uncol.uncertainty_evaluation`; docs/metrics.md). It writes, in the run folder:

* ``metrics_<split>[_<convention>].json``: the metrics report, with an ``"uncertainty"`` entry;
* ``metrics_<split>[_<convention>]_cases.csv``: one row per case;
* ``uncertainty_<split>.json``: reliability-diagram data and risk-coverage curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from uncol.atomic import atomic_write_json
from uncol.case_table import case_rows, write_case_table
from uncol.case_uncertainty import deterministic_maps, mc_dropout_maps
from uncol.config import Config
from uncol.data.io import write_mask
from uncol.data.readers import load_case
from uncol.data.readers.hdf5 import read_hdf5_image
from uncol.data.splits import load_splits
from uncol.data.types import Case, CaseData
from uncol.devices import select_device
from uncol.errors import UncolError
from uncol.inference import predict_probabilities
from uncol.metrics import compute_case_metrics, dropout_layers, summarize
from uncol.runs import RunPaths, inference_config, load_run_config, load_weights
from uncol.scoring import combined_unit, distance_unit
from uncol.uncertainty_evaluation import NO_DROPOUT, UncertaintyEvaluation

#: MC-dropout passes per case (networks with dropout only): each is one whole-case inference.
MC_PASSES = 8
#: Seed of the MC-dropout masks (case ``i`` uses ``MC_SEED + i``), so evaluations are reproducible.
MC_SEED = 0


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str | None = None,
    convention: str | None = None,
    device: str | None = None,
    save_predictions: bool = False,
    show_progress: bool = True,
    max_cases: int = 0,
    mc_passes: int = MC_PASSES,
    overrides: Sequence[str] = (),
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
        mc_passes: MC-dropout passes per case when the network has dropout (each costs one more
            inference of the case); at least 2.
        overrides: ``key=value`` options of the run's configuration changed for this evaluation, e.g.
            ``eval.checkpoint=final`` or ``eval.sw_overlap=0.25`` (options that define the network are
            refused, :func:`uncol.runs.inference_config`).

    Returns:
        The metrics dict (see :func:`uncol.metrics.summarize`) plus ``split``, ``checkpoint``,
        ``checkpoint_step``, ``distance_unit`` (of HD95 and ASD: ``mm``, ``px``, ``vox`` or ``mixed``,
        as :func:`uncol.scoring.distance_unit` gives it per case) and ``uncertainty`` (see
        :meth:`uncol.uncertainty_evaluation.UncertaintyEvaluation.summary`); it is also written to
        ``RUN/metrics_<split>[_<convention>].json``, with the per-case CSV and
        ``RUN/uncertainty_<split>.json`` beside it.
    """
    paths = RunPaths(run_dir)
    stored = load_run_config(run_dir)
    which = checkpoint or inference_config(stored, overrides).eval.checkpoint
    cfg, net, meta = load_weights(run_dir, which, overrides=overrides)
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
    layers = dropout_layers(net)
    mc = (
        {"available": True, "passes": mc_passes, "seed": MC_SEED, "dropout_layers": len(layers), "p": cfg.model.dropout}
        if layers
        else {"available": False, "reason": NO_DROPOUT}
    )
    uncertainty = UncertaintyEvaluation(cfg.data.num_classes, mc)
    results = []
    units: list[str] = []
    calibration = {}
    pred_dir = paths.root / f"predictions_{split}"
    for i, case in enumerate(
        tqdm(cases, desc=f"evaluate {split}", disable=not show_progress, dynamic_ncols=True)
    ):
        if case.label_path is None:
            raise UncolError(f"{case.image_path}: case {case.case_id} of the {split} split has no label")
        data = load_case(case, cfg.data)
        probs = predict_probabilities(net, data, cfg, dev)
        pred = probs.argmax(axis=0).astype("uint8")
        spacing = None if conv == "medpy" else data.spacing
        res = compute_case_metrics(
            pred, data.label, cfg.data.num_classes, spacing=spacing, convention=conv,
            empty_both=cfg.eval.empty_both, empty_one=cfg.eval.empty_one,
        )
        results.append((case.case_id, res))
        units.append(distance_unit(conv, cfg.data.spacing or None, _file_spacing(case, data, cfg), data.label.ndim))
        maps = deterministic_maps(probs)
        if layers:
            maps.update(mc_dropout_maps(net, data, cfg, dev, mc_passes, seed=MC_SEED + i))
        values = uncertainty.add_case(case.case_id, probs, data.label, maps)
        calibration[case.case_id] = uncertainty.case_row(values)
        if save_predictions:
            write_mask(pred_dir / _prediction_name(case.image_path), pred, data)
    out = summarize(results, cfg.data.num_classes, conv)
    out.update({"split": split, "checkpoint": which, "checkpoint_step": meta.get("step")})
    out["distance_unit"] = combined_unit(units)
    out["uncertainty"] = uncertainty.summary()
    # Named by the run's own convention, so that --set eval.convention=medpy does not replace metrics_<split>.json.
    name = f"metrics_{split}" if conv == stored.eval.convention else f"metrics_{split}_{conv}"
    atomic_write_json(paths.root / f"{name}.json", out)
    write_case_table(paths.root / f"{name}_cases.csv", case_rows(out["cases"], calibration))
    curves = {"split": split, "checkpoint": which, "checkpoint_step": meta.get("step"), **uncertainty.curves()}
    atomic_write_json(paths.uncertainty(split), curves)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _file_spacing(case: Case, data: CaseData, cfg: Config) -> tuple[float, ...] | None:
    """The voxel size a case's image file stores (NIfTI header, HDF5 ``spacing`` attribute), or ``None``.

    :func:`~uncol.data.readers.load_case` fills in 1.0 where a file stores none, so whether distances
    are in mm or in pixels/voxels is asked of the reader itself.
    """
    if data.affine is not None:
        return data.spacing
    if case.fmt == "hdf5":
        return read_hdf5_image(case.image_path, cfg.data.image_key).spacing or None
    return None


def _prediction_name(image_path: Path) -> str:
    name = image_path.name
    return name if not name.endswith((".jpg", ".jpeg", ".JPG", ".JPEG")) else Path(name).stem + ".png"
