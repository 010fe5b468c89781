"""The demo's two methods over seeds, with overrides: is UnCoL worth it on the demo's data, and where?

Trains ``uncol demo``'s configurations (:func:`uncol.demo_run.demo_config`) for each method and seed
with the same overrides (``--set``, both methods) and per-method ones (``--set-uncol``,
``--set-supervised``), then prints test Dice per seed, the mean, and UnCoL's difference to the U-Net
paired by seed, with each run's steps, CPU seconds and images trained on. A finished run is read back, an
interrupted one resumed: the command can be started again after a kill. One thread per run.

    python benchmarks/demo_probe.py --out runs/demo_probe/l2 --seeds 0 1 2 --set split.labeled=2 \
        --set-uncol method.uncol.foundation_refresh=1.0 --csv benchmarks/results/demo_probe_l2.csv

(``split.labeled=2``: two slabs; 1 would be the ratio 1.0, every training slab labeled.)

Not a test: it prints figures for benchmarks/RESULTS.md ("The demo").
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from uncol.demo_run import DEMO_METHODS, run_demo
from uncol.methods.registry import summary_images_trained
from uncol.runs import RunPaths, load_run_config


def _run(out: Path, method: str, seed: int, overrides: list[str], iterations: int | None) -> dict[str, Any]:
    """Train (or resume, or read back) one demo run; its test summary and training record."""
    run_dir = out / f"{method}_s{seed}"
    paths = RunPaths(run_dir)
    if not (paths.summary.exists() and paths.metrics("test").exists()):
        run_demo(out, name=run_dir.name, iterations=iterations, device="cpu", show_progress=False,
                 resume=paths.latest.exists(), method=method,
                 overrides=[f"train.seed={seed}", "train.threads=1", *overrides], evaluate_splits=("test",))
    summary = json.loads(paths.summary.read_text())
    test = json.loads(paths.metrics("test").read_text())["summary"]
    trained = summary_images_trained(load_run_config(run_dir), summary)
    return {"summary": summary, "test": test, "trained": trained}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the demo data, runs and teacher cache")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=DEMO_METHODS)
    p.add_argument("--set", dest="both", action="append", default=[], help="override for both methods")
    p.add_argument("--set-uncol", action="append", default=[], help="override for UnCoL only")
    p.add_argument("--set-supervised", action="append", default=[], help="override for the U-Net only")
    p.add_argument("--iterations-uncol", type=int, default=None, help="UnCoL steps (default: the demo's)")
    p.add_argument("--iterations-supervised", type=int, default=None, help="U-Net steps (default: the demo's)")
    p.add_argument("--csv", type=Path, default=None, help="write one row per run here")
    a = p.parse_args(argv)

    own = {"uncol": a.set_uncol, "supervised": a.set_supervised}
    steps = {"uncol": a.iterations_uncol, "supervised": a.iterations_supervised}
    rows: list[dict[str, Any]] = []
    for seed in a.seeds:  # seed-major: a killed probe leaves complete pairs behind it
        for method in a.methods:
            r = _run(a.out, method, seed, [*a.both, *own[method]], steps[method])
            s, t = r["summary"], r["test"]
            trained = r["trained"]
            row = {"method": method, "seed": seed, "steps": s["steps_done"], "best_step": s["best_step"],
                   "cpu_s": round(s["cpu_seconds"], 1), "labeled_trained": trained["labeled"],
                   "unlabeled_trained": trained["unlabeled"],
                   "overrides": " ".join([*a.both, *own[method]])}
            for key, value in t.items():
                if isinstance(value, dict) and value.get("dice", {}).get("mean") is not None:
                    row[f"dice_{key}"] = round(100 * value["dice"]["mean"], 2)
            rows.append(row)
            print(f"{method:10s} seed {seed}: test Dice {row.get('dice_mean', float('nan')):6.2f}%  "
                  f"{row['steps']} steps (best {row['best_step']})  {row['cpu_s']:.0f} CPU s  "
                  f"images trained on {row['labeled_trained']} + {row['unlabeled_trained']}", flush=True)
    if a.csv is not None:
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with a.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    by = {(r["method"], r["seed"]): r.get("dice_mean") for r in rows}
    for m in a.methods:
        vals = [by[(m, s)] for s in a.seeds if by.get((m, s)) is not None]
        if vals:
            print(f"{m:10s} mean {np.mean(vals):6.2f}% over {len(vals)} seeds (spread {np.ptp(vals):.2f})")
    if set(a.methods) == set(DEMO_METHODS):
        diffs = [by[("uncol", s)] - by[("supervised", s)] for s in a.seeds
                 if by.get(("uncol", s)) is not None and by.get(("supervised", s)) is not None]
        if diffs:
            print(f"UnCoL - U-Net paired by seed: {', '.join(f'{d:+.2f}' for d in diffs)}; mean {np.mean(diffs):+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
