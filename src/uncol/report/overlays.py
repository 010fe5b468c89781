"""Pictures of the best, median and worst cases: image, ground truth, prediction, wrong voxels and
uncertainty, on the slice (2D models) or the three planes (3D models) with the most foreground.

Only these three cases are predicted again, with the weights the evaluation used; compared runs are
shown on the cases picked from the first run, so every column shows the same anatomy. A case without
ground truth (an unlabeled scan, :mod:`uncol.report.suggestions`) is drawn without the ground-truth
and wrong-voxel columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from uncol.config import Config
from uncol.data.readers import load_case
from uncol.data.splits import load_splits
from uncol.data.types import CaseData
from uncol.devices import select_device
from uncol.errors import UncolError
from uncol.inference import predict_probabilities
from uncol.metrics import compute_entropy
from uncol.report.figures import new_figure, png_bytes
from uncol.report.rundata import RunData
from uncol.runs import RunPaths, load_weights

__all__ = [
    "CLASS_COLORS", "CaseFigure", "CasePrediction", "Plane", "case_figures", "case_mean_dice", "pick_cases",
    "pick_planes", "pick_planes_by", "predict_case", "render_case",
]

#: Overlay colour of foreground class ``c`` is ``CLASS_COLORS[(c - 1) % len]`` (distinct on grey).
#: Yellow is left out: it marks the wrong voxels.
CLASS_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f032e6", "#42d4f4", "#f58231", "#911eb4", "#9a6324")


@dataclass(frozen=True)
class Plane:
    """A 2D view of a case: the whole image (``axis`` ``None``) or slice ``index`` along ``axis``."""

    axis: int | None
    index: int


@dataclass(frozen=True)
class CaseFigure:
    """One picked case: its role (``best``, ``median``, ``worst``), name, caption and PNG."""

    role: str
    case_id: str
    caption: str
    png: bytes


def case_mean_dice(metrics: dict[str, Any], case_id: str) -> float | None:
    """Mean Dice over the foreground classes with a value, of one case of a metrics report."""
    for case in metrics.get("cases", []):
        if case["case"] == case_id:
            values = [m["dice"] for m in case["metrics"].values() if m.get("dice") is not None]
            return float(np.mean(values)) if values else None
    return None


def pick_cases(metrics: dict[str, Any]) -> list[tuple[str, str, float]]:
    """The best, median and worst cases by mean Dice (fewer when there are fewer cases).

    Args:
        metrics: a metrics report (``metrics_<split>.json``).

    Returns:
        ``(role, case id, mean Dice)`` triples, best first; the median is the lower middle case.
    """
    scored = [(d, c["case"]) for c in metrics.get("cases", []) if (d := case_mean_dice(metrics, c["case"])) is not None]
    if not scored:
        return []
    scored.sort(key=lambda t: (-t[0], t[1]))
    picks = [("best", 0), ("median", len(scored) // 2), ("worst", len(scored) - 1)]
    out, seen = [], set()
    for role, j in picks:
        if j not in seen:
            seen.add(j)
            out.append((role, scored[j][1], scored[j][0]))
    return out


def pick_planes(label: np.ndarray, model_dims: int, slice_axis: int) -> list[Plane]:
    """Where to look at a case.

    A 2D image is shown whole. A volume segmented by a 2D model is shown on its slice (along the
    model's slicing axis) with the most foreground voxels; a volume segmented by a 3D model on the
    three planes, each the slice with the most foreground along its axis. Without foreground, the
    middle slice.

    Args:
        label: the case's label map (or a prediction), ``(*spatial)``.
        model_dims: 2 or 3, the run's network dimensions.
        slice_axis: the data's slicing axis for 2D models.

    Returns:
        One plane (2D) or three (3D).
    """
    return pick_planes_by(label > 0, model_dims, slice_axis)


def pick_planes_by(weight: np.ndarray, model_dims: int, slice_axis: int) -> list[Plane]:
    """Like :func:`pick_planes`, with the slice of the largest sum of ``weight`` (e.g. an entropy map).

    Args:
        weight: a non-negative map ``(*spatial)``.
        model_dims: 2 or 3, the run's network dimensions.
        slice_axis: the data's slicing axis for 2D models.

    Returns:
        One plane (2D) or three (3D); the middle slice where ``weight`` is zero everywhere.
    """
    if weight.ndim == 2:
        return [Plane(None, 0)]
    axes = [slice_axis] if model_dims == 2 else [0, 1, 2]
    planes = []
    for axis in axes:
        others = tuple(a for a in range(weight.ndim) if a != axis)
        sums = weight.sum(axis=others, dtype=np.float64)
        index = int(np.argmax(sums)) if sums.any() else weight.shape[axis] // 2
        planes.append(Plane(axis, index))
    return planes


def _cut(array: np.ndarray, plane: Plane) -> np.ndarray:
    return array if plane.axis is None else np.take(array, plane.index, axis=plane.axis)


def _display(view: np.ndarray, data: CaseData, plane: Plane) -> tuple[np.ndarray, float, str]:
    """Orient a 2D view for display: ``(array, aspect, origin)``.

    NIfTI arrays are ``(x, y, z)``; drawn as stored they would lie on their side, so their planes are
    transposed and drawn from the bottom up. Pixel aspect follows the voxel spacing, so anisotropic
    volumes are not squashed.
    """
    axes = [a for a in range(len(data.spacing)) if a != plane.axis]
    sa, sb = (float(data.spacing[a]) for a in axes[:2]) if len(axes) >= 2 else (1.0, 1.0)
    if data.affine is not None:
        return view.T, sb / sa, "lower"
    return view, sa / sb, "upper"


def _label_rgba(label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    rgba = np.zeros((*label.shape, 4), dtype=np.float32)
    for c in range(1, int(label.max()) + 1 if label.size else 1):
        hexcol = CLASS_COLORS[(c - 1) % len(CLASS_COLORS)]
        rgb = [int(hexcol[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        rgba[label == c] = [*rgb, alpha]
    return rgba


def _grey(image: np.ndarray) -> tuple[float, float]:
    """Display window: 1st-99th percentile, so a few bright voxels do not wash the image out."""
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


@dataclass
class CasePrediction:
    """A run's prediction of a case as drawn: class map and entropy / ln K, or why there is none."""

    label: np.ndarray | None
    entropy: np.ndarray | None
    note: str = ""


def predict_case(net: torch.nn.Module, data: CaseData, cfg: Config, device: torch.device) -> CasePrediction:
    """Predict a case for drawing; a failure becomes the note shown in place of the panels."""
    try:
        probs = predict_probabilities(net, data, cfg, device)
    except (UncolError, RuntimeError) as e:
        return CasePrediction(None, None, f"cannot predict this case: {e}")
    k = probs.shape[0]
    return CasePrediction(probs.argmax(axis=0).astype(np.uint8), compute_entropy(probs) / math.log(k))


def render_case(
    data: CaseData,
    planes: Sequence[Plane],
    preds: Sequence[CasePrediction],
    runs: Sequence[RunData],
    title: str,
) -> bytes:
    """One case as a PNG: a row per plane; columns image, ground truth (when the case has one), then per
    run its prediction, the wrong voxels (one run with ground truth) and its uncertainty."""
    single = len(runs) == 1
    has_gt = data.label is not None
    columns = ["image"] + (["ground truth"] if has_gt else [])
    for run in runs:
        d = case_mean_dice(run.metrics, data.case_id)
        score = f" (Dice {100 * d:.1f}%)" if d is not None else ""
        prefix = "" if single else f"{run.name}: "
        wrong = ["wrong voxels"] if single and has_gt else []
        columns += [f"{prefix}prediction{score}", *wrong, f"{prefix}uncertainty"]
    n_rows, n_cols = len(planes), len(columns)
    image = data.image[0]
    views = [_display(_cut(image, plane), data, plane) for plane in planes]
    # Rows as tall as their planes are drawn (height x pixel aspect / width), so that differently
    # shaped planes of a 3D case are not separated by wide blank bands.
    ratios = [min(3.0, max(0.25, v[0].shape[0] * v[1] / v[0].shape[1])) for v in views]
    panel = 2.1
    fig = new_figure(panel * n_cols + 0.9, panel * sum(ratios) + 1.0)
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={"height_ratios": ratios}))
    heat = None
    for r, plane in enumerate(planes):
        img, aspect, origin = views[r]
        lo, hi = _grey(img)
        gt = _display(_cut(data.label, plane), data, plane)[0] if data.label is not None else None

        def base(
            ax: Axes, img: np.ndarray = img, aspect: float = aspect, origin: str = origin, lo: float = lo, hi: float = hi
        ) -> None:
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin, interpolation="nearest")

        panels = [(None, "image")]
        if gt is not None:
            panels.append((gt, "label"))
        for pred in preds:
            p = _display(_cut(pred.label, plane), data, plane)[0] if pred.label is not None else None
            e = _display(_cut(pred.entropy, plane), data, plane)[0] if pred.entropy is not None else None
            panels.append((p, "label" if p is not None else pred.note))
            if single and has_gt:
                wrong = (p != gt).astype(np.uint8) if p is not None and gt is not None else None
                panels.append((wrong, "wrong"))
            panels.append((e, "heat" if e is not None else pred.note))
        for c, (arr, kind) in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            base(ax)
            if kind == "heat" and arr is not None:
                # Drawn over the image, fading out where the network is certain, so the uncertain
                # voxels are seen against the anatomy.
                alpha = np.clip(arr * 4.0, 0.0, 0.9)
                heat = ax.imshow(arr, cmap="plasma", vmin=0, vmax=1, alpha=alpha, aspect=aspect, origin=origin,
                                 interpolation="nearest")
                continue
            if kind == "label" and arr is not None:
                ax.imshow(_label_rgba(arr), aspect=aspect, origin=origin, interpolation="nearest")
            elif kind == "wrong" and arr is not None:
                ax.imshow(_wrong_rgba(arr), aspect=aspect, origin=origin, interpolation="nearest")
            elif arr is None and kind not in ("image", "label", "wrong", "heat"):
                ax.text(0.5, 0.5, kind, transform=ax.transAxes, ha="center", va="center", fontsize=7, wrap=True)
        if plane.axis is not None:
            n_slices = data.image.shape[plane.axis + 1]
            axes[r, 0].set_ylabel(f"axis {plane.axis}, slice {plane.index + 1}/{n_slices}", fontsize=8)
    for c, name in enumerate(columns):
        axes[0, c].set_title(name, fontsize=8.5)
    if heat is not None:
        from matplotlib.cm import ScalarMappable

        # The bar of the colours alone: the panels' per-voxel transparency would wash it out.
        bar = fig.colorbar(ScalarMappable(heat.norm, heat.cmap), ax=axes[:, -1].tolist(), shrink=0.8, pad=0.02)
        bar.set_label("entropy / ln K", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    handles = _class_handles(runs[0], wrong=single and has_gt)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return png_bytes(fig)


def _wrong_rgba(wrong: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*wrong.shape, 4), dtype=np.float32)
    rgba[wrong > 0] = [1.0, 0.9, 0.0, 0.85]  # yellow: visible on grey, and no class uses it
    return rgba


