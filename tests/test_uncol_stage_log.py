"""benchmarks/uncol_stage_log.py on a constructed run folder with known figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from benchmark_scripts import benchmark_scripts

COLUMNS = ["step", "lr", "stage", "loss", "threshold", "confident_general", "confident_specialized",
           "confident_fused", "frac_general", "frac_special", "frac_both", "frac_none"]


def _run(root: Path, method: str = "uncol", finished: bool = True) -> Path:
    run = root / f"{method}_run"
    run.mkdir()
    # Stage 1 = 4 of 10 steps, batches of 3 labeled (2 of them read in stage 2) and 2 unlabeled.
    (run / "config.yaml").write_text(yaml.safe_dump({
        "method": {"name": method, method: {"stage1_fraction": 0.4, "unlabeled_batch_size": 2,
                                            "stage2_labeled_batch": 2} if method == "uncol" else {}},
        "model": {"arch": "uncol_student2d"}, "teacher": {"name": "litemedsam"},
        "train": {"iterations": 10, "batch_size": 3},
    }))
    rows = [",".join(COLUMNS)]
    for step in range(1, 5):  # stage 1: no pseudo-label figures
        rows.append(f"{step},0.01,1,0.5,,,,,,,,")
    for step in range(5, 11):  # stage 2: 6 steps, the fused confidence rising 0.5 -> 1.0 by 0.1
        c = 0.5 + 0.1 * (step - 5)
        rows.append(f"{step},0.01,2,0.4,0.52,0.02,{c},{c},0.0,{c - 0.1},0.1,{1 - c}")
    (run / "log.csv").write_text("\n".join(rows) + "\n")
    (run / "val.csv").write_text("step,dice_mean\n2,0.5\n4,0.6\n7,0.55\n10,0.7\n")
    (run / "summary.json").write_text(json.dumps(
        {"steps_done": 10, "iterations": 10, "cpu_seconds": 120.0, "images_seen": {"labeled": 30, "unlabeled": 20}}
    ))
    if finished:
        (run / "metrics_test.json").write_text(json.dumps({"summary": {"mean": {"dice": {"mean": 0.75}}}}))
    return run


def test_stage_figures_of_a_run(tmp_path):
    with benchmark_scripts("uncol_stage_log") as (script,):
        result = script.summarise(_run(tmp_path), parts=2)
        table = script.render([result])
        assert script.main([str(_run(tmp_path, "bcp"))]) == 2
        assert script.main([str(tmp_path / "uncol_run"), "--json", str(tmp_path / "s.json")]) == 0
    assert result["stage1_steps"] == 4 and result["steps"] == 10 and result["cpu_minutes"] == 2.0
    assert result["val_end_of_stage1"] == 0.6 and result["val_best"] == 0.7 and result["val_best_step"] == 10
    first, second = result["stage2"]
    assert (first["first_step"], first["last_step"], second["first_step"], second["last_step"]) == (5, 7, 8, 10)
    assert first["confident_fused"] == pytest.approx(0.6) and second["confident_fused"] == pytest.approx(0.9)
    assert first["frac_none"] == pytest.approx(0.4) and first["threshold"] == pytest.approx(0.52)
    # images trained on: 4 x 3 + 6 x 2 labeled, 6 x 2 unlabeled (of 30 + 20 drawn)
    assert "| uncol_run | 75.0 | 4 + 6 | 2.0 | 24 + 12 | 60.0 | 70.0 (10) | 70.0 |" in table
    assert "| uncol_run | 5-7 | 0.520 | 2.0 / 60.0 / 60.0 | 0.0 / 50.0 / 10.0 / 40.0 |" in table
    assert json.loads((tmp_path / "s.json").read_text())[0]["test_dice"] == 0.75


def test_unfinished_runs_and_other_methods_are_refused(tmp_path):
    with benchmark_scripts("uncol_stage_log") as (script,):
        with pytest.raises(ValueError, match="not finished"):
            script.summarise(_run(tmp_path, finished=False))
        with pytest.raises(ValueError, match="method 'bcp', not uncol"):
            script.summarise(_run(tmp_path, "bcp"))
        assert script.stage_means({"step": [1.0], "stage": [1.0]}, 3) == []
        assert math.isnan(script.stage_means({"step": [1.0], "stage": [2.0], "threshold": [math.nan]}, 1)[0]["threshold"])
