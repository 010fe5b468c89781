"""Markdown tables of a grid: mean ± std over seeds, and paired differences to the reference method.

Every number comes from the per-case rows of ``results.csv``. A run's headline value is the mean
over test cases of each case's mean over foreground classes. Cells of runs that are missing (not yet
finished, or without the reference run to pair with) show an em dash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from uncol.benchmark.aggregate import RunResult, group_runs
from uncol.benchmark.stats import (
    BOOTSTRAP_RESAMPLES,
    Interval,
    bootstrap_mean,
    mean_std,
    paired_differences,
    pool_seeds,
)

MISSING = "—"
Cell = tuple[float, str]  # (labeled, method)


def format_labeled_cell(value: float) -> str:
    """A labeled amount for a table: a count as is, a ratio in percent."""
    return f"{value:g}" if value > 1 else f"{value * 100:g}%"


def _fmt_mean_std(values: Sequence[float], scale: float, digits: int) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return MISSING
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _fmt_interval(iv: Interval | None, with_n: bool = False) -> str:
    if iv is None:
        return MISSING
    text = f"{iv.mean * 100:+.2f} [{iv.low * 100:+.2f}, {iv.high * 100:+.2f}]"
    return f"{text}, n={iv.n}" if with_n else text


def _fmt_count(values: Sequence[float | None]) -> str:
    kept = [v for v in values if v is not None]
    return f"{sum(kept) / len(kept):,.0f}" if kept else MISSING


def _metric_values(runs: Sequence[RunResult], metric: str) -> list[float]:
    return [v for v in (r.mean(metric) for r in runs) if v is not None]


def _fmt_range(values: Sequence[float | None]) -> str:
    kept = [v for v in values if v is not None]
    if not kept:
        return MISSING
    low, high = min(kept), max(kept)
    return f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"


def images_trained_line(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> str:
    """One sentence: images a run of each method trained on (the range over its finished runs), and the
    images drawn into its batches where a stage left some of them unused."""
    runs = list(group_runs(rows).values())
    parts = []
    for m in methods:
        mine = [r for r in runs if r.method == m]
        if not mine:
            parts.append(f"{m} {MISSING}")
            continue
        trained = _fmt_pair([r.trained_labeled for r in mine], [r.trained_unlabeled for r in mine])
        drawn = _fmt_pair([r.images_labeled for r in mine], [r.images_unlabeled for r in mine])
        parts.append(f"{m} {trained}" + ("" if drawn == trained else f" (drawn: {drawn})"))
    return "Images trained on per run (range over the finished runs): " + "; ".join(parts) + "."


def _fmt_pair(labeled: Sequence[int | None], unlabeled: Sequence[int | None]) -> str:
    return f"{_fmt_range(labeled)} labeled + {_fmt_range(unlabeled)} unlabeled"


def metrics_table(
    rows: Sequence[dict[str, Any]],
    cells: Sequence[Cell],
    seeds: Sequence[int],
    planned: Mapping[Cell, int] | None = None,
) -> list[str]:
    """Lines of the table of mean ± std over seeds, one row per (labeled, method); ``planned`` gives the runs
    a cell plans when an entry runs at fewer than all ``seeds``."""
    runs = group_runs(rows)
    lines = [
        "| labeled | method | seeds | Dice (%) | Jaccard (%) | HD95 | ASD | iterations | best step | CPU min | "
        "images trained on (labeled + unlabeled) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for labeled, method in cells:
        mine = [runs[(labeled, method, s)] for s in seeds if (labeled, method, s) in runs]
        cpu = [r.cpu_seconds / 60 for r in mine if r.cpu_seconds is not None]
        images = f"{_fmt_count([r.trained_labeled for r in mine])} + {_fmt_count([r.trained_unlabeled for r in mine])}"
        lines.append(
            f"| {format_labeled_cell(labeled)} | {method} | {len(mine)}/{(planned or {}).get((labeled, method), len(seeds))} "
            f"| {_fmt_mean_std(_metric_values(mine, 'dice'), 100, 2)} "
            f"| {_fmt_mean_std(_metric_values(mine, 'jaccard'), 100, 2)} "
            f"| {_fmt_mean_std(_metric_values(mine, 'hd95'), 1, 2)} "
            f"| {_fmt_mean_std(_metric_values(mine, 'asd'), 1, 2)} "
            f"| {_fmt_count([r.iterations for r in mine])} "
            f"| {_fmt_best_steps(mine)} "
            f"| {_fmt_mean_std(cpu, 1, 1) if cpu else MISSING} "
            f"| {images if mine else MISSING} |"
        )
    return lines


def _fmt_best_steps(runs: Sequence[RunResult]) -> str:
    """Where each seed's validation-selected checkpoint was, as steps: a best step near the last step
    means the run was still improving when its budget ended."""
    steps = [r.best_step for r in runs if r.best_step not in (None, "")]
    return ", ".join(f"{int(float(s)):,}" for s in steps) if steps else MISSING


def paired_table(
    rows: Sequence[dict[str, Any]], cells: Sequence[Cell], seeds: Sequence[int], reference: str
) -> list[str]:
    """Lines of the table of Dice differences to ``reference``, per seed and pooled over seeds."""
    runs = group_runs(rows)
    lines = [
        "| labeled | method | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled over seeds |",
        "|---|---|" + "---|" * (len(seeds) + 1),
    ]
    planned_cells = set(cells)
    for labeled, method in cells:
        # A labeled amount the reference is not planned for has nothing to pair with (supervised training on
        # all labels against a semi-supervised reference); a row of dashes would read as runs still missing.
        if method == reference or (labeled, reference) not in planned_cells:
            continue
        per_seed = []
        texts = []
        for s in seeds:
            mine, ref = runs.get((labeled, method, s)), runs.get((labeled, reference, s))
            if mine is None or ref is None:
                texts.append(MISSING)
                continue
            diffs = paired_differences(mine.cases.get("dice", {}), ref.cases.get("dice", {}))
            per_seed.append(diffs)
            texts.append(_fmt_interval(bootstrap_mean(list(diffs.values()))))
        pooled = bootstrap_mean(list(pool_seeds(per_seed).values())) if per_seed else None
        lines.append(
            f"| {format_labeled_cell(labeled)} | {method} | " + " | ".join(texts)
            + f" | {_fmt_interval(pooled, with_n=True)} |"
        )
    return lines


def render_tables(
    rows: Sequence[dict[str, Any]],
    *,
    dataset: str,
    cells: Sequence[Cell],
    seeds: Sequence[int],
    reference: str | None,
    budget_note: str,
    planned: Mapping[Cell, int] | None = None,
    compare_to: Sequence[str] = (),
) -> str:
    """The whole ``tables.md``.

    Args:
        rows: per-case rows (``results.csv``).
        dataset: the grid's name.
        cells: the planned (labeled, method) pairs, in table order.
        seeds: the grid's seeds.
        reference: the method of the paired differences, or ``None`` for no paired table.
        budget_note: the sentence stating the CPU budget (see ``uncol.benchmark.runner``).
        planned: runs planned per cell, where fewer than ``len(seeds)`` (``methods.<entry>.seeds``).
        compare_to: further methods with a paired-difference table of their own (grid key ``compare_to``).
    """
    methods = list(dict.fromkeys(m for _, m in cells))
    conventions = sorted({str(r["convention"]) for r in rows if r.get("convention")})
    found_units = sorted({str(r["distance_unit"]) for r in rows if r.get("distance_unit")})
    if found_units:
        units = found_units[0] if len(found_units) == 1 else " or ".join(found_units)
    else:  # runs evaluated before reports named their unit
        units = "mm" if conventions == ["standard"] else "voxels (medpy) or mm (standard)"
    lines = [
        f"# Benchmark: {dataset}",
        "",
        budget_note,
        images_trained_line(rows, methods),
        "",
        "## Test split: mean ± std over seeds",
        "",
        "A run's value is the mean over test cases of each case's mean over foreground classes; the table "
        "gives the mean and the sample standard deviation of those run values over seeds (`seeds`: "
        f"finished/planned). Dice and Jaccard in %, HD95 and ASD in {units} "
        f"({', '.join(conventions) or 'no'} convention). CPU min: CPU time of the training loop.",
        "",
        *metrics_table(rows, cells, seeds, planned),
        "",
    ]
    if reference is None:
        lines += ["No reference method (grid key `reference`): no paired differences.", ""]
    for i, ref in enumerate(([reference] if reference is not None else []) + [c for c in compare_to if c != reference]):
        lines += [f"## Paired Dice difference to {ref}", ""]
        if i == 0:
            lines += [
                f"Test Dice of the method minus test Dice of {ref} trained on the same labeled cases with the "
                "same seed, in Dice points, as mean [95% interval]. Per seed: the mean over test cases of the "
                "case-level differences (case mean over classes); pooled: each case's difference averaged over "
                f"seeds first. Intervals: percentile bootstrap over test cases ({BOOTSTRAP_RESAMPLES} resamples, "
                "fixed seed); n = test cases. An interval that excludes 0 is a difference larger than the "
                "spread between test cases explains, for these seeds; it does not cover the variation over "
                "seeds (compare the per-seed columns).",
                "",
            ]
        else:
            lines += [f"As above, against {ref} (grid key `compare_to`).", ""]
        lines += [*paired_table(rows, cells, seeds, ref), ""]
    return "\n".join(lines)
