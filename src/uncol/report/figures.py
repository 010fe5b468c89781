"""The report's plots, each returned as PNG bytes: box plots over cases, the reliability diagram,
risk-coverage curves and training curves.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never through
``pyplot``, so nothing depends on (or changes) the process's matplotlib backend or global figure list.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from uncol.report.rundata import RunData

__all__ = [
    "RUN_COLORS",
    "SCORE_LABELS",
    "box_plots",
    "new_figure",
    "png_bytes",
    "reliability_figure",
    "risk_coverage_figure",
    "training_figure",
]

#: One colour per compared run (colour-blind-safe Okabe-Ito palette).
RUN_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
#: Display names of the uncertainty scores, in the order they are drawn.
SCORE_LABELS = {
    "entropy": "entropy",
    "max_softmax": "maximum softmax (1 − max p)",
    "mc_variance": "MC-dropout variance",
    "mc_mutual_information": "MC-dropout mutual information",
}
_SCORE_STYLES = {"entropy": "-", "max_softmax": "--", "mc_variance": "-.", "mc_mutual_information": ":"}
_SCORE_COLORS = {"entropy": "#0072B2", "max_softmax": "#D55E00", "mc_variance": "#009E73",
                 "mc_mutual_information": "#CC79A7"}
_DPI = 110


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on an Agg canvas, with the report's style."""
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e3e3e3", linewidth=0.7)
    ax.set_axisbelow(True)


def png_bytes(fig: Figure) -> bytes:
    """Render a figure as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def run_color(i: int) -> str:
    """Colour of the ``i``-th compared run."""
    return RUN_COLORS[i % len(RUN_COLORS)]


def _case_values(run: RunData, metric: str) -> list[list[float]]:
    """Per foreground class, then the per-case mean over classes: the defined values over cases."""
    cases = run.metrics.get("cases", [])
    k = run.cfg.data.num_classes
    per_class: list[list[float]] = [[] for _ in range(1, k)]
    means: list[float] = []
    for case in cases:
        defined = []
        for c in range(1, k):
            v = case["metrics"].get(str(c), {}).get(metric)
            if v is not None:
                per_class[c - 1].append(float(v))
                defined.append(float(v))
        if defined:
            means.append(float(np.mean(defined)))
    return [*per_class, means]


def box_plots(runs: Sequence[RunData]) -> bytes:
    """Dice and HD95 over cases, per foreground class and for the per-case mean, one box per run.

    Every case is also drawn as a dot, since test sets are often small.
    """
    names = [*runs[0].class_names, "mean"]
    unit = runs[0].distance_unit
    fig = new_figure(10.0, 3.6)
    axes = fig.subplots(1, 2)
    width = 0.8 / len(runs)
    rng = np.random.default_rng(0)  # jitter of the dots, fixed so reports are reproducible
    for ax, metric, label, scale in ((axes[0], "dice", "Dice (%)", 100.0), (axes[1], "hd95", f"HD95 ({unit})", 1.0)):
        for i, run in enumerate(runs):
            values = _case_values(run, metric)[: len(names)]
            pos = np.arange(len(values)) + (i - (len(runs) - 1) / 2) * width
            data = [np.asarray(v) * scale for v in values]
            has = [j for j, d in enumerate(data) if d.size]
            if has:
                bp = ax.boxplot(
                    [data[j] for j in has], positions=pos[has], widths=width * 0.8, patch_artist=True,
                    showfliers=False, medianprops={"color": "black"},
                )
                for patch in bp["boxes"]:
                    patch.set_facecolor(run_color(i))
                    patch.set_alpha(0.35)
            for j in has:
                jitter = rng.uniform(-width * 0.25, width * 0.25, data[j].size)
                ax.plot(pos[j] + jitter, data[j], "o", ms=3, color=run_color(i), alpha=0.8)
            if len(runs) > 1:
                ax.plot([], [], "s", color=run_color(i), alpha=0.6, label=run.name)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel(label)
        _style(ax)
    axes[0].set_title("Dice per case (higher is better)")
    axes[1].set_title("HD95 per case (lower is better)")
    if len(runs) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=len(runs), fontsize=9,
                   frameon=False)
    return png_bytes(fig)


def _nan(values: Sequence[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values])


def reliability_figure(runs: Sequence[RunData]) -> bytes:
    """Accuracy against confidence per confidence bin (top), and the share of voxels per bin (bottom)."""
    fig = new_figure(4.5, 4.6)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1.2], sharex=True)
    top.plot([0, 1], [0, 1], "--", color="#888888", linewidth=1, label="perfect calibration")
    for i, run in enumerate(runs):
        rel = run.curves["reliability"]
        edges = np.asarray(rel["edges"], dtype=float)
        conf, acc = _nan(rel["confidence"]), _nan(rel["accuracy"])
        counts = np.asarray(rel["counts"], dtype=float)
        ok = ~np.isnan(conf)
        ece = rel.get("ece")
        label = f"{run.name} (ECE {ece:.4f})" if ece is not None else run.name
        top.plot(conf[ok], acc[ok], "o-", color=run_color(i), ms=4, linewidth=1.5, label=label)
        share = counts / counts.sum() if counts.sum() else counts
        centres = (edges[:-1] + edges[1:]) / 2
        w = (edges[1] - edges[0]) / max(1, len(runs))
        bottom.bar(centres + (i - (len(runs) - 1) / 2) * w, np.where(share > 0, share, np.nan), width=w,
                   color=run_color(i), alpha=0.7)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy of the bin's voxels")
    top.set_title("Reliability diagram (all voxels)")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    _style(top)
    bottom.set_yscale("log")
    bottom.set_ylabel("share of voxels")
    bottom.set_xlabel("confidence (largest class probability)")
    _style(bottom)
    return png_bytes(fig)


def _oracle_curve(error_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Risk of the oracle ordering (all right voxels first) on a coverage grid."""
    coverage = np.linspace(1e-3, 1.0, 400)
    right = 1.0 - error_rate
    return coverage, np.where(coverage <= right, 0.0, (coverage - right) / coverage)


