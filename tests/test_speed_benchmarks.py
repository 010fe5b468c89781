"""The speed benchmarks of issue 15 part 3 on tiny sizes, and the speed change they led to (class_argmax).

benchmarks/step_speed.py, loader_speed.py, size_scaling.py and speed_options.py are scripts; here each
runs its measurement at a size that takes seconds, and the checks are on the structure and the
arithmetic of what it reports (timings themselves are not asserted). The one change to training code
they motivated, :func:`uncol.methods.uncertainty.class_argmax`, must leave results identical: checked
on tensors with ties and on whole UnCoL stage-2 steps (losses and weights bit-identical to ``argmax``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from benchmark_scripts import benchmark_scripts
from uncol.methods.uncertainty import class_argmax

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def step_speed() -> Iterator[ModuleType]:
    with benchmark_scripts("step_speed") as (module,):
        yield module


@pytest.fixture(scope="module")
def loader_speed() -> Iterator[ModuleType]:
    with benchmark_scripts("loader_speed") as (module,):
        yield module


@pytest.fixture(scope="module")
def size_scaling() -> Iterator[ModuleType]:
    with benchmark_scripts("size_scaling") as (module,):
        yield module


@pytest.fixture(scope="module")
def speed_options() -> Iterator[ModuleType]:
    with benchmark_scripts("speed_options") as (module,):
        yield module


def _check_summary(r: dict[str, Any], n: int) -> None:
    assert r["n"] == n
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]


# ---- step_speed --------------------------------------------------------------------------------------


def test_step_speed_measures_both_methods_and_profiles(step_speed: ModuleType, tmp_path: Path) -> None:
    r = step_speed.measure(size=64, batch=2, unlabeled_batch=2, warmup=0, n=2, profile=1, workdir=tmp_path)
    _check_summary(r["uncol"], 2)
    _check_summary(r["mean_teacher"], 2)
    assert r["ratio"] == pytest.approx(r["uncol"]["median_ms"] / r["mean_teacher"]["median_ms"])
    # The synthetic slices hold every class, so the foundation teacher is prompted on each unlabeled image.
    assert r["decoder_calls_per_step"] == 2.0
    assert 2.0 <= r["prompts_per_step"] <= 6.0  # at least one of the 3 foreground classes per image
    parts = r["profile"]["parts"]
    assert parts["training step"] > parts["student forward"] > 0
    assert "uncol: foundation mask decoder" in parts and "uncol: teacher cache reads" in parts
    report = step_speed.format_report(r)
    assert "UnCoL stage 2 / Mean Teacher" in report and "target <= 1.3x" in report
    assert "| student forward |" in report and "prompted classes" in report


def test_step_speed_with_reused_decodes_decodes_in_the_warm_up_only(step_speed: ModuleType, tmp_path: Path) -> None:
    r = step_speed.measure(size=64, batch=2, unlabeled_batch=2, warmup=3, n=2, workdir=tmp_path, foundation_refresh=1.0)
    # The 4 unlabeled slices of the synthetic set were decoded in the warm-up; the timed steps reuse them.
    assert r["decoder_calls_per_step"] == 0.0
    assert r["input"]["foundation_refresh"] == 1.0
    assert "foundation_refresh 1" in step_speed.format_report(r)


def test_step_speed_times_stage_two_with_a_warm_cache(step_speed: ModuleType, tmp_path: Path) -> None:
    cfg_u, cfg_m = step_speed.make_configs(tmp_path, 64, 2, 2)
    # The same network for both methods (Mean Teacher's student has no foundation-feature projection).
    assert (cfg_m.model.arch, cfg_m.model.channels, cfg_m.model.vit_dim) == (
        cfg_u.model.arch, cfg_u.model.channels, cfg_u.model.vit_dim)
    assert (cfg_m.train.batch_size, cfg_m.train.patch_size) == (cfg_u.train.batch_size, cfg_u.train.patch_size)
    with step_speed.fake_teacher_registered():
        trainer = step_speed.prepared_trainer(cfg_u, tmp_path / "run")
        cache = trainer.method.cache
        misses = cache.stats.misses
        assert misses > 0  # set-up filled the cache
        trainer.step = step_speed.STAGE2_START
        scalars = trainer.train_step(trainer.batches[step_speed.STAGE2_START])
    assert scalars["stage"] == 2.0
    assert cache.stats.misses == misses  # the step read every embedding from the cache


def _stage2_run(step_speed: ModuleType, root: Path, steps: int = 2) -> tuple[list[dict[str, float]], dict[str, Any]]:
    cfg_u, _ = step_speed.make_configs(root, 64, 2, 2)
    with step_speed.fake_teacher_registered():
        trainer = step_speed.prepared_trainer(cfg_u, root / "run")
        losses = []
        for i in range(steps):
            trainer.step = step_speed.STAGE2_START + i
            losses.append(trainer.train_step(trainer.batches[step_speed.STAGE2_START + i]))
    return losses, {k: v.clone() for k, v in trainer.method.state_dict()["network"].items()}


def test_class_argmax_leaves_uncol_stage2_identical(step_speed: ModuleType, tmp_path: Path, monkeypatch) -> None:
    """The same losses and weights with ``class_argmax`` as with the ``argmax`` it replaced."""
    fast_losses, fast_weights = _stage2_run(step_speed, tmp_path / "fast")

    def old(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return probs.argmax(dim)

    import uncol.methods.uncol.method as method_module
    import uncol.methods.uncol.pseudo_labels as pl_module

    monkeypatch.setattr(method_module, "class_argmax", old)
    monkeypatch.setattr(pl_module, "class_argmax", old)
    old_losses, old_weights = _stage2_run(step_speed, tmp_path / "old")
    assert fast_losses == old_losses
    assert fast_weights.keys() == old_weights.keys()
    assert all(torch.equal(fast_weights[k], old_weights[k]) for k in fast_weights)
    assert fast_losses[0]["pseudo_supervised"] > 0  # the pseudo-labels took part


@pytest.mark.parametrize("shape", [(2, 4, 9, 7), (3, 3, 5, 6, 4), (1, 2, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_class_argmax_is_argmax_including_ties(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    tied = torch.randint(0, 3, shape, generator=gen).to(dtype)  # many equal maxima: the first one wins
    probs = torch.softmax(torch.randn(shape, generator=gen), dim=1).to(dtype)
    for x in (tied, probs, torch.zeros(shape, dtype=dtype)):
        assert torch.equal(class_argmax(x), x.argmax(1))
    assert torch.equal(class_argmax(probs, dim=-1), probs.argmax(-1))


# ---- loader_speed ------------------------------------------------------------------------------------


def test_loader_speed_on_synthetic_nifti(loader_speed: ModuleType, tmp_path: Path) -> None:
    r = loader_speed.measure("synthetic", cases=6, steps=2, rounds=1, workers=(0, 1), warmup=0, workdir=tmp_path)
    assert r["images_per_step"] == 4  # 2 labeled + 2 unlabeled (Mean Teacher)
    assert r["method"] == "mean_teacher"
    _check_summary(r["step"], 2)
    assert r["consumed_images_per_s"] == pytest.approx(4 / (r["step"]["median_ms"] / 1000.0))
    assert set(r["loader"]) == {0, 1}
    for lr in r["loader"].values():
        assert lr["images_per_s"] > 0
        assert lr["ratio"] == pytest.approx(lr["images_per_s"] / r["consumed_images_per_s"])
    report = loader_speed.format_report(r)
    assert "`train.num_workers=1`" in report and "target >= 3x" in report


def test_loader_pass_delivers_the_engine_batches(loader_speed: ModuleType, tmp_path: Path) -> None:
    cfg = loader_speed.make_config("synthetic", tmp_path, 6)
    from uncol.engine import Trainer

    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    first, rest, images = loader_speed.loader_pass(trainer, 5, 3, 0)
    assert images == 3 * 4 and first >= 0 and rest > 0


def test_loader_speed_refuses_an_unknown_dataset(loader_speed: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset must be one of"):
        loader_speed.make_config("imagenet", tmp_path, 3)


# ---- size_scaling ------------------------------------------------------------------------------------


def test_size_scaling_child_reports_time_and_memory(size_scaling: ModuleType) -> None:
    for shape in ([32, 32], [16, 16, 16]):
        for net in size_scaling.NETWORKS:
            r = size_scaling.child(net, shape, batch=1, n=1, warmup=0)
            _check_summary(r["step"], 1)
            assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0
            assert r["parameters"] > 0 and r["shape"] == shape


def test_size_scaling_table_and_growth(size_scaling: ModuleType) -> None:
    def row(shape: list[int], u: float, s: float) -> dict[str, Any]:
        return {"shape": shape, "batch": 2, "unet": {"step_ms": u, "step_memory_mb": u, "peak_rss_mb": 900 + u},
                "student": {"step_ms": s, "step_memory_mb": s, "peak_rss_mb": 900 + s},
                "time_ratio": s / u, "memory_ratio": s / u}

    table = size_scaling.format_table([row([128, 128], 10, 15), row([256, 256], 40, 50), row([32, 32, 32], 5, 6)])
    assert "| 256x256 (2) | 40 | 50 | 1.25x |" in table
    assert "256x256 vs 128x128 (4.0x the pixels): U-Net time 4.0x, memory 4.0x; student time 3.3x" in table
    assert "32x32x32 vs" not in table  # one 3D size: no growth line


@pytest.mark.slow
def test_size_scaling_children_in_fresh_processes(size_scaling: ModuleType) -> None:
    rows = size_scaling.measure([[32, 32]], batch=1, n=1, repeats=1)
    assert rows[0]["shape"] == [32, 32]
    assert rows[0]["time_ratio"] > 0 and rows[0]["unet"]["step_memory_mb"] >= 0


# ---- speed_options -----------------------------------------------------------------------------------


def test_speed_options_measure_and_report(speed_options: ModuleType) -> None:
    r = speed_options.measure(size=32, batch=1, n=1, profile=1, shape_3d=(16, 16, 16))
    for m in [*r["channels_last"].values(), *r["inference_mode"].values()]:
        _check_summary(m["default"], 1)
        _check_summary(m["option"], 1)
        assert m["ratio"] > 0
    assert all(m["identical_outputs"] for m in r["inference_mode"].values())
    assert all(m["max_logit_difference"] < 1e-3 for m in r["channels_last"].values())
    assert any("convolution" in op for op, _, _ in r["profile"])
    report = speed_options.format_report(r)
    assert "channels_last, student fwd+bwd" in report and "inference_mode vs no_grad, evaluation" in report
    assert "channels_last, unet 3D 16x16x16 fwd+bwd" in report
    assert "channels_last, whole uncol stage2 training step" in report
