"""Benchmark grids: the grid file, bootstrap statistics, tables, and a tiny grid end to end with resume."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fixtures_data import make_hdf5_dataset
from uncol.benchmark import load_grid, run_grid
from uncol.benchmark.plan import RunStatus, plan_runs, run_config, run_status
from uncol.benchmark.stats import bootstrap_mean, paired_differences, pool_seeds
from uncol.benchmark.tables import MISSING, render_tables
from uncol.cli import main
from uncol.errors import ConfigError

# ----------------------------------------------------------------------------------------------------------
# The grid file


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def minimal_grid(config: Path, **changes: object) -> dict:
    grid = {
        "name": "tiny",
        "seeds": [0, 1],
        "labeled": [2, 3],
        "methods": {"supervised": {"config": str(config), "iterations": 3}},
    }
    grid.update(changes)
    return grid


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "c.yaml", {"train": {"iterations": 5}})


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"seeds": []}, "seeds"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"labeled": [2.5]}, "labeled"),
        ({"labeled": [0.1, 7]}, "labeled"),
        ({"budget": {"cpu_seconds": -1}}, "budget.cpu_seconds"),
        ({"budget": {"cpu_seconds": 10, "calibration_steps": 2}}, "budget.calibration_steps"),
        ({"budget": {"cpu_seconds": 10, "speed": 1}}, "budget.speed"),
        ({"budget": {"cpu_seconds": 10, "calibration_from": "no_such_grid"}}, "budget.calibration_from"),
        ({"budget": {"cpu_seconds": 10, "calibration_from": "c.yaml"}}, "budget.calibration_from"),
        ({"reference": "mean_teacher"}, "reference"),
        ({"compare_to": ["bcp"]}, "compare_to"),
        ({"compare_to": "supervised"}, "compare_to"),
        ({"set": ["train.iterations=7"]}, "set"),
        ({"set": ["train.seed=3"]}, "set"),
        ({"set": ["no_equals_sign"]}, "set"),
        ({"colour": "red"}, "colour"),
        ({"methods": {}}, "methods"),
        ({"methods": {"bad name": {"config": "c.yaml", "iterations": 1}}}, "methods.bad name"),
        ({"methods": {"m": {"config": "missing.yaml", "iterations": 1}}}, "methods.m.config"),
        ({"methods": {"m": {"config": "c.yaml"}}}, "methods.m.iterations"),
        ({"methods": {"m": {"config": "c.yaml", "iterations": 0}}}, "methods.m.iterations"),
        ({"methods": {"m": {"config": "c.yaml", "iterations": 1, "set": ["split.labeled=5"]}}}, "methods.m.set"),
        ({"methods": {"m": {"config": "c.yaml", "iterations": 1, "seeds": [0, 2]}}}, "methods.m.seeds"),
        ({"methods": {"m": {"config": "c.yaml", "iterations": 1, "seeds": []}}}, "methods.m.seeds"),
    ],
)
def test_invalid_grids_name_the_file_and_key(tmp_path, config_file, changes, key):
    path = write_yaml(tmp_path / "grid.yaml", minimal_grid(config_file, **changes))
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert "grid.yaml" in str(err.value) and f"{key}:" in str(err.value)


def test_grid_defaults_and_config_paths_next_to_the_grid(tmp_path, config_file, monkeypatch):
    grid_dir = tmp_path / "grids"
    grid_dir.mkdir()
    write_yaml(grid_dir / "local.yaml", {})
    values = minimal_grid(config_file)
    values["methods"]["other"] = {"config": "local.yaml", "labeled": [0.5, 1.0], "iterations": 2}
    values["labeled"] = [0.1]
    values["methods"]["supervised"]["labeled"] = None
    monkeypatch.chdir(tmp_path)  # local.yaml is not in the current directory: found next to the grid
    spec = load_grid(write_yaml(grid_dir / "g.yaml", values))
    assert spec.method("other").config == grid_dir / "local.yaml"
    assert spec.method("supervised").labeled == (0.1,)  # the grid's list when the method gives none
    assert spec.labeled_values == (0.1, 0.5, 1.0)
    assert spec.reference == "supervised" and spec.seed_keys == ("train.seed",)
    assert spec.out == Path("runs/benchmark/tiny") and spec.budget is None
    runs = plan_runs(spec, tmp_path / "out")
    assert [r.name for r in runs[:3]] == ["supervised_l0.1_s0", "other_l0.5_s0", "other_l1_s0"]
    assert len(runs) == 6 and {r.seed for r in runs[3:]} == {1}


def test_an_entry_may_run_at_some_of_the_grid_seeds(tmp_path, config_file):
    values = minimal_grid(config_file)
    values["methods"]["diagnostic"] = {"config": str(config_file), "iterations": 2, "seeds": [1]}
    spec = load_grid(write_yaml(tmp_path / "g.yaml", values))
    names = [r.name for r in plan_runs(spec, tmp_path / "out")]
    assert names == [
        "supervised_l2_s0", "supervised_l3_s0",
        "supervised_l2_s1", "diagnostic_l2_s1", "supervised_l3_s1", "diagnostic_l3_s1",
    ]


# ----------------------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_of_constant_differences_is_a_point():
    iv = bootstrap_mean([0.03] * 12)
    assert iv is not None
    assert iv.mean == pytest.approx(0.03) and iv.low == pytest.approx(0.03) and iv.high == pytest.approx(0.03)
    assert iv.n == 12


def test_bootstrap_interval_of_symmetric_noise_contains_zero_and_a_shift_excludes_it():
    noise = np.random.default_rng(1).normal(0.0, 0.05, 40)
    symmetric = np.concatenate([noise, -noise])
    iv = bootstrap_mean(symmetric)
    assert iv.low < 0 < iv.high and iv.mean == pytest.approx(0.0, abs=1e-12)
    shifted = bootstrap_mean(symmetric + 0.1)
    assert 0 < shifted.low < 0.1 < shifted.high
    # the standard error of the mean is ~0.05/sqrt(80): the 95% interval spans about 4 of them
    assert 0.012 < shifted.high - shifted.low < 0.03
    assert bootstrap_mean(symmetric) == iv  # a fixed-seed generator: the same values, the same interval
    assert bootstrap_mean([]) is None


def test_paired_differences_and_pooling_over_seeds():
    diffs = paired_differences({"a": 0.9, "b": 0.5, "c": None, "d": 0.7}, {"a": 0.8, "b": 0.6, "c": 0.1})
    assert diffs == pytest.approx({"a": 0.1, "b": -0.1})
    pooled = pool_seeds([{"a": 0.1, "b": -0.1}, {"a": 0.3}])
    assert pooled == pytest.approx({"a": 0.2, "b": -0.1})


def synthetic_rows(method: str, seed: int, labeled: float, dice: dict[str, float], unused: int = 0) -> list[dict]:
    """Rows of one run; ``unused`` of its drawn unlabeled images were not trained on."""
    return [
        {"dataset": "d", "labeled": labeled, "method": method, "seed": seed, "case": case, "dice_mean": d,
         "jaccard_mean": d, "hd95_mean": 2.0, "asd_mean": 1.0, "cpu_seconds": 60.0, "iterations": 10,
         "images_labeled": 80, "images_unlabeled": unused, "trained_labeled": 80, "trained_unlabeled": 0,
         "convention": "standard", "best_step": 4 + seed}
        for case, d in dice.items()
    ]


def test_tables_mean_std_paired_intervals_and_missing_cells():
    cases = [f"c{i}" for i in range(5)]
    rows = []
    for seed in (0, 1):
        rows += synthetic_rows("sup", seed, 7, {c: 0.70 + 0.01 * i for i, c in enumerate(cases)})
        rows += synthetic_rows("new", seed, 7, {c: 0.75 + 0.01 * i for i, c in enumerate(cases)}, unused=40)
    rows += synthetic_rows("new", 0, 3, dict.fromkeys(cases, 0.5), unused=40)  # no reference run at 3
    text = render_tables(rows, dataset="d", cells=[(3, "sup"), (3, "new"), (7, "sup"), (7, "new")],
                         seeds=[0, 1], reference="sup", budget_note="BUDGET")
    lines = text.splitlines()
    assert "BUDGET" in lines
    # Images trained on, and the drawn ones only where some went unused.
    images = next(ln for ln in lines if ln.startswith("Images trained on"))
    assert "sup 80 labeled + 0 unlabeled;" in images
    assert "new 80 labeled + 0 unlabeled (drawn: 80 labeled + 40 unlabeled)" in images
    row_sup_3 = next(ln for ln in lines if ln.startswith("| 3 | sup |"))
    assert row_sup_3.startswith(f"| 3 | sup | 0/2 | {MISSING} |")
    row_new_7 = next(ln for ln in lines if ln.startswith("| 7 | new | 2/2"))
    assert "| 77.00 ± 0.00 |" in row_new_7
    assert "| 10 | 4, 5 |" in row_new_7  # iterations, then each seed's best validation step
    assert "## Paired Dice difference to sup" in text
    paired_7 = [ln for ln in lines if ln.startswith("| 7 | new |")][-1]
    # the same +5 points on every case: zero-width intervals at +5.00, per seed and pooled
    assert paired_7 == "| 7 | new | +5.00 [+5.00, +5.00] | +5.00 [+5.00, +5.00] | +5.00 [+5.00, +5.00], n=5 |"
    paired_3 = [ln for ln in lines if ln.startswith("| 3 | new |")][-1]
    assert paired_3 == f"| 3 | new | {MISSING} | {MISSING} | {MISSING} |"
    assert not any(ln.startswith("| 7 | sup | +") for ln in lines)  # the reference has no paired row
    # An entry planned on fewer seeds counts its own runs as planned.
    text = render_tables(rows, dataset="d", cells=[(3, "new"), (7, "new")], seeds=[0, 1], reference="sup",
                         budget_note="BUDGET", planned={(3, "new"): 1, (7, "new"): 2})
    assert any(ln.startswith("| 3 | new | 1/1 |") for ln in text.splitlines())
    # compare_to: a second paired table, against another method (here the reference becomes -5 points)
    text = render_tables(rows, dataset="d", cells=[(7, "sup"), (7, "new")], seeds=[0, 1], reference="sup",
                         budget_note="BUDGET", compare_to=["new"])
    second = text.split("## Paired Dice difference to new")[1].splitlines()
    assert "| 7 | sup | -5.00 [-5.00, -5.00] | -5.00 [-5.00, -5.00] | -5.00 [-5.00, -5.00], n=5 |" in second
    assert not any(ln.startswith("| 7 | new |") for ln in second)
    # A labeled amount the compared method is not planned for (supervised on all labels) gets no row of
    # dashes in its table; in the reference's table a planned but unfinished pairing still shows its dashes.
    rows_all = rows + synthetic_rows("sup", 0, 100, dict.fromkeys(cases, 0.9))
    text = render_tables(rows_all, dataset="d", cells=[(3, "sup"), (3, "new"), (7, "sup"), (7, "new"), (100, "sup")],
                         seeds=[0, 1], reference="sup", budget_note="BUDGET", compare_to=["new"])
    first, second = text.split("## Paired Dice difference to new")
    assert f"| 3 | new | {MISSING} | {MISSING} | {MISSING} |" in first.splitlines()
    assert not any(ln.startswith("| 100 |") for ln in second.splitlines())
    assert any(ln.startswith("| 3 | sup |") for ln in second.splitlines())


def test_tables_name_the_distance_unit_the_evaluations_report():
    rows = [r | {"distance_unit": "vox"} for r in synthetic_rows("sup", 0, 7, {"c0": 0.7, "c1": 0.8})]
    text = render_tables(rows, dataset="d", cells=[(7, "sup")], seeds=[0], reference=None, budget_note="B")
    assert "vox" in text and " mm" not in text
    legacy = render_tables(synthetic_rows("sup", 0, 7, {"c0": 0.7}), dataset="d", cells=[(7, "sup")], seeds=[0],
                           reference=None, budget_note="B")
    assert " mm" in legacy  # runs evaluated before reports named their unit: the standard convention's mm


# ----------------------------------------------------------------------------------------------------------
# A tiny grid end to end


def tiny_config(root: Path) -> Path:
    data = make_hdf5_dataset(root / "data", n_train=4, n_val=1, n_test=2, slices=2, shape=(32, 32), num_classes=3)
    values = {
        "data": dataclasses.asdict(data) | {"normalize": "zscore", "class_names": ["background", "A", "B"]},
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "train": {"iterations": 100, "batch_size": 2, "patch_size": [32, 32], "val_every": 2, "threads": 1,
                  "device": "cpu", "checkpoint_every": 1, "log_every": 1},
    }
    return write_yaml(root / "tiny.yaml", values)


def tiny_grid(root: Path) -> Path:
    config = tiny_config(root)
    return write_yaml(root / "grid.yaml", {
        "name": "tiny",
        "out": str(root / "grid_out"),
        "seeds": [0, 1],
        "labeled": [2, 3],
        "reference": "supervised",
        "budget": {"cpu_seconds": 0.15, "calibration_steps": 4, "validations": 2},
        "methods": {
            "supervised": {"config": str(config), "iterations": 3},
            "wide": {"config": str(config), "labeled": [3], "set": ["model.channels=[8, 16, 32]"]},
        },
    })


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    """A grid trained once, after one run was interrupted and another left without a checkpoint."""
    from uncol import api

    root = tmp_path_factory.mktemp("bench")
    grid_path = tiny_grid(root)
    spec = load_grid(grid_path)
    runs = {r.name: r for r in plan_runs(spec, spec.out)}
    interrupted = runs["supervised_l3_s1"]
    api.train(run_config(spec, interrupted, 3), run_dir=interrupted.run_dir, stop_after=1, show_progress=False)
    (interrupted.run_dir / "marker").write_text("kept by a resumption, removed by a restart")
    partial = runs["supervised_l2_s1"]
    partial.run_dir.mkdir(parents=True)
    (partial.run_dir / "config.yaml").write_text("half-written leftovers")
    lines: list[str] = []
    result = run_grid(grid_path, show_progress=False, echo=lines.append)
    return {"root": root, "grid": grid_path, "spec": spec, "runs": runs, "lines": lines, "result": result}


def test_grid_trains_every_run_and_resumes_the_interrupted_one(finished_grid):
    lines, runs = finished_grid["lines"], finished_grid["runs"]
    assert all(run_status(r.run_dir) is RunStatus.FINISHED for r in runs.values())
    assert len(runs) == 2 * 2 + 1 * 2
    resumed = [ln for ln in lines if "resumed" in ln]
    assert len(resumed) == 1 and "supervised labeled=3 seed=1" in resumed[0]
    assert (runs["supervised_l3_s1"].run_dir / "marker").exists()  # continued in place, not restarted
    assert not (runs["supervised_l2_s1"].run_dir / "marker").exists()
    assert sum("started" in ln for ln in lines) == 5 and sum(": done (" in ln for ln in lines) == 6
    state = json.loads((finished_grid["spec"].out / "grid_state.json").read_text())
    assert state["runs"]["supervised_l3_s1"]["resumed"]  # the resumption is recorded with its commit
    # the interrupted run continued to the grid's 3 steps: its log has every step once
    log = (runs["supervised_l3_s1"].run_dir / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3"]


def test_calibration_fixes_the_iterations_of_every_run_of_its_pair(finished_grid):
    spec, runs = finished_grid["spec"], finished_grid["runs"]
    state = json.loads((spec.out / "grid_state.json").read_text())
    assert set(state["calibration"]) == {"wide/3"}  # supervised has fixed iterations
    entry = state["calibration"]["wide/3"]
    assert entry["cpu_per_step"] > 0 and entry["measured_steps"] == 2 and entry["budget_cpu_seconds"] == 0.15
    assert entry["iterations"] == max(1, int(0.15 // entry["cpu_per_step"]))
    for seed in (0, 1):
        summary = json.loads((runs[f"wide_l3_s{seed}"].run_dir / "summary.json").read_text())
        assert summary["iterations"] == summary["steps_done"] == entry["iterations"]
    assert not (spec.out / "calibration" / "wide_l3_s0").exists()  # the throwaway run is removed
    assert any(ln.startswith("calibrating wide/3") for ln in finished_grid["lines"])


def test_results_csv_has_a_row_per_run_and_test_case(finished_grid):
    with open(finished_grid["spec"].out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 * 2  # 6 runs x 2 test cases
    columns = list(rows[0])
    assert columns[:5] == ["dataset", "labeled", "method", "seed", "case"]
    for metric in ("dice", "jaccard", "hd95", "asd"):
        assert f"{metric}_A" in columns and f"{metric}_B" in columns and f"{metric}_mean" in columns
    for col in ("cpu_seconds", "iterations", "images_labeled", "images_unlabeled", "trained_labeled",
                "trained_unlabeled", "best_step", "commit"):
        assert col in columns
    # Supervised training reads every image it draws.
    assert all(r["trained_labeled"] == r["images_labeled"] != "" for r in rows if r["method"] == "supervised")
    sup = [r for r in rows if r["method"] == "supervised"]
    assert {r["iterations"] for r in sup} == {"3"} and {r["labeled"] for r in rows} == {"2", "3"}
    assert all(float(r["cpu_seconds"]) > 0 and 0 <= float(r["dice_mean"]) <= 1 for r in rows)
    first = rows[0]
    case_mean = np.mean([float(first["dice_A"]), float(first["dice_B"])])
    assert float(first["dice_mean"]) == pytest.approx(case_mean)
    metrics = json.loads((finished_grid["runs"]["supervised_l2_s0"].run_dir / "metrics_test.json").read_text())
    assert {r["case"] for r in rows if r["method"] == "supervised" and r["labeled"] == "2"} == {
        c["case"] for c in metrics["cases"]
    }


def test_tables_and_figure_are_written(finished_grid):
    out = finished_grid["spec"].out
    text = (out / "tables.md").read_text()
    assert "same CPU-time budget: 0.15 CPU seconds" in text and "wide/3:" in text
    assert "Fixed step counts, not calibrated to the budget: supervised (3 steps)" in text
    assert "## Paired Dice difference to supervised" in text
    paired = [ln for ln in text.splitlines() if ln.startswith("| 3 | wide |")][-1]
    assert paired.count("[") == 3 and MISSING not in paired  # two seeds and the pooled interval
    png = (out / "dice_vs_labeled.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_run_killed_during_evaluation_is_evaluated_without_training_again(finished_grid):
    run = finished_grid["runs"]["supervised_l2_s0"]
    log_before = (run.run_dir / "log.csv").read_text()
    metrics = run.run_dir / "metrics_test.json"
    expected = json.loads(metrics.read_text())["summary"]
    metrics.unlink()
    assert run_status(run.run_dir) is RunStatus.RESUME
    lines: list[str] = []
    run_grid(finished_grid["grid"], show_progress=False, echo=lines.append)
    assert any("supervised labeled=2 seed=0: resumed" in ln for ln in lines)
    assert sum("skipped (finished" in ln for ln in lines) == 5
    assert (run.run_dir / "log.csv").read_text() == log_before  # no step was trained again
    assert json.loads(metrics.read_text())["summary"] == expected


def test_a_run_another_process_trains_is_left_to_it(finished_grid):
    from uncol.benchmark.state import RunClaim

    run = finished_grid["runs"]["supervised_l2_s0"]
    metrics = run.run_dir / "metrics_test.json"
    saved = metrics.read_bytes()
    metrics.unlink()  # left unevaluated: the next invocation would evaluate it
    lines: list[str] = []
    with RunClaim(finished_grid["spec"].out, run.name) as other:
        assert other.try_claim()
        run_grid(finished_grid["grid"], show_progress=False, echo=lines.append)
    assert any("supervised labeled=2 seed=0: left to the other" in ln for ln in lines)
    assert sum("skipped (finished" in ln for ln in lines) == 5  # the other runs went on
    assert not metrics.exists()
    metrics.write_bytes(saved)
    assert run_status(run.run_dir) is RunStatus.FINISHED
    run_grid(finished_grid["grid"], only_report=True, echo=lambda line: None)  # reports need no claim


def test_state_changes_of_two_processes_are_merged_and_wait_for_the_lock(tmp_path):
    import threading

    from uncol.benchmark.state import CodeVersion, GridLock, GridState

    first, second = GridState(tmp_path), GridState(tmp_path)  # both read the folder before either wrote
    version = CodeVersion("abc1234", False)
    first.record_start("a", version)
    second.record_start("b", version)
    second.set_calibration("m/3", {"iterations": 5})
    first.record_resume("a", version)
    on_disk = GridState(tmp_path)
    assert set(on_disk.data["runs"]) == {"a", "b"} and on_disk.calibration("m/3") == {"iterations": 5}
    assert len(on_disk.run("a")["resumed"]) == 1

    writer = threading.Thread(target=second.record_start, args=("c", version))
    with GridLock(tmp_path):
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()  # waits while another process holds the grid lock
        assert GridState(tmp_path).run("c") is None
    writer.join(timeout=10)
    assert GridState(tmp_path).run("c") is not None


def test_second_invocation_skips_every_run(finished_grid, monkeypatch):
    import uncol.api

    def no_training(*args, **kwargs):
        raise AssertionError("a finished grid must not train again")

    monkeypatch.setattr(uncol.api, "train", no_training)
    lines: list[str] = []
    result = run_grid(finished_grid["grid"], show_progress=False, echo=lines.append)
    assert sum("skipped (finished" in ln for ln in lines) == 6
    assert {r["status"] for r in result["runs"]} == {"finished"} and result["rows"] == 12


def test_only_report_rebuilds_outputs_and_a_changed_grid_is_refused(finished_grid, tmp_path, capsys):
    out = finished_grid["spec"].out
    before = (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    assert main(["benchmark", str(finished_grid["grid"]), "--only-report", "--quiet"]) == 0
    assert (out / "results.csv").read_text() == before
    assert "## Paired Dice difference" in capsys.readouterr().out
    assert main(["benchmark", str(finished_grid["grid"]), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "[1/6] supervised labeled=2 seed=0: finished, 3 steps (fixed)" in plan
    assert "wide labeled=3 seed=0: finished" in plan and "(calibrated)" in plan
    changed = yaml.safe_load(finished_grid["grid"].read_text())
    changed["set"] = ["train.lr=0.02"]
    grid2 = write_yaml(tmp_path / "changed.yaml", changed)
    assert main(["benchmark", str(grid2), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "supervised_l2_s0" in err and "train.lr" in err
    changed["set"] = []
    changed["budget"]["cpu_seconds"] = 9.0
    grid3 = write_yaml(tmp_path / "budget.yaml", changed)
    assert main(["benchmark", str(grid3), "--quiet"]) == 2
    assert "budget.cpu_seconds" in capsys.readouterr().err


def test_archive_keeps_finished_runs_and_calibration_beyond_the_grid_folder(tmp_path, monkeypatch):
    import shutil

    import uncol.api
    import uncol.benchmark.runner

    config = tiny_config(tmp_path)
    grid_path = write_yaml(tmp_path / "grid.yaml", {
        "name": "tiny", "out": str(tmp_path / "out"), "archive": str(tmp_path / "archive"), "seeds": [0],
        "labeled": [2], "budget": {"cpu_seconds": 0.1, "calibration_steps": 3, "validations": 1},
        "methods": {"supervised": {"config": str(config)}},
    })
    first = run_grid(grid_path, show_progress=False, echo=lambda _: None)
    archive = tmp_path / "archive"
    record = archive / "runs" / "supervised_l2_s0"
    assert (record / "metrics_test.json").exists() and (record / "summary.json").exists()
    assert not list(record.glob("**/*.pt"))  # a record, not the weights
    assert (archive / "grid_state.json").exists() and (archive / "results.csv").exists()
    csv_before = (tmp_path / "out" / "results.csv").read_text()

    shutil.rmtree(tmp_path / "out")  # a new machine: the grid folder is gone, the archive is committed

    def no_training(*args, **kwargs):
        raise AssertionError("an archived run must not be trained or calibrated again")

    monkeypatch.setattr(uncol.api, "train", no_training)
    monkeypatch.setattr(uncol.benchmark.runner, "calibrate", no_training)
    lines: list[str] = []
    second = run_grid(grid_path, show_progress=False, echo=lines.append)
    assert any("restored 1 finished run" in ln for ln in lines)
    assert [r["status"] for r in second["runs"]] == ["finished"] == [r["status"] for r in first["runs"]]
    assert (tmp_path / "out" / "results.csv").read_text() == csv_before


def test_methods_and_labeled_train_a_subset_and_report_every_finished_run(finished_grid, capsys):
    grid = finished_grid["grid"]
    run = finished_grid["runs"]["wide_l3_s1"]
    metrics = run.run_dir / "metrics_test.json"
    other = finished_grid["runs"]["supervised_l3_s0"].run_dir / "metrics_test.json"
    saved = metrics.read_text(), other.read_text()
    metrics.unlink()
    other.unlink()  # both need an evaluation; only the selected one gets it
    try:
        lines: list[str] = []
        result = run_grid(grid, show_progress=False, echo=lines.append, methods=["wide"], labeled=[3])
        assert list(dict.fromkeys(ln.split(":")[0] for ln in lines if ln.startswith("["))) == [
            "[1/2] wide labeled=3 seed=0", "[2/2] wide labeled=3 seed=1"
        ]
        assert metrics.exists() and not other.exists()
        assert len(result["runs"]) == 6  # the report covers the whole grid
        assert main(["benchmark", str(grid), "--dry-run", "--methods", "supervised", "--labeled", "2"]) == 0
        plan = capsys.readouterr().out
        assert "[1/2] supervised labeled=2 seed=0" in plan and "wide" not in plan.split("\n", 1)[1]
        assert main(["benchmark", str(grid), "--dry-run", "--methods", "bcp"]) == 2
        err = capsys.readouterr().err
        assert "no method entry 'bcp'" in err and "supervised, wide" in err
        assert main(["benchmark", str(grid), "--dry-run", "--labeled", "5"]) == 2
        assert "labeled 5 is not in the grid (it has 2, 3)" in capsys.readouterr().err
    finally:
        metrics.write_text(saved[0])
        other.write_text(saved[1])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"branch_from": "late"}, "must be an entry written before this one"),
        ({"branch_from": "branched"}, "cannot branch from itself"),
        ({"branch_from": "supervised", "iterations": 2}, "methods.branched.iterations"),
        ({"branch_from": "supervised", "labeled": [5]}, "does not run at labeled 5"),
        ({"branch_from": "partial"}, "runs at seeds [0] only"),
    ],
)
def test_invalid_branch_sources_are_named(tmp_path, config_file, entry, problem):
    values = minimal_grid(config_file)
    values["methods"]["partial"] = {"config": str(config_file), "iterations": 2, "seeds": [0]}
    values["methods"]["branched"] = {"config": str(config_file), **entry}
    values["methods"]["late"] = {"config": str(config_file), "iterations": 2}
    with pytest.raises(ConfigError) as err:
        load_grid(write_yaml(tmp_path / "grid.yaml", values))
    assert "grid.yaml" in str(err.value) and problem in str(err.value)


def test_a_branched_entry_continues_its_source_from_the_branch_point(tmp_path):
    """An ablation of BCP's self-training shares the pretraining of the source entry's run of the same cell."""
    import shutil

    config = tiny_config(tmp_path)
    bcp = ["method.name=bcp", "method.bcp.pretrain_fraction=0.5"]
    grid_path = write_yaml(tmp_path / "grid.yaml", {
        "name": "tiny", "out": str(tmp_path / "out"), "seeds": [0], "labeled": [2],
        "methods": {
            "bcp": {"config": str(config), "iterations": 4, "set": bcp},
            "bcp_w1": {"config": str(config), "branch_from": "bcp", "set": [*bcp, "method.bcp.unlabeled_weight=1.0"]},
        },
    })
    lines: list[str] = []
    run_grid(grid_path, show_progress=False, echo=lines.append)
    source, branched = tmp_path / "out" / "runs" / "bcp_l2_s0", tmp_path / "out" / "runs" / "bcp_w1_l2_s0"
    assert any("bcp_w1 labeled=2 seed=0: started (4 steps, from bcp_l2_s0 at step 2)" in ln for ln in lines)
    record = json.loads((branched / "branched_from.json").read_text())
    assert record["step"] == 2 and record["changed_options"] == ["method.bcp.unlabeled_weight"]
    src_log = (source / "log.csv").read_text().splitlines()
    log = (branched / "log.csv").read_text().splitlines()
    assert log[:3] == src_log[:3] and log[3:] != src_log[3:]  # shared pretraining, its own self-training
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "Branched entries" in tables and "bcp_w1 (from bcp)" in tables
    expected = json.loads((branched / "metrics_test.json").read_text())["summary"]

    # Without the source's branch point (e.g. restored from an archive) the run trains from step 0, same result.
    shutil.rmtree(branched)
    for point in (source / "checkpoints").glob("step*.pt"):
        point.unlink()
    lines.clear()
    run_grid(grid_path, show_progress=False, echo=lines.append)
    assert any("no single branch point" in ln for ln in lines) and not (branched / "branched_from.json").exists()
    assert json.loads((branched / "metrics_test.json").read_text())["summary"] == expected
    assert main(["benchmark", str(grid_path), "--dry-run"]) == 0


@pytest.mark.parametrize(
    ("entry", "budget", "problem"),
    [
        ({"cpu_per_step": 0}, True, "expected CPU seconds per step > 0"),
        ({"cpu_per_step": "fast"}, True, "expected CPU seconds per step > 0"),
        ({"cpu_per_step": 0.1}, False, "needs budget.cpu_seconds"),
        ({"cpu_per_step": 0.1, "iterations": 3}, True, "neither iterations nor branch_from"),
    ],
)
def test_invalid_step_costs_are_named(tmp_path, config_file, entry, budget, problem):
    values = minimal_grid(config_file)
    if budget:
        values["budget"] = {"cpu_seconds": 1.0}
    values["methods"]["measured"] = {"config": str(config_file), **entry}
    with pytest.raises(ConfigError) as err:
        load_grid(write_yaml(tmp_path / "grid.yaml", values))
    assert "methods.measured.cpu_per_step" in str(err.value) and problem in str(err.value)


def test_a_measured_step_cost_replaces_the_calibration(tmp_path, monkeypatch):
    import uncol.benchmark.runner

    def no_calibration(*args, **kwargs):
        raise AssertionError("an entry with cpu_per_step is not calibrated")

    monkeypatch.setattr(uncol.benchmark.runner, "calibrate", no_calibration)
    config = tiny_config(tmp_path)
    grid_path = write_yaml(tmp_path / "grid.yaml", {
        "name": "tiny", "out": str(tmp_path / "out"), "seeds": [0], "labeled": [2],
        "budget": {"cpu_seconds": 1.0, "calibration_steps": 3, "validations": 1},
        "methods": {"supervised": {"config": str(config), "cpu_per_step": 0.25}},
    })
    run_grid(grid_path, show_progress=False, echo=lambda _: None)
    summary = json.loads((tmp_path / "out" / "runs" / "supervised_l2_s0" / "summary.json").read_text())
    assert summary["iterations"] == summary["steps_done"] == 4  # floor(1.0 / 0.25)
    state = json.loads((tmp_path / "out" / "grid_state.json").read_text())
    assert state["calibration"] == {}
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "measured on finished runs and given in the grid file instead: supervised: 4 steps at 0.25 CPU s/step" in tables


def test_calibration_from_another_grid_scales_its_measured_costs_to_this_budget(tmp_path, monkeypatch, capsys):
    import uncol.benchmark.runner

    calibrated = []

    def fake_calibration(cfg, work_dir, steps, budget_cpu_seconds, version):
        calibrated.append(cfg.split.labeled)
        return {"iterations": 2, "cpu_per_step": 0.5, "measured_steps": steps - 2,
                "budget_cpu_seconds": budget_cpu_seconds, "calibration_steps": steps, "version": version.to_json()}

    monkeypatch.setattr(uncol.benchmark.runner, "calibrate", fake_calibration)
    monkeypatch.chdir(tmp_path)  # the repository root, where grids are run from
    # The grid measured at half the budget: its pair supervised/2 cost 0.25 CPU s per step there.
    measured = tmp_path / "half_budget"
    measured.mkdir()
    (measured / "grid_state.json").write_text(json.dumps({"version": 1, "runs": {}, "calibration": {
        "supervised/2": {"iterations": 2, "cpu_per_step": 0.25, "measured_steps": 18, "budget_cpu_seconds": 0.5,
                         "calibration_steps": 20, "version": {"commit": "abc1234", "dirty": False, "at": "then"}},
    }}))
    config = tiny_config(tmp_path)
    grid_path = write_yaml(tmp_path / "grid.yaml", {
        "name": "tiny", "out": str(tmp_path / "out"), "seeds": [0], "labeled": [2, 3],
        "budget": {"cpu_seconds": 1.0, "calibration_steps": 3, "validations": 1, "calibration_from": "half_budget"},
        "methods": {"supervised": {"config": str(config)}},
    })
    assert load_grid(grid_path).budget.calibration_from == (measured / "grid_state.json").resolve()
    run_grid(grid_path, dry_run=True, echo=print)
    assert "4 steps (at the cost measured in" in capsys.readouterr().out  # before anything is stored
    run_grid(grid_path, show_progress=False, echo=lambda _: None)
    summary = json.loads((tmp_path / "out" / "runs" / "supervised_l2_s0" / "summary.json").read_text())
    assert summary["iterations"] == summary["steps_done"] == 4  # floor(1.0 / 0.25): twice the source's steps
    assert calibrated == [3]  # the pair the source grid lacks is measured here
    state = json.loads((tmp_path / "out" / "grid_state.json").read_text())
    entry = state["calibration"]["supervised/2"]
    assert entry["cpu_per_step"] == 0.25 and entry["budget_cpu_seconds"] == 1.0 and entry["measured_steps"] == 18
    assert entry["version"]["commit"] == "abc1234" and entry["calibrated_in"] == "half_budget/grid_state.json"  # no machine's folder layout in the record
    assert "calibrated_in" not in state["calibration"]["supervised/3"]
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "The step costs of supervised/2 are those measured by the calibration of half_budget/grid_state.json," in tables


def test_two_processes_train_one_grid_without_repeating_a_run(tmp_path):
    """Two real `uncol benchmark` processes on one grid folder: every run trained exactly once."""
    import os
    import subprocess
    import sys

    config = tiny_config(tmp_path)
    grid = write_yaml(tmp_path / "grid.yaml", {
        "name": "pair", "out": str(tmp_path / "grid_out"), "seeds": [0, 1], "labeled": [2],
        "reference": "supervised", "methods": {"supervised": {"config": str(config), "iterations": 3}},
    })
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uncol.cli", "benchmark", str(grid), "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    lines = "\n".join(outputs).splitlines()
    assert sum(": started (" in ln for ln in lines) == 2, outputs
    assert sum(": resumed" in ln for ln in lines) == 0, outputs
    spec = load_grid(grid)
    assert all(run_status(r.run_dir) is RunStatus.FINISHED for r in plan_runs(spec, spec.out))
    state = json.loads((spec.out / "grid_state.json").read_text())
    assert sorted(state["runs"]) == sorted(r.name for r in plan_runs(spec, spec.out))