def _zoom_start(runs: Sequence[RunData]) -> float:
    """Left end of the zoomed coverage axis: where the curves start to rise.

    Segmentation errors are a few percent of the voxels, so risk stays near 0 over most of the
    coverage range; the zoom shows the last ``5 x`` the largest error rate (at least 10%).
    """
    rates = [
        c.get("error_rate") or 0.0 for r in runs for c in r.curves.get("risk_coverage", {}).values()
    ]
    span = min(1.0, max(0.1, 5 * max(rates, default=0.0)))
    return max(0.0, math.floor((1.0 - span) * 20) / 20)


def _draw_curves(ax: Axes, run: RunData, start: float) -> None:
    curves = run.curves.get("risk_coverage", {})
    error_rate = None
    top = 0.0
    for name in SCORE_LABELS:
        c = curves.get(name)
        if not c or not c["coverage"]:
            continue
        error_rate = c.get("error_rate")
        aurc = c.get("aurc")
        label = SCORE_LABELS[name] + (f" (AURC {aurc:.4f})" if aurc is not None else "")
        ax.plot(c["coverage"], c["risk"], _SCORE_STYLES[name], color=_SCORE_COLORS[name], linewidth=1.6, label=label)
        top = max(top, max(c["risk"]))
    if error_rate is not None:
        cov, risk = _oracle_curve(error_rate)
        ax.plot(cov, risk, color="#999999", linewidth=1, label="oracle (wrong voxels dropped first)")
        ax.axhline(error_rate, color="#999999", linewidth=0.8, linestyle=":", label="no selection (error rate)")
    ax.set_xlim(start, 1)
    ax.set_ylim(0, max(top, error_rate or 0.0) * 1.08 or 1.0)
    _style(ax)


