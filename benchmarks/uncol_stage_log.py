"""What UnCoL runs did, stage by stage, from their run folders (issue 13).

Usage::

    python benchmarks/uncol_stage_log.py RUN [RUN ...] [--parts 3] [--json stages.json]

For each finished UnCoL run folder it reads ``summary.json``, ``log.csv``, ``val.csv`` and
``metrics_test.json`` (nothing is trained or predicted) and reports:

* test Dice, steps (stage 1 + stage 2), CPU minutes and the images seen (labeled + unlabeled);
* validation Dice at the last validation of stage 1 and the best and last of the run, so a drop at
  the stage switch, or a stage 2 that never beats stage 1, shows;
* stage 2 split into ``--parts`` equal parts of its steps: the mean of each logged pseudo-label
  figure over the part: the entropy threshold, the confident fractions of the foundation teacher
  (``confident_general``), the EMA teacher (``confident_specialized``) and the fused pseudo-label
  (``confident_fused``), and which teacher supervised the pseudo-labelled pixels (``frac_general``:
  the foundation teacher alone, ``frac_special``: the EMA teacher alone, ``frac_both``, ``frac_none``).

Runs of other methods or still training are refused with the reason. Not a test: it prints
figures for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from uncol.methods.registry import summary_images_trained
from uncol.report.rundata import read_csv_columns
from uncol.runs import load_run_config

#: Per-step pseudo-label figures of UnCoL's stage 2, in report order (``uncol.methods.uncol.method``).
STAGE2_COLUMNS = (
    "threshold", "confident_general", "confident_specialized", "confident_fused",
    "frac_general", "frac_special", "frac_both", "frac_none",
)


def _read_columns(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        raise ValueError(f"{path}: missing")
    return read_csv_columns(path)


def stage_means(columns: dict[str, list[float]], parts: int) -> list[dict[str, float]]:
    """Means of :data:`STAGE2_COLUMNS` over ``parts`` consecutive, equal parts of the stage-2 rows.

    Args:
        columns: a run's ``log.csv`` as ``{column: values}`` (:func:`uncol.report.rundata.read_csv_columns`).
        parts: how many parts.

    Each part also gets ``first_step`` and ``last_step``. Empty values (a figure a run did not log)
    are left out of the mean; a figure never logged in a part is ``nan``.
    """
    stage2 = [i for i, stage in enumerate(columns.get("stage", [])) if stage == 2.0]
    if not stage2:
        return []
    out = []
    for i in range(parts):
        chunk = stage2[len(stage2) * i // parts: len(stage2) * (i + 1) // parts]
        if not chunk:
            continue
        steps = columns["step"]
        part: dict[str, float] = {"first_step": int(steps[chunk[0]]), "last_step": int(steps[chunk[-1]])}
        for col in STAGE2_COLUMNS:
            logged = columns.get(col, [])
            values = [logged[r] for r in chunk if r < len(logged) and not math.isnan(logged[r])]
            part[col] = sum(values) / len(values) if values else math.nan
        out.append(part)
    return out


def summarise(run: Path, parts: int = 3) -> dict[str, Any]:
    """The figures of one finished UnCoL run folder (see the module docstring).

    Raises:
        ValueError: not a UnCoL run, not finished, or a file missing, naming the folder and file.
    """
    config_path = run / "config.yaml"
    if not config_path.exists():
        raise ValueError(f"{run}: no config.yaml: not a run folder")
    cfg = yaml.safe_load(config_path.read_text()) or {}
    method = (cfg.get("method") or {}).get("name")
    if method != "uncol":
        raise ValueError(f"{run}: a run of method {method!r}, not uncol")
    metrics_path = run / "metrics_test.json"
    summary_path = run / "summary.json"
    if not metrics_path.exists() or not summary_path.exists():
        raise ValueError(f"{run}: not finished (no metrics_test.json or summary.json)")
    summary = json.loads(summary_path.read_text())
    test = json.loads(metrics_path.read_text())["summary"]["mean"]["dice"]["mean"]
    log = _read_columns(run / "log.csv")
    # Columns of one CSV have equal lengths; a column the run never logged is empty.
    stages = zip(log.get("step", []), log.get("stage", []), strict=False)
    stage1_steps = [int(step) for step, stage in stages if stage == 1.0]
    last_stage1 = max(stage1_steps) if stage1_steps else 0
    val_columns = _read_columns(run / "val.csv")
    val = [
        (int(step), dice)
        for step, dice in zip(val_columns.get("step", []), val_columns.get("dice_mean", []), strict=False)
    ]
    before = [d for s, d in val if s <= last_stage1]
    best_step, best = max(val, key=lambda sv: sv[1]) if val else (None, math.nan)
    # The images the steps trained on (stage 1 does not read the unlabeled images drawn with it).
    trained = summary_images_trained(load_run_config(run), summary) or {}
    return {
        "run": str(run),
        "test_dice": test,
        "steps": summary.get("steps_done"),
        "stage1_steps": last_stage1,
        "cpu_minutes": summary.get("cpu_seconds", math.nan) / 60,
        "images_labeled": trained.get("labeled"),
        "images_unlabeled": trained.get("unlabeled"),
        "val_end_of_stage1": before[-1] if before else math.nan,
        "val_best": best,
        "val_best_step": best_step,
        "val_last": val[-1][1] if val else math.nan,
        "stage2": stage_means(log, parts),
    }


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def render(results: list[dict[str, Any]]) -> str:
    """Two Markdown tables: one row per run, then one row per run and stage-2 part."""
    lines = [
        "| run | test Dice % | steps (stage 1 + 2) | CPU min | images trained on (labeled + unlabeled) "
        "| val Dice % end of stage 1 | best (step) | last |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {Path(r['run']).name} | {_pct(r['test_dice'])} | {r['stage1_steps']} + "
            f"{(r['steps'] or 0) - r['stage1_steps']} | {r['cpu_minutes']:.1f} | {r['images_labeled']} + "
            f"{r['images_unlabeled']} | {_pct(r['val_end_of_stage1'])} | {_pct(r['val_best'])} "
            f"({r['val_best_step']}) | {_pct(r['val_last'])} |"
        )
    lines += [
        "",
        "| run | stage-2 steps | threshold (nats) | confident %: foundation / EMA / fused "
        "| supervised by %: foundation alone / EMA alone / both / neither |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for p in r["stage2"]:
            lines.append(
                f"| {Path(r['run']).name} | {p['first_step']}-{p['last_step']} | {p['threshold']:.3f} | "
                f"{_pct(p['confident_general'])} / {_pct(p['confident_specialized'])} / {_pct(p['confident_fused'])} | "
                f"{_pct(p['frac_general'])} / {_pct(p['frac_special'])} / {_pct(p['frac_both'])} / "
                f"{_pct(p['frac_none'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished UnCoL run folders")
    ap.add_argument("--parts", type=int, default=3, help="equal parts of stage 2 to average over")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    if a.parts < 1:
        ap.error("--parts must be >= 1")
    try:
        results = [summarise(run, a.parts) for run in a.runs]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(results))
    if a.json is not None:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
