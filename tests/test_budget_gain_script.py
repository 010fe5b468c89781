"""benchmarks/budget_gain.py: paired test Dice of one grid's results.csv against another's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_scripts import benchmark_scripts

COLUMNS = "dataset,labeled,method,seed,case,dice_mean,hd95_mean"


def _write(path: Path, rows: list[tuple[float, str, int, str, float]]) -> Path:
    lines = [COLUMNS] + [f"d,{lab},{m},{s},{c},{d}," for lab, m, s, c, d in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gain_pairs_runs_by_seed_and_case_and_skips_runs_of_one_grid_only(tmp_path: Path, capsys) -> None:
    cases = ["c0", "c1", "c2", "c3"]
    first = _write(tmp_path / "first.csv", [(0.1, "sup", s, c, 0.70) for s in (0, 1) for c in cases]
                   + [(0.1, "bcp", 0, c, 0.60) for c in cases])
    # seed 0 gains 2 points on every case, seed 1 gains 4; seed 2 and the method "mt" exist in the second grid only
    second = _write(tmp_path / "second.csv", [(0.1, "sup", 0, c, 0.72) for c in cases]
                    + [(0.1, "sup", 1, c, 0.74) for c in cases] + [(0.1, "sup", 2, c, 0.99) for c in cases]
                    + [(0.1, "mt", 0, c, 0.5) for c in cases] + [(0.1, "bcp", 0, c, 0.55) for c in cases])
    with benchmark_scripts("budget_gain") as (module,):
        gains = module.budget_gains(module.read_results(first), module.read_results(second))
        by_method = {g["method"]: g for g in gains}
        assert set(by_method) == {"sup", "bcp"}
        sup = by_method["sup"]
        assert sup["seeds"] == [0, 1] and sup["per_seed"] == pytest.approx([0.02, 0.04])
        assert sup["pooled"].mean == pytest.approx(0.03) and sup["pooled"].n == 4
        assert by_method["bcp"]["pooled"].mean == pytest.approx(-0.05)
        assert module.main([str(first), str(second), "--methods", "bcp"]) == 0
        out = capsys.readouterr().out
        assert "| 0.1 | bcp | 0 | -5.00 | -5.00 [-5.00, -5.00], n=4 |" in out and "| sup |" not in out


def test_a_file_that_is_not_a_grid_result_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with benchmark_scripts("budget_gain") as (module,):
        with pytest.raises(SystemExit, match="other.csv: not a grid's results.csv"):
            module.read_results(bad)
        with pytest.raises(SystemExit, match="missing.csv: no such file"):
            module.read_results(tmp_path / "missing.csv")
