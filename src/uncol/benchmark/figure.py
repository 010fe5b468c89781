"""The grid's figure: test Dice against the labeled amount, one line per method, with the seed spread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from uncol.atomic import atomic_write
from uncol.benchmark.aggregate import group_runs
from uncol.benchmark.stats import mean_std
from uncol.benchmark.tables import format_labeled_cell


def plot_dice_vs_labeled(
    rows: Sequence[dict[str, Any]], methods: Sequence[str], path: Path, title: str
) -> Path:
    """Draw mean test Dice over seeds per method and labeled amount, ± the seeds' std, each seed a dot.

    Args:
        rows: per-case rows (``results.csv``).
        methods: method entries in legend order (those without finished runs are left out).
        path: the PNG to write (atomically).
        title: figure title.

    Returns:
        ``path``.
    """
    # The object-oriented API with the Agg canvas leaves pyplot's global state (and backend) alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = list(group_runs(rows).values())
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs_all = sorted({r.labeled for r in runs})
    log_x = bool(xs_all) and max(xs_all) / min(xs_all) >= 8
    shown = [m for m in methods if any(r.method == m and r.mean("dice") is not None for r in runs)]
    for i, method in enumerate(shown):
        # Methods measured at the same labeled amount are drawn side by side, not on top of each other.
        shift = _shifter(i - (len(shown) - 1) / 2, xs_all, log_x)
        mine = [r for r in runs if r.method == method and r.mean("dice") is not None]
        xs = sorted({r.labeled for r in mine})
        means, stds = [], []
        for x in xs:
            m, s = mean_std([r.mean("dice") * 100 for r in mine if r.labeled == x])
            means.append(m)
            stds.append(s or 0.0)
        line = ax.errorbar([shift(x) for x in xs], means, yerr=stds, marker="o", capsize=3, label=method)
        ax.scatter([shift(r.labeled) for r in mine], [r.mean("dice") * 100 for r in mine], s=12, alpha=0.4,
                   color=line.lines[0].get_color())
    if log_x:
        ax.set_xscale("log")
    if xs_all:
        ax.set_xticks(xs_all)
        ax.set_xticklabels([format_labeled_cell(x) for x in xs_all])
        ax.minorticks_off()
    counts = bool(xs_all) and max(xs_all) > 1
    ax.set_xlabel("labeled training patients" if counts else "labeled share of the training cases")
    ax.set_ylabel("test Dice (%), mean over classes and cases")
    ax.set_title(f"{title}\nmean ± std over seeds; dots: single seeds")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def _shifter(position: float, xs: Sequence[float], log_x: bool) -> Callable[[float], float]:
    """Horizontal offset of the ``position``-th method from the centre: a factor on a log axis."""
    if log_x:
        return lambda x: x * 1.04**position
    span = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
    return lambda x: x + 0.012 * span * position
