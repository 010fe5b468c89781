"""Data-parallel training under torchrun: 2 CPU processes on gloo against 1 process with the doubled batch.

The 2-process run is launched as torchrun launches it (``python -m torch.distributed.run``) on a
tiny 2D configuration (instance norm: BatchNorm statistics would be per rank); its 4 steps take about
a second, the rest of the launch is the two processes importing torch and uncol.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fixtures_data import make_hdf5_dataset
from uncol.config import AugmentConfig, Config, config_from_dict
from uncol.data.index import Problems, scan
from uncol.data.splits import make_splits
from uncol.data.training import SampleSet, StepBatches
from uncol.distributed_training import (
    TrainingRanks,
    replica_mismatch,
    shard_indices,
    training_ranks,
    use_sync_batchnorm,
)
from uncol.engine import Trainer
from uncol.errors import ConfigError
from uncol.runs import RunPaths

#: Largest absolute difference allowed between the weights of the 2-process run and of the 1-process
#: run with the doubled batch. They differ only by float rounding (the mean of two half-batch
#: gradients against the gradient of the whole batch's mean): 4e-8 measured here.
WEIGHT_TOLERANCE = 1e-6


def tiny_config(tmp_path: Path, method: str = "supervised", **train: object) -> Config:
    data = make_hdf5_dataset(
        tmp_path / "data", n_train=4, n_val=3, n_test=1, slices=3, shape=(32, 32), num_classes=3
    )
    values = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16], "norm": "instance"},
        "augment": {"rotate_degrees": 10.0},  # the ranks draw the same augmentations as one process
        "method": {"name": method},
        "train": {
            "iterations": 6, "batch_size": 2, "patch_size": [32, 32], "val_every": 3,
            "checkpoint_every": 3, "log_every": 1, "threads": 1, "lr": 0.01, "device": "cpu",
        }
        | train,
    }
    return config_from_dict(values)


def torchrun(config: Path, run_dir: Path, *args: str, nproc: int = 2, script: str | None = None) -> None:
    """``uncol train`` under torchrun with ``nproc`` CPU processes; fails the test with their output.

    ``script``: a file of tests/ to run instead of ``-m uncol.cli`` (it takes the same arguments).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        *(["-m", "uncol.cli"] if script is None else [str(Path(__file__).parent / script)]), "train", str(config), "--set", f"output_dir={run_dir.parent}",
        "--set", f"name={run_dir.name}", "--no-eval", "--quiet", *args,
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"


def max_difference(wa: dict[str, torch.Tensor], wb: dict[str, torch.Tensor]) -> float:
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())


def log_steps(run: Path) -> list[int]:
    import csv

    with open(RunPaths(run).log_csv, newline="") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


# ---- the 2-process runs ------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_two_processes_match_one_with_the_doubled_batch_and_resume_with_one(tmp_path):
    # Mean Teacher without teacher noise (its noise is drawn per rank, so it would differ from one
    # process's): labeled and unlabeled streams, and an EMA teacher that every rank updates from its
    # own copy of the weights (the engine also compares all modules across the ranks at the end).
    cfg = tiny_config(tmp_path, method="mean_teacher")
    cfg = config_from_dict(cfg.to_dict() | {"method": {"name": "mean_teacher", "mean_teacher": {"noise_std": 0.0}}})
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(cfg.to_yaml())
    two = tmp_path / "runs" / "two"
    torchrun(yaml, two, "--stop-after", "4")  # 2 processes x batch 2, stopped with a checkpoint at step 4

    one = tmp_path / "runs" / "one"
    doubled = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=4))
    Trainer(doubled, one, show_progress=False, stop_after=4, checkpoint_on_stop=True).fit()

    a, b = (torch.load(RunPaths(r).latest, map_location="cpu", weights_only=True) for r in (one, two))
    assert a["step"] == b["step"] == 4
    for module in ("network", "ema"):
        diff = max_difference(a["modules"][module], b["modules"][module])
        assert diff <= WEIGHT_TOLERANCE, f"{module}: 2 processes vs 1 with the doubled batch: max |dw| = {diff:.3g}"
    # One writer: every step logged once, validation (shared out over the ranks) recorded once.
    assert log_steps(two) == [1, 2, 3, 4]
    assert len(RunPaths(two).val_csv.read_text().strip().splitlines()) == 2  # header + step 3
    assert json.loads(RunPaths(two).summary.read_text())["images_seen"] == {"labeled": 16, "unlabeled": 16}

    # Resume with another number of processes: 1 process (batch 2, half the global batch) for steps 5-6.
    done = Trainer(dataclasses.replace(cfg, name="two"), two, resume=True, show_progress=False).fit()
    assert done.steps_done == 6 and RunPaths(two).final.exists()
    assert log_steps(two) == list(range(1, 7))
    assert json.loads(RunPaths(two).summary.read_text())["images_seen"]["labeled"] == 16 + 2 * 2


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bcp", "uncol"])
def test_methods_with_several_forwards_and_extra_modules_train_on_two_processes(tmp_path, monkeypatch, method):
    # BCP: three forward passes per step and a teacher restarted from the student's state; UnCoL: the
    # stand-in foundation teacher's cache filled by rank 0 first, distillation projections outside the
    # network, a batch-dependent number of forwards, BatchNorm. The engine fails the run if the ranks'
    # modules (weights, BatchNorm statistics, EMA teachers) differ at the end.
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "methods"))
    from baseline_runs import tiny_config as baseline_config
    from test_uncol import uncol_config

    data = make_hdf5_dataset(tmp_path / "data", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)
    cfg = uncol_config(tmp_path, data) if method == "uncol" else baseline_config(tmp_path, data, method)
    yaml = tmp_path / "cfg.yaml"
    yaml.write_text(cfg.to_yaml())
    run = tmp_path / "runs" / method
    torchrun(yaml, run, script="train_with_fake_teacher.py")
    assert log_steps(run) == list(range(1, 7)) and RunPaths(run).final.exists()


