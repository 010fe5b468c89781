"""benchmarks/active_selection.py end to end on a tiny ACDC-like HDF5 dataset with two-step runs:
initial run, suggested and random lists, both trained, results written, a second call trains nothing."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from benchmark_scripts import benchmark_scripts
from fixtures_data import make_hdf5_dataset
from uncol.benchmark.plan import RunStatus, run_status
from uncol.data.labeled_list import read_labeled_list
from uncol.data.splits import load_splits
from uncol.runs import RunPaths
from uncol.suggestions.table import read_suggestions


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    """The benchmark script, imported as a module."""
    with benchmark_scripts("active_selection") as (module,):
        yield module


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _groups(listed: Path) -> list[str]:
    return read_labeled_list(listed)


def test_study_end_to_end_and_resumable(script, tmp_path, capsys):
    data = make_hdf5_dataset(tmp_path / "acdc", n_train=7, n_val=1, n_test=2, slices=2, num_classes=3)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "data": dataclasses.asdict(data), "model": {"arch": "unet2d", "channels": [4, 8]},
        "train": {"batch_size": 2, "log_every": 1},
    }))
    out = tmp_path / "study"
    argv = ["--config", str(config), "--out", str(out), "--seeds", "0", "--initial", "2", "--total", "4",
            "--iterations", "2", "--validations", "1", "--grid-state", str(tmp_path / "none.json"), "--quiet",
            "--set", "train.patch_size=[32, 32]"]
    assert script.main(argv) == 0

    initial = out / "runs" / "initial_s0"
    first_two = {c.group for c in load_splits(RunPaths(initial).splits).labeled}
    assert len(first_two) == 2
    ranked = read_suggestions(out / "suggestions" / "s0")
    active, random = _groups(out / "lists" / "active_s0.list"), _groups(out / "lists" / "random_s0.list")
    assert set(active[:2]) == first_two and active[2:] == [g.group for g in ranked.groups[:2]]
    assert set(random[:2]) == first_two and len(set(random)) == 4
    assert set(random[2:]) <= {g.group for g in ranked.groups}  # drawn from the same unlabeled patients
    for arm, listed in (("active", active), ("random", random)):
        run = out / "runs" / f"{arm}_s0"
        assert {c.group for c in load_splits(RunPaths(run).splits).labeled} == set(listed)
        assert (run / "metrics_test.json").is_file()

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["arm"], r["seed"], r["labeled_patients"]) for r in rows] == [
        ("initial", "0", "2"), ("active", "0", "4"), ("random", "0", "4")
    ]
    assert all(0.0 <= float(r["dice"]) <= 1.0 and r["iterations"] == "2" for r in rows)
    summary = (out / "results.md").read_text()
    assert "| active | 4 |" in summary and "| random | 4 |" in summary and "Active - random" in summary

    # a second call finds everything done: nothing is trained or suggested again
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/checkpoints/final.pt")}
    capsys.readouterr()
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(": finished") == 3 and "started" not in printed and "suggested for" not in printed
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/checkpoints/final.pt")}

    # a grid's finished 2-patient run of the seed serves as the initial run
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "supervised_l2_s0").symlink_to(initial)
    assert script.parse([*argv, "--initial-runs", str(grid)]).run_dir("initial", 0) == grid / "supervised_l2_s0"
    # ... but not once its weights are gone (a grid run restored from the archive keeps only its records)
    archived = grid / "supervised_l2_s1"
    shutil.copytree(initial, archived, ignore=shutil.ignore_patterns("checkpoints"))
    study = script.parse([*argv, "--seeds", "1", "--initial-runs", str(grid)])
    assert run_status(archived) is RunStatus.FINISHED
    assert study.run_dir("initial", 1) == out / "runs" / "initial_s1"


def test_steps_come_from_the_grid_calibration_or_must_be_given(script, tmp_path):
    state = tmp_path / "grid_state.json"
    state.write_text('{"version": 1, "calibration": {"supervised/7": {"iterations": 6929}}, "runs": {}}')
    study = script.parse(["--grid-state", str(state)])
    assert study.iterations == 6929 and (study.initial, study.total, study.seeds) == (3, 7, (0, 1, 2))
    overrides = study.overrides_for("active", 1)
    assert "train.patch_size=[128, 128]" in overrides and "train.val_every=577" in overrides
    assert "train.seed=1" in overrides and any(o.startswith("split.labeled_list=") for o in overrides)
    # a grid's initial run is reused only when it is finished
    reuse = script.parse(["--iterations", "5", "--initial-runs", str(tmp_path / "grid"), "--out", str(tmp_path / "o")])
    assert reuse.run_dir("initial", 0) == tmp_path / "o" / "runs" / "initial_s0"
    with pytest.raises(SystemExit):
        script.parse(["--grid-state", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit):
        script.parse(["--iterations", "5", "--initial", "7", "--total", "7"])
