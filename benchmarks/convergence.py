"""Where each grid run stands against convergence, from its validation curve (issue 12).

Usage::

    python benchmarks/convergence.py GRID_FOLDER [--methods supervised bcp ...] [--tail 0.25] [--tol 1.0]
        [--csv out.csv]

``GRID_FOLDER`` is a grid's folder or its archive (``runs/benchmark/acdc`` or ``benchmarks/results/acdc``):
every finished run under ``runs/`` is read from ``summary.json`` and ``val.csv`` (nothing is trained).
For each run it reports the best validation step as a fraction of the run, the best validation Dice, and
the **late gain**: how much the best validation Dice of the last ``--tail`` of the steps improves on the best
before it, in Dice points. A run whose late gain is below ``--tol`` points had reached its plateau within
the budget ("plateau"); otherwise its validation curve was still rising when the budget ran out
("rising"), and its test Dice says what the method reaches within the budget, not at convergence.
Printed as a Markdown table with one row per (method, labeled) pair and the per-seed figures.

Not a test: it prints figures for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

from uncol.report.rundata import read_csv_columns
from uncol.runs import RunPaths


def read_validation(path: Path) -> list[tuple[int, float]]:
    """``(step, mean Dice)`` rows of a run's ``val.csv``, in step order."""
    val = read_csv_columns(path)
    return sorted((int(step), dice) for step, dice in zip(val["step"], val["dice_mean"], strict=True))


def late_gain(curve: list[tuple[int, float]], iterations: int, tail: float = 0.25) -> float:
    """Best validation Dice of the last ``tail`` of the steps minus the best before it, in Dice points.

    Args:
        curve: ``(step, mean Dice in [0, 1])`` validations of one run.
        iterations: the run's step count.
        tail: the fraction of the steps counted as the end of the run.

    Returns:
        The gain in points (negative when the end of the run is below its earlier best).

    Raises:
        ValueError: no validation on one side of the split (too few validations for ``tail``).
    """
    cut = (1.0 - tail) * iterations
    before = [d for s, d in curve if s <= cut]
    after = [d for s, d in curve if s > cut]
    if not before or not after:
        raise ValueError(f"no validation on both sides of step {cut:.0f} of {iterations} (validations: {len(curve)})")
    return 100.0 * (max(after) - max(before))


def run_rows(folder: Path, methods: list[str] | None, tail: float) -> list[dict]:
    """One record per finished run of the grid folder (or archive) ``folder``."""
    rows = []
    for run in sorted((folder / "runs").iterdir()):
        paths = RunPaths(run)
        if not (paths.summary.exists() and paths.val_csv.exists() and paths.metrics("test").exists()):
            continue
        method, rest = run.name.rsplit("_l", 1)
        labeled, seed = rest.rsplit("_s", 1)
        if methods and method not in methods:
            continue
        s = json.loads(paths.summary.read_text())
        curve = read_validation(paths.val_csv)
        best_step, best = max(curve, key=lambda r: (r[1], -r[0]))
        gain = late_gain(curve, s["iterations"], tail)
        rows.append({
            "method": method, "labeled": labeled, "seed": int(seed), "iterations": s["iterations"],
            "best_step": best_step, "best_fraction": best_step / s["iterations"], "best_val": 100.0 * best,
            "last_val": 100.0 * curve[-1][1], "late_gain": gain, "cpu_min": s.get("cpu_seconds", 0.0) / 60.0,
        })
    return rows


def markdown(rows: list[dict], tol: float) -> str:
    """A table with one line per (method, labeled): per-seed best-step fraction, late gain and verdict."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["labeled"], r["method"])].append(r)
    out = [
        "| labeled | method | seeds | steps | best step / steps (per seed) | best val Dice % | late gain, points "
        "(per seed) | at plateau |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (labeled, method), rs in sorted(groups.items(), key=lambda kv: (float(kv[0][0]), kv[0][1])):
        rs.sort(key=lambda r: r["seed"])
        plateau = sum(r["late_gain"] < tol for r in rs)
        out.append(
            f"| {labeled} | {method} | {len(rs)} | {rs[0]['iterations']} | "
            + ", ".join(f"{r['best_fraction']:.2f}" for r in rs) + " | "
            + ", ".join(f"{r['best_val']:.1f}" for r in rs) + " | "
            + ", ".join(f"{r['late_gain']:+.1f}" for r in rs) + f" | {plateau}/{len(rs)} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a grid folder or its archive")
    parser.add_argument("--methods", nargs="*", help="grid entries to report (default: all)")
    parser.add_argument("--tail", type=float, default=0.25, help="the end of a run, as a fraction of its steps")
    parser.add_argument("--tol", type=float, default=1.0, help="late gain (points) below which a run is at plateau")
    parser.add_argument("--csv", type=Path, help="also write the per-run figures to this CSV")
    args = parser.parse_args(argv)
    if not (args.folder / "runs").is_dir():
        print(f"{args.folder}: no runs/ folder (expected a grid folder or its archive)", file=sys.stderr)
        return 2
    rows = run_rows(args.folder, args.methods, args.tail)
    if not rows:
        print(f"{args.folder}: no finished runs{' of ' + ', '.join(args.methods) if args.methods else ''}",
              file=sys.stderr)
        return 1
    print(f"Late gain: best validation Dice after {100 * (1 - args.tail):.0f}% of the steps minus the best before; "
          f"at plateau: late gain below {args.tol:g} point(s).\n")
    print(markdown(rows, args.tol))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
