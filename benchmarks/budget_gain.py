"""What a larger budget bought each method: paired test Dice of one grid against another (issue 12).

Usage::

    python benchmarks/budget_gain.py FIRST/results.csv SECOND/results.csv [--methods supervised bcp ...]

Both files are grids' ``results.csv`` (for example ``benchmarks/results/hippocampus`` and
``benchmarks/results/hippocampus_40min``: the same methods, labeled cases, seeds and test split at 20 and at
40 CPU minutes per run). For every (labeled amount, method) that both grids finished on at least one common
seed it prints the test Dice gain of SECOND over FIRST in points: per seed the mean over test cases of the
case-level differences, pooled over seeds as in the grid's own paired tables (each case's difference averaged
over the seeds first, 95% percentile bootstrap over test cases). Nothing is trained.

Not a test: it prints figures for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uncol.benchmark.aggregate import RunResult, group_runs
from uncol.benchmark.stats import bootstrap_mean, paired_differences, pool_seeds


def read_results(path: Path) -> dict[tuple[float, str, int], RunResult]:
    """A grid's ``results.csv`` as runs keyed by ``(labeled, method, seed)``; empty cells read as undefined."""
    if not path.is_file():
        raise SystemExit(f"budget_gain: {path}: no such file (a grid folder's results.csv)")
    with path.open(newline="") as fh:
        rows: list[dict[str, Any]] = [{k: (None if v == "" else v) for k, v in row.items()} for row in csv.DictReader(fh)]
    missing = {"labeled", "method", "seed", "case", "dice_mean"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"budget_gain: {path}: not a grid's results.csv (no column {', '.join(sorted(missing))})")
    return group_runs(rows)


def budget_gains(
    first: dict[tuple[float, str, int], RunResult],
    second: dict[tuple[float, str, int], RunResult],
    methods: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per (labeled, method) present in both: the seeds compared, the per-seed mean gains and the pooled
    interval (``uncol.benchmark.stats.Interval``), all as Dice fractions."""
    out = []
    for labeled, method in sorted({(lab, m) for lab, m, _ in second}):
        if methods and method not in methods:
            continue
        seeds, per_seed = [], []
        for (lab, m, seed), run in sorted(second.items()):
            before = first.get((lab, m, seed))
            if (lab, m) != (labeled, method) or before is None:
                continue
            diffs = paired_differences(run.cases.get("dice", {}), before.cases.get("dice", {}))
            if diffs:
                seeds.append(seed)
                per_seed.append(diffs)
        if per_seed:
            out.append({
                "labeled": labeled, "method": method, "seeds": seeds,
                "per_seed": [sum(d.values()) / len(d) for d in per_seed],
                "pooled": bootstrap_mean(list(pool_seeds(per_seed).values())),
            })
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="results.csv of the grid at the smaller budget")
    parser.add_argument("second", type=Path, help="results.csv of the grid at the larger budget")
    parser.add_argument("--methods", nargs="+", help="only these method entries")
    args = parser.parse_args(argv)
    gains = budget_gains(read_results(args.first), read_results(args.second), args.methods)
    if not gains:
        print("budget_gain: no (labeled, method, seed) finished in both grids", file=sys.stderr)
        return 1
    print(f"Test Dice of {args.second} minus {args.first}, points; same seed and test cases.\n")
    print("| labeled | method | seeds | gain per seed | pooled over seeds [95% interval] |")
    print("|---|---|---|---|---|")
    for g in gains:
        iv = g["pooled"]
        print(
            f"| {g['labeled']:g} | {g['method']} | {', '.join(map(str, g['seeds']))} "
            f"| {', '.join(f'{100 * d:+.2f}' for d in g['per_seed'])} "
            f"| {100 * iv.mean:+.2f} [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}], n={iv.n} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