def _class_handles(run: RunData, wrong: bool) -> list[Patch]:
    handles = [
        Patch(facecolor=CLASS_COLORS[(c - 1) % len(CLASS_COLORS)], alpha=0.7, label=name)
        for c, name in enumerate(run.class_names, start=1)
    ]
    if not handles or not wrong:
        return handles
    return [*handles, Patch(facecolor="#ffe600", label="wrong voxel")]


def case_figures(runs: Sequence[RunData], device: str | None = None) -> list[CaseFigure]:
    """Figures of the first run's best, median and worst cases, with every run's prediction.

    Args:
        runs: the runs of the report (the first one picks the cases and loads the images).
        device: inference device (default: each run's ``train.device``).

    Returns:
        One :class:`CaseFigure` per picked case.
    """
    first = runs[0]
    picks = pick_cases(first.metrics)
    if not picks:
        return []
    split_cases = getattr(load_splits(RunPaths(first.root).splits), first.split, [])
    by_id = {c.case_id: c for c in split_cases}
    models = []
    for run in runs:
        cfg, net, _ = load_weights(run.root, run.metrics.get("checkpoint") or "best")
        dev = select_device(device or cfg.train.device)
        models.append((net.to(dev), dev))
    figures = []
    for role, case_id, dice in picks:
        case = by_id.get(case_id)
        if case is None:
            raise UncolError(f"{first.root}: case {case_id} of metrics_{first.split}.json is not in splits.json")
        data = load_case(case, first.cfg.data)
        preds = [predict_case(net, data, run.cfg, dev) for run, (net, dev) in zip(runs, models, strict=True)]
        ref = data.label if data.label is not None and data.label.any() else preds[0].label
        planes = pick_planes(ref if ref is not None else np.zeros(data.image.shape[1:]), first.cfg.spatial_dims,
                             data.slice_axis)
        title = f"{role} case of {first.name}: {case_id} (mean Dice {100 * dice:.1f}%)"
        caption = (
            f"The {role} case by mean Dice over the foreground classes" + ("" if len(runs) == 1 else f" of {first.name}")
            + ("; slice with the most foreground." if first.cfg.spatial_dims == 2 or data.label.ndim == 2
               else "; on each axis, the slice with the most foreground.")
        )
        figures.append(CaseFigure(role, case_id, caption, render_case(data, planes, preds, runs, title)))
    return figures
