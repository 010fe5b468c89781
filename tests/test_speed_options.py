"""The CPU speed options (docs/speed.md): ``train.channels_last`` and ``train.compile``, same results.

``channels_last`` keeps the networks and input images in the channels-last layout; ``compile`` runs the
trained network through ``torch.compile``. Both change how the arithmetic is ordered, so results agree
with the defaults up to float rounding (not bit for bit): checked on UnCoL stage-2 and Mean Teacher
steps of the 2D student (with the stand-in foundation teacher) and on Mean Teacher steps of a 3D U-Net
(``channels_last_3d``). Compiling takes a minute, so that comparison is in the slow suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from benchmark_scripts import benchmark_scripts
from uncol.config import Config, config_from_dict
from uncol.engine import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def benches() -> Iterator[tuple[ModuleType, ModuleType]]:
    """benchmarks/step_speed.py and loader_speed.py (their configurations and the stand-in teacher)."""
    with benchmark_scripts("step_speed", "loader_speed") as modules:
        yield modules


def _steps(cfg: Config, run: Path, start: int, n: int = 2) -> tuple[list[dict[str, float]], Trainer]:
    trainer = Trainer(cfg, run, show_progress=False)
    trainer.setup()
    losses = []
    for i in range(n):
        trainer.step = start + i
        losses.append(trainer.train_step(trainer.batches[start + i]))
    return losses, trainer


def _assert_close(a: tuple[list[dict[str, float]], Trainer], b: tuple[list[dict[str, float]], Trainer]) -> None:
    for la, lb in zip(a[0], b[0], strict=True):
        assert la.keys() == lb.keys()
        for k in la:
            assert la[k] == pytest.approx(lb[k], rel=1e-4, abs=1e-5), k
    wa, wb = a[1].method.state_dict()["network"], b[1].method.state_dict()["network"]
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-4, atol=1e-5), k


def _conv_weights(trainer: Trainer, rank: int) -> list[torch.Tensor]:
    return [p for p in trainer.method.network.parameters() if p.dim() == rank and p.shape[1] > 1]


@pytest.mark.parametrize("method", ["uncol", "mean_teacher"])
def test_channels_last_2d_steps_match_the_default_layout(benches: Any, tmp_path: Path, method: str) -> None:
    step_speed, _ = benches
    index = 0 if method == "uncol" else 1
    with step_speed.fake_teacher_registered():
        runs = {}
        for layout in (False, True):
            cfg = step_speed.make_configs(tmp_path / str(layout), 64, 2, 2, train={"channels_last": layout})[index]
            runs[layout] = _steps(cfg, tmp_path / f"run{layout}", step_speed.STAGE2_START)
    _assert_close(runs[False], runs[True])
    weights = _conv_weights(runs[True][1], 4)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(runs[False][1], 4))
    assert runs[True][0][0]["loss"] != 0


def test_channels_last_3d_steps_match_the_default_layout(benches: Any, tmp_path: Path) -> None:
    _, loader_speed = benches
    runs = {}
    for layout in (False, True):
        base = loader_speed.make_config("synthetic", tmp_path / str(layout), 6).to_dict()
        base["train"]["channels_last"] = layout
        runs[layout] = _steps(config_from_dict(base), tmp_path / f"run{layout}", 0)
    _assert_close(runs[False], runs[True])
    weights = _conv_weights(runs[True][1], 5)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in weights)


def test_channels_last_is_off_by_default() -> None:
    assert config_from_dict({}).train.channels_last is False


def test_compile_keeps_the_checkpoint_names(benches: Any, tmp_path: Path) -> None:
    """``train.compile`` compiles in place: nothing compiles before the first step, and the network's
    parameter names (so its checkpoints) are those of the plain network."""
    step_speed, _ = benches
    _, plain_cfg = step_speed.make_configs(tmp_path / "plain", 64, 2, 2)
    _, compiled_cfg = step_speed.make_configs(tmp_path / "compiled", 64, 2, 2, train={"compile": True})
    plain = step_speed.prepared_trainer(plain_cfg, tmp_path / "run_plain")
    compiled = step_speed.prepared_trainer(compiled_cfg, tmp_path / "run_compiled")
    assert compiled.method.network._compiled_call_impl is not None
    assert plain.method.network._compiled_call_impl is None
    assert list(compiled.method.state_dict()["network"]) == list(plain.method.state_dict()["network"])
    assert config_from_dict({}).train.compile is False


@pytest.mark.slow
def test_compiled_steps_match_eager(benches: Any, tmp_path: Path) -> None:
    step_speed, _ = benches
    runs = {}
    for comp in (False, True):
        cfg = step_speed.make_configs(tmp_path / str(comp), 64, 2, 2, train={"compile": comp})[1]
        runs[comp] = _steps(cfg, tmp_path / f"run{comp}", step_speed.STAGE2_START)
    _assert_close(runs[False], runs[True])


@pytest.mark.slow
def test_compiled_run_validates_checkpoints_and_resumes(benches: Any, tmp_path: Path) -> None:
    """A whole compiled run (validation in eval mode included) ends near the eager one, and its weights
    file and resumable checkpoint load into a plain network."""
    from uncol.runs import RunPaths

    _, loader_speed = benches
    finals = {}
    for comp in (False, True):
        values = loader_speed.make_config("synthetic", tmp_path / f"d{comp}", 6).to_dict()
        values["train"] |= {"compile": comp, "iterations": 4, "val_every": 2, "checkpoint_every": 2}
        run = tmp_path / f"run{comp}"
        summary = Trainer(config_from_dict(values), run, show_progress=False).fit()
        assert summary.steps_done == 4 and summary.best_val_dice is not None
        finals[comp] = torch.load(RunPaths(run).final, weights_only=True)["network"]
    assert list(finals[True]) == list(finals[False])
    for k, v in finals[False].items():
        assert torch.allclose(v.float(), finals[True][k].float(), rtol=1e-4, atol=1e-5), k