def risk_coverage_figure(runs: Sequence[RunData]) -> bytes:
    """Risk-coverage curves of every uncertainty score: one column per run (shared risk axis), the
    whole coverage range above and its high-coverage end, where the curves differ, below."""
    n = len(runs)
    start = _zoom_start(runs)
    n_rows = 2 if start > 0 else 1  # with error rates above 20% the whole range is the interesting part
    fig = new_figure(min(4.6 * n, 13.0) if n > 1 else 6.4, 3.8 * n_rows)
    axes = np.atleast_2d(fig.subplots(n_rows, n, sharey="row", squeeze=False))
    for j, run in enumerate(runs):
        _draw_curves(axes[0, j], run, 0.0)
        axes[0, j].set_title(run.name if n > 1 else "Risk-coverage (least uncertain voxels kept first)", fontsize=10)
        axes[0, j].legend(loc="upper left", fontsize=7.5, frameon=False)
        if n_rows == 2:
            _draw_curves(axes[1, j], run, start)
            axes[1, j].set_title(f"Zoom on the high-coverage end ({start:.2f} to 1)", fontsize=10)
        for row in range(n_rows):
            axes[row, j].set_xlabel("coverage (share of voxels kept)")
    for row in range(n_rows):
        axes[row, 0].set_ylabel("risk (error rate of kept voxels)")
    return png_bytes(fig)


def _smooth(values: np.ndarray, points: int) -> np.ndarray:
    """Running mean over ``points`` rows (the logged losses of single batches are noisy)."""
    if points <= 1 or values.size < points:
        return values
    kernel = np.ones(points) / points
    padded = np.concatenate([np.full(points - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _stage_switches(run: RunData) -> list[float]:
    stage, steps = run.log.get("stage"), run.log.get("step")
    if not stage or not steps:
        return []
    return [steps[j] for j in range(1, len(stage)) if stage[j] != stage[j - 1] and not math.isnan(stage[j])]


def training_figure(runs: Sequence[RunData]) -> bytes:
    """Training losses from ``log.csv`` (left) and validation Dice from ``val.csv`` (right)."""
    fig = new_figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    single = len(runs) == 1
    for i, run in enumerate(runs):
        steps = np.asarray(run.log.get("step", []))
        terms = [c for c in run.log if c.startswith("loss")] if single else (["loss"] if "loss" in run.log else [])
        window = max(1, steps.size // 40)
        for j, term in enumerate(terms):
            values = np.asarray(run.log[term])
            color = run_color(i) if not single else RUN_COLORS[j % len(RUN_COLORS)]
            label = term if single else run.name
            left.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            left.plot(steps, _smooth(values, window), color=color, linewidth=1.8 if term == "loss" else 1.2, label=label)
        for s in _stage_switches(run):
            left.axvline(s, color=run_color(i) if not single else "#777777", linestyle="--", linewidth=0.8)
        vsteps = np.asarray(run.val.get("step", []))
        if vsteps.size:
            cols = [c for c in run.val if c.startswith("dice_") and c != "dice_mean"] if single else []
            for j, col in enumerate(cols):
                cid = col.removeprefix("dice_")
                name = run.class_names[int(cid) - 1] if cid.isdigit() and int(cid) - 1 < len(run.class_names) else col
                right.plot(vsteps, np.asarray(run.val[col]) * 100, ".-" if vsteps.size < 30 else "-",
                           color=RUN_COLORS[(j + 1) % len(RUN_COLORS)], linewidth=1, alpha=0.8, label=name)
            if "dice_mean" in run.val:
                right.plot(vsteps, np.asarray(run.val["dice_mean"]) * 100, "o-", ms=3, color=run_color(i) if not single else "black",
                           linewidth=1.8, label="mean" if single else run.name)
            best = (run.summary or {}).get("best_step")
            if best is None and run.metrics.get("checkpoint") == "best":
                best = run.metrics.get("checkpoint_step")  # a run without summary.json (still training)
            if best is not None:
                right.axvline(best, color=run_color(i) if not single else "#777777", linestyle=":", linewidth=1)
    left.set_title("Training loss (faint: logged values; bold: running mean)")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    right.set_title("Validation Dice (dotted line: selected step)")
    right.set_xlabel("step")
    right.set_ylabel("Dice (%)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, frameon=False)
    if any(_stage_switches(r) for r in runs):
        left.text(0.99, 0.97, "dashed: stage switch", transform=left.transAxes, ha="right", va="top", fontsize=8)
    return png_bytes(fig)
