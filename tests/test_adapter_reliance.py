"""benchmarks/adapter_reliance.py: its core on a tiny random student, and one run end to end."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from benchmark_scripts import benchmark_scripts
from fixtures_data import make_hdf5_dataset
from uncol.config import config_from_dict
from uncol.data.types import CaseData
from uncol.engine import Trainer
from uncol.errors import UncolError
from uncol.models import UnCoLStudent, build_network

MODEL = {"arch": "uncol_student2d", "channels": [4, 8, 16], "vit_patch": 4, "vit_dim": 16, "vit_heads": 2}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    """The benchmark script, imported as a module."""
    with benchmark_scripts("adapter_reliance") as (module,):
        yield module


def _case(seed: int, slices: int = 2, shape: tuple[int, int] = (40, 36)) -> CaseData:
    rng = np.random.default_rng(seed)
    label = np.zeros((slices, *shape), dtype=np.uint8)
    label[:, 8:24, 6:20] = 1
    label[:, 26:34, 20:30] = 2
    image = (label[None] * 1.0 + rng.normal(0, 0.3, (1, slices, *shape))).astype(np.float32)
    return CaseData(f"case{seed}", image, label, (1.0, 1.0, 1.0))


def test_case_reliance_on_a_tiny_random_student(script: ModuleType) -> None:
    cfg = config_from_dict({"model": MODEL, "data": {"num_classes": 3, "normalize": "none"},
                            "train": {"patch_size": [32, 32]}})
    torch.manual_seed(0)
    net = build_network(cfg.model, 1, 3, cfg.train.patch_size)
    assert isinstance(net, UnCoLStudent)
    # Batch statistics of a few training-mode passes, so that eval mode is not the untrained identity.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 1, 32, 32))
    net.eval()
    case, other = _case(0), _case(1)
    x_other = script.network_input(other, cfg)
    assert x_other.shape == (1, 1, 32, 32)
    context = script.own_tokens(net, x_other)
    assert context.shape == (1, 64, 16)
    out = script.case_reliance(net, case, cfg, torch.device("cpu"), context)
    assert set(out) == set(script.CONDITIONS)
    assert out["base"]["changed"] == 0.0 and out["base"]["voxels"] == case.label.size
    # Explicit own tokens are the prompt-free context; a shuffled order is the same set of keys.
    assert out["own"]["changed"] < 1e-3 and out["shuffled"]["changed"] < 1e-3
    assert out["own"]["dice"] == pytest.approx(out["base"]["dice"], abs=1e-3)
    # Without the adapter, or attending to another image, the mask moves.
    assert out["zeroed"]["changed"] > 0.01
    assert out["other"]["changed"] > 0.0
    assert all(0.0 <= r["dice"] <= 1.0 for r in out.values())
    summary = script.summarize_conditions({"a": out, "b": out})
    assert summary["zeroed"]["changed_mean"] == pytest.approx(out["zeroed"]["changed"])
    assert summary["zeroed"]["dice_change"] == pytest.approx(out["zeroed"]["dice"] - out["base"]["dice"])
    assert summary["base"]["dice_change"] == 0.0
    # The zeroing hook is gone afterwards.
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, context=script.own_tokens(net, x)))


def test_foreground_dice_skips_absent_classes(script: ModuleType) -> None:
    ref = np.zeros((4, 4), dtype=np.uint8)
    ref[:2] = 1
    assert script.foreground_dice(ref, ref, 4) == 1.0  # classes 2 and 3 absent from both: not counted
    assert np.isnan(script.foreground_dice(np.zeros_like(ref), np.zeros_like(ref), 3))


def test_measure_run_end_to_end(script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_hdf5_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=2, slices=2, shape=(32, 32), num_classes=3)
    cfg = config_from_dict(
        {
            "name": "student", "output_dir": str(tmp_path / "runs"), "data": dataclasses.asdict(data), "model": MODEL,
            "train": {"iterations": 2, "batch_size": 2, "patch_size": [32, 32], "val_every": 0,
                      "checkpoint_every": 1, "threads": 1, "device": "cpu"},
        }
    )
    run = tmp_path / "runs" / "student"
    Trainer(cfg, run, show_progress=False).fit()
    path = tmp_path / "reliance.json"
    assert script.main([str(run), "--checkpoint", "final", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "adapter output zeroed" in printed and "another image's tokens" in printed
    (result,) = json.loads(path.read_text())
    assert len(result["cases"]) == 2 and result["student_backbone"] == "resunet"
    assert set(result["summary"]) == set(script.CONDITIONS)
    with pytest.raises(UncolError, match="no 'nope' cases"):
        script.measure_run(run, "nope", "final")


def test_measure_run_refuses_a_network_that_is_not_a_student(script: ModuleType, tmp_path: Path) -> None:
    data = make_hdf5_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, slices=2, shape=(32, 32), num_classes=3)
    cfg = config_from_dict(
        {
            "name": "unet", "output_dir": str(tmp_path / "runs"), "data": dataclasses.asdict(data),
            "model": {"arch": "unet2d", "channels": [4, 8, 16]},
            "train": {"iterations": 1, "batch_size": 2, "patch_size": [32, 32], "val_every": 0,
                      "checkpoint_every": 1, "threads": 1, "device": "cpu"},
        }
    )
    Trainer(cfg, tmp_path / "runs" / "unet", show_progress=False).fit()
    with pytest.raises(UncolError, match="not an UnCoL student"):
        script.measure_run(tmp_path / "runs" / "unet", checkpoint="final")
