"""benchmarks/student_cost.py on a tiny input (64 x 64, one timed round, without LiteMedSAM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from benchmark_scripts import benchmark_scripts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    """The benchmark script, imported as a module."""
    with benchmark_scripts("student_cost") as (module,):
        yield module


def _check_summary(r: dict[str, Any], n: int) -> None:
    """One timing summary: its keys, its call count and ordered positive figures."""
    assert set(r) == {"median_ms", "min_ms", "max_ms", "n"}
    assert r["n"] == n
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]


def test_training_measurement_structure(script: ModuleType) -> None:
    out = script.measure_training(size=64, batch=2, n=1, warmup=0)
    for name in ("unet", "student", "student_backbone", "student_vit_adapter"):
        _check_summary(out[name], 1)
    assert out["input"] == [2, 1, 64, 64]
    assert out["student_over_unet"] == pytest.approx(out["student"]["median_ms"] / out["unet"]["median_ms"])
    assert out["paired_student_over_unet"] > 0


def test_inference_measurement_without_teacher(script: ModuleType) -> None:
    out = script.measure_inference(size=64, n=2, warmup=0, with_teacher=False)
    _check_summary(out["student"], 2)
    assert "litemedsam" not in out and "litemedsam_over_student" not in out
    assert out["input"] == [1, 1, 64, 64]


def test_main_prints_table_and_writes_json(script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "cost.json"
    assert script.main(["--size", "64", "--n", "1", "--batch", "1", "--no-teacher", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "training: UnCoL student" in printed and "student / U-Net" in printed
    assert "LiteMedSAM" not in printed.split("|---|---|---|")[1]
    data = json.loads(path.read_text())
    assert set(data) == {"training", "inference"}
    assert data["training"]["input"] == [1, 1, 64, 64]


def test_table_reports_both_ratios_against_targets(script: ModuleType) -> None:
    summary = {"median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0, "n": 1}
    training = {
        "input": [4, 1, 256, 256], "unet": summary, "student": summary, "student_backbone": summary,
        "student_vit_adapter": summary, "student_over_unet": 1.2, "paired_student_over_unet": 1.2,
    }
    inference = {"input": [1, 1, 256, 256], "student": summary, "litemedsam": summary, "litemedsam_over_student": 25.0}
    table = script.format_table(training, inference)
    assert "target <= 1.5x: met" in table
    assert "target >= 20x: met" in table
    assert "LiteMedSAM encoder + mask decoder, one box" in table


def test_3d_training_measurement_and_table(script: ModuleType) -> None:
    out = script.measure_training(batch=1, n=1, warmup=0, dims=3, shape=(16, 16, 16))
    for name in ("unet", "student", "student_backbone", "student_vit_adapter"):
        _check_summary(out[name], 1)
    assert out["input"] == [1, 1, 16, 16, 16]
    two_d = script.measure_training(size=64, batch=1, n=1, warmup=0)
    table = script.format_table(two_d, script.measure_inference(size=64, n=1, warmup=0, with_teacher=False), out)
    assert "3D training (fwd+bwd, batch 1, 16x16x16): 3D U-Net" in table
    assert "3D training, student / 3D U-Net" in table