@pytest.mark.slow
def test_a_run_resumed_with_the_same_number_of_processes_is_bit_identical(tmp_path):
    cfg = tiny_config(tmp_path)
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(cfg.to_yaml())
    whole, resumed = tmp_path / "runs" / "whole", tmp_path / "runs" / "resumed"
    torchrun(yaml, whole)
    torchrun(yaml, resumed, "--stop-after", "4")
    torchrun(yaml, resumed, "--resume")
    a, b = (torch.load(RunPaths(r).final, map_location="cpu", weights_only=True)["network"] for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- one process standing in for a rank ---------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_ranks_other_than_0_write_nothing(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, iterations=3)
    run = tmp_path / "runs" / "rank1"
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        trainer = Trainer(cfg, run, show_progress=False)
        trainer.ranks = TrainingRanks(rank=1, world_size=2)  # rank 1 of 2, in a group of one for the test
        summary = trainer.fit()
    finally:
        dist.destroy_process_group()
    assert summary.steps_done == 3
    assert not run.exists() or not any(run.rglob("*")), sorted(run.rglob("*"))


def test_each_rank_draws_its_slice_of_the_global_batch(tmp_path):
    cfg = tiny_config(tmp_path)
    labeled = SampleSet(make_splits(scan(cfg.data, Problems(strict=True)), cfg.split).labeled, cfg, use_labels=True)
    augment = AugmentConfig(flip=True, rotate_degrees=15.0)

    def batch(b: int, rank: int = 0, world: int = 1, views: int = 1) -> dict:
        return StepBatches(labeled, b, 7, augment, views=views, rank=rank, world_size=world)[5]

    for views in (1, 2):
        whole = batch(4, views=views)
        halves = [batch(2, r, 2, views) for r in range(2)]
        assert torch.equal(torch.cat([h["image"] for h in halves]), whole["image"])
        assert torch.equal(torch.cat([h["label"] for h in halves]), whole["label"])
        assert halves[0]["ids"] + halves[1]["ids"] == whole["ids"]
    assert not np.array_equal(batch(2, 0, 2)["image"].numpy(), batch(2, 1, 2)["image"].numpy())


def test_plain_processes_are_not_distributed():
    assert training_ranks({}) == TrainingRanks(0, 1, 0)
    assert not training_ranks({"RANK": "0", "WORLD_SIZE": "1"}).distributed
    ranks = training_ranks({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ranks.distributed and not ranks.is_writer
    assert shard_indices(5, ranks) == [1, 3]


def test_replica_mismatch_names_the_module_that_differs():
    same = {"network": "a", "ema": "b"}
    assert replica_mismatch([same, dict(same)]) == []
    assert replica_mismatch([same, {"network": "a", "ema": "c"}]) == ["ema"]


def test_sync_batchnorm_on_the_cpu_is_a_config_error():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert use_sync_batchnorm(net, torch.device("cpu"), enabled=False) is net
    with pytest.raises(ConfigError, match="train.sync_batchnorm"):
        use_sync_batchnorm(net, torch.device("cpu"), enabled=True)
