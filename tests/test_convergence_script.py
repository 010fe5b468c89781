"""benchmarks/convergence.py: late gain of a validation curve, and the table over a grid folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_scripts import benchmark_scripts


def test_late_gain_compares_the_end_of_the_run_with_the_best_before() -> None:
    with benchmark_scripts("convergence") as (module,):
        rising = [(100, 0.40), (200, 0.50), (300, 0.55), (400, 0.60)]
        assert module.late_gain(rising, 400, tail=0.25) == pytest.approx(5.0)
        plateau = [(100, 0.40), (200, 0.62), (300, 0.60), (400, 0.61)]
        assert module.late_gain(plateau, 400, tail=0.25) == pytest.approx(-1.0)
        with pytest.raises(ValueError, match="no validation on both sides"):
            module.late_gain([(400, 0.6)], 400)


def _run(folder: Path, name: str, curve: list[tuple[int, float]], iterations: int) -> None:
    run = folder / "runs" / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"iterations": iterations, "cpu_seconds": 60.0}))
    (run / "metrics_test.json").write_text("{}")
    rows = ["step,dice_1,dice_mean"] + [f"{s},{d},{d}" for s, d in curve]
    (run / "val.csv").write_text("\n".join(rows) + "\n")


def test_table_over_a_grid_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, "bcp_l7_s0", [(100, 0.4), (200, 0.5), (300, 0.55), (400, 0.6)], 400)
    _run(tmp_path, "bcp_l7_s1", [(100, 0.5), (200, 0.61), (300, 0.6), (400, 0.6)], 400)
    _run(tmp_path, "supervised_l0.1_s0", [(100, 0.5), (200, 0.6), (300, 0.6), (400, 0.6)], 400)
    (tmp_path / "runs" / "unfinished_l7_s0").mkdir()
    with benchmark_scripts("convergence") as (module,):
        assert module.main([str(tmp_path), "--csv", str(tmp_path / "c.csv")]) == 0
        out = capsys.readouterr().out
        assert "| 7 | bcp | 2 | 400 | 1.00, 0.50 | 60.0, 61.0 | +5.0, -1.0 | 1/2 |" in out
        assert "| 0.1 | supervised | 1 |" in out
        assert "unfinished" not in out
        assert len((tmp_path / "c.csv").read_text().splitlines()) == 4
        assert module.main([str(tmp_path), "--methods", "mean_teacher"]) == 1
        assert module.main([str(tmp_path / "nothing")]) == 2
