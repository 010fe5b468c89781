"""Does ``uncol suggest`` choose better patients to annotate than chance? ACDC, 3 seeds, one budget.

For each seed ``s`` (``train.seed``):

1. ``initial_s<s>``: supervised training on the first ``--initial`` (3) training patients in list order
   (the literature's 5% ACDC split);
2. ``uncol suggest`` on its unlabeled split ranks the other training patients; the highest-ranked
   ``--total - --initial`` (4) join the initial 3 in ``lists/active_s<s>.list``;
3. as many patients drawn at random (seeded by ``s``) from the same unlabeled patients join the initial
   3 in ``lists/random_s<s>.list``;
4. ``active_s<s>`` and ``random_s<s>``: supervised training on each list (``split.labeled_list``),
   with the same steps and seed, scored on the test volumes.

Reading of the issue ("label the 7 patients it ranks highest after a 3-patient run, against 7 random
patients, same budget"): 7 is the labeled total, as in ACDC's usual 3- and 7-patient settings, so the
3-patient run's patients stay labeled and the suggestion picks the 4 added to them; the random arm adds
4 random patients to the same 3, so the two arms differ in the selection only. ``--total 10`` runs
the other reading (3 + 7 newly labeled patients).

Protocol: ``configs/acdc_supervised.yaml`` under the ACDC grid's CPU protocol (128 x 128 slices, one
thread, 12 validations per run), every run with the step count that the grid calibrated for
supervised training on 7 patients (``runs/benchmark/acdc/grid_state.json``, ``supervised/7``), or
``--iterations``. The grid's finished 3-patient runs can serve as the initial runs
(``--initial-runs runs/benchmark/acdc/runs``; they are only read, and one without its best checkpoint, as
a run restored from the grid's archive, is trained again here).

    python benchmarks/active_selection.py                        # start, or continue where it stopped
    python benchmarks/active_selection.py --iterations 6929 --initial-runs runs/benchmark/acdc/runs

Finished runs are skipped and interrupted ones resumed, so the same command continues the study.
Outputs in ``--out`` (default ``runs/active_selection``): ``runs/``, ``suggestions/``, ``lists/``,
``results.csv`` (a row per run) and ``results.md`` (mean ± std over seeds, and the paired difference
active - random per test case with a bootstrap interval).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uncol import api
from uncol.atomic import atomic_write_text
from uncol.benchmark.plan import RunStatus, run_status
from uncol.benchmark.stats import bootstrap_mean, mean_std, paired_differences, pool_seeds
from uncol.data.labeled_list import read_labeled_list, write_labeled_list
from uncol.data.splits import load_splits
from uncol.errors import UncolError
from uncol.report.overlays import case_mean_dice
from uncol.runs import RunPaths
from uncol.suggest import suggest

#: The ACDC grid's CPU protocol (benchmarks/grids/acdc.yaml), before the study's own options.
PROTOCOL = ("train.threads=1", "train.device=cpu", "train.patch_size=[128, 128]")
ARMS = ("initial", "active", "random")


@dataclass(frozen=True)
class Study:
    """The study's options (see ``--help``)."""

    config: Path
    out: Path
    seeds: tuple[int, ...]
    initial: int
    total: int
    iterations: int
    validations: int
    overrides: tuple[str, ...]
    initial_runs: Path | None
    quiet: bool

    def run_dir(self, arm: str, seed: int) -> Path:
        """Where the run of ``arm`` and ``seed`` is (a grid's initial run when one is reused).

        A grid run is reused only when it is finished and still holds its best checkpoint, which
        ``uncol suggest`` reads: a run restored from a grid's archive keeps its records, not its weights.
        """
        if arm == "initial" and self.initial_runs is not None:
            grid_run = self.initial_runs / f"supervised_l{self.initial}_s{seed}"
            if run_status(grid_run) is RunStatus.FINISHED and RunPaths(grid_run).best.is_file():
                return grid_run
        return self.out / "runs" / f"{arm}_s{seed}"

    def list_path(self, arm: str, seed: int) -> Path:
        """The ``split.labeled_list`` file of the ``active`` or ``random`` run of ``seed``."""
        return self.out / "lists" / f"{arm}_s{seed}.list"

    def overrides_for(self, arm: str, seed: int) -> list[str]:
        """The config overrides of one run: the grid protocol, the study's steps and seed, its labeled patients."""
        split = [f"split.labeled={self.initial}", "split.labeled_order=list"] if arm == "initial" else [
            f"split.labeled_list={self.list_path(arm, seed)}"
        ]
        return [
            *PROTOCOL, f"train.iterations={self.iterations}",
            f"train.val_every={max(1, self.iterations // self.validations)}", f"train.seed={seed}",
            f"output_dir={self.out / 'runs'}", f"name={arm}_s{seed}", *split, *self.overrides,
        ]


def calibrated_iterations(grid_state: Path, total: int) -> int | None:
    """The grid's calibrated step count of supervised training on ``total`` patients, if it has one."""
    if not grid_state.is_file():
        return None
    try:
        entry = json.loads(grid_state.read_text())["calibration"][f"supervised/{total}"]
        return int(entry["iterations"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


def train(study: Study, arm: str, seed: int) -> Path:
    """Train one run unless it is finished (resuming an interrupted one); returns its folder."""
    run = study.run_dir(arm, seed)
    status = run_status(run)
    if status is RunStatus.FINISHED:
        print(f"{arm} seed {seed}: finished ({run})", flush=True)
        return run
    if status is RunStatus.NEW and run.exists():
        shutil.rmtree(run)  # files of a run killed before its first checkpoint: nothing to continue from
    print(f"{arm} seed {seed}: {'resumed' if status is RunStatus.RESUME else 'started'} ({study.iterations} steps)", flush=True)
    api.train(study.config, study.overrides_for(arm, seed), resume=status is RunStatus.RESUME, run_dir=run,
              evaluate_splits=("test",), show_progress=not study.quiet)
    if run_status(run) is not RunStatus.FINISHED:
        raise UncolError(f"{run}: training ended without a test evaluation")
    return run


def make_lists(study: Study, initial_run: Path, seed: int) -> None:
    """The active list (initial + top-ranked) and the random list (initial + drawn), unless written already."""
    added = study.total - study.initial
    active, random = study.list_path("active", seed), study.list_path("random", seed)
    if not active.is_file():
        res = suggest(initial_run, None, top=added, out=study.out / "suggestions" / f"s{seed}",
                      write_list=active, show_progress=not study.quiet)
        print(f"suggested for seed {seed}: {', '.join(g.group for g in res.top_groups)} ({res.csv})", flush=True)
    if not random.is_file():
        splits = load_splits(RunPaths(initial_run).splits)
        labeled = list(dict.fromkeys(c.group for c in splits.labeled))
        pool = list(dict.fromkeys(c.group for c in splits.unlabeled if c.label_path is not None))
        if len(pool) < added:
            raise UncolError(f"{initial_run}: {len(pool)} unlabeled patients with labels, {added} to draw")
        picks = [pool[i] for i in np.random.default_rng([seed, 7]).choice(len(pool), size=added, replace=False)]
        write_labeled_list(random, [(f"labeled in {initial_run}", labeled), (f"drawn at random (seed {seed})", picks)])
        print(f"drawn for seed {seed}: {', '.join(picks)}", flush=True)


def result_row(study: Study, arm: str, seed: int, run: Path) -> dict[str, Any]:
    """One run's row of ``results.csv``."""
    metrics = json.loads(RunPaths(run).metrics("test").read_text())
    mean = metrics["summary"]["mean"]
    groups = sorted({c.group for c in load_splits(RunPaths(run).splits).labeled})
    row: dict[str, Any] = {
        "arm": arm, "seed": seed, "run": str(run), "labeled_patients": len(groups), "patients": " ".join(groups),
        "iterations": json.loads(RunPaths(run).summary.read_text()).get("iterations"),
        "dice": mean["dice"]["mean"], "hd95": mean["hd95"]["mean"], "distance_unit": metrics.get("distance_unit", ""),
    }
    for cls, values in metrics["summary"].items():
        if cls != "mean":
            row[f"dice_{cls}"] = values["dice"]["mean"]
    return row


def case_dice(run: Path) -> dict[str, float | None]:
    """Per test case, the mean Dice over its foreground classes."""
    metrics = json.loads(RunPaths(run).metrics("test").read_text())
    return {c["case"]: case_mean_dice(metrics, c["case"]) for c in metrics.get("cases", [])}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def summary_markdown(study: Study, rows: Sequence[dict[str, Any]], diffs: Sequence[dict[str, float]]) -> str:
    """``results.md``: mean ± std of the test Dice per arm, per-seed values and the paired difference."""
    added = study.total - study.initial
    lines = [
        f"# Active selection on ACDC: {study.initial} + {added} patients chosen by uncol suggest vs at random",
        "",
        f"{len(study.seeds)} seed(s), {study.iterations} steps per run, test mean Dice (%) over RV, Myo, LV.",
        "",
        "| arm | labeled patients | Dice mean ± std | per seed |",
        "|---|---|---|---|",
    ]
    for arm in ARMS:
        values = [r["dice"] for r in rows if r["arm"] == arm and r["dice"] is not None]
        if not values:
            continue
        m, s = mean_std(values)
        n = next(r["labeled_patients"] for r in rows if r["arm"] == arm)
        spread = "" if s is None else f" ± {100 * s:.1f}"
        lines.append(f"| {arm} | {n} | {_pct(m)}{spread} | {', '.join(_pct(v) for v in values)} |")
    interval = bootstrap_mean(list(pool_seeds(diffs).values())) if diffs else None
    if interval is not None:
        lines += [
            "",
            f"Active - random, per test case (mean over seeds): {100 * interval.mean:+.2f} points of Dice, "
            f"95% bootstrap interval [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}] over {interval.n} cases.",
        ]
    return "\n".join(lines) + "\n"


def write_results(study: Study, rows: Sequence[dict[str, Any]], diffs: Sequence[dict[str, float]]) -> None:
    """Write ``results.csv`` and ``results.md`` atomically."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(study.out / "results.csv", buffer.getvalue())
    atomic_write_text(study.out / "results.md", summary_markdown(study, rows, diffs))


def run_study(study: Study) -> list[dict[str, Any]]:
    """Every seed's three runs (skipping finished ones), then ``results.csv`` and ``results.md``."""
    rows: list[dict[str, Any]] = []
    diffs: list[dict[str, float]] = []
    for seed in study.seeds:
        initial = train(study, "initial", seed)
        make_lists(study, initial, seed)
        runs = {"initial": initial, "active": train(study, "active", seed), "random": train(study, "random", seed)}
        expected = set(read_labeled_list(study.list_path("active", seed)))
        got = {c.group for c in load_splits(RunPaths(runs["active"]).splits).labeled}
        if got != expected:  # a run folder left from another list would compare the wrong patients
            raise UncolError(f"{runs['active']}: labels {sorted(got)}, the list names {sorted(expected)}")
        rows += [result_row(study, arm, seed, runs[arm]) for arm in ARMS]
        diffs.append(paired_differences(case_dice(runs["active"]), case_dice(runs["random"])))
    write_results(study, rows, diffs)
    print(f"results: {study.out / 'results.csv'}, {study.out / 'results.md'}", flush=True)
    return rows


def parse(argv: Sequence[str] | None) -> Study:
    """The study described by the command line (an error exits with status 2)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/acdc_supervised.yaml"))
    ap.add_argument("--out", type=Path, default=Path("runs/active_selection"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--initial", type=int, default=3, help="patients labeled in the initial run (first in list order)")
    ap.add_argument("--total", type=int, default=7, help="patients labeled after the selection, the initial ones included")
    ap.add_argument("--iterations", type=int, default=None,
                    help="steps of every run (default: the grid's calibrated supervised/TOTAL from --grid-state)")
    ap.add_argument("--grid-state", type=Path, default=Path("runs/benchmark/acdc/grid_state.json"))
    ap.add_argument("--validations", type=int, default=12, help="validations per run (train.val_every)")
    ap.add_argument("--initial-runs", type=Path, default=None,
                    help="a grid's run folder whose finished supervised_l<INITIAL>_s<SEED> runs are the initial runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="further config overrides for every run, e.g. data.root=/data/ACDC")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not 0 < a.initial < a.total:
        ap.error(f"need 0 < --initial < --total, got {a.initial} and {a.total}")
    iterations = a.iterations or calibrated_iterations(a.grid_state, a.total)
    if iterations is None:
        ap.error(f"{a.grid_state} has no calibrated supervised/{a.total} step count: give --iterations")
    return Study(a.config, a.out, tuple(a.seeds), a.initial, a.total, iterations, max(1, a.validations),
                 tuple(a.overrides), a.initial_runs, a.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; returns the exit status (2 on an uncol error, named on stderr)."""
    try:
        run_study(parse(argv))
    except UncolError as e:
        print(f"active_selection: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
