"""Tiny end-to-end runs of the semi-supervised baselines (Mean Teacher, UA-MT, BCP), shared by their tests.

2D: an ACDC-like HDF5 set of 4 training patients x 3 slices (2 labeled, 2 unlabeled), 32 x 32, 3 classes.
3D: 6 NIfTI volumes of 16^3 (2 labeled, 2 unlabeled, 1 validation, 1 test), 3 classes. Small U-Nets.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures_data import make_hdf5_dataset, make_nifti_dataset
from uncol.config import Config, DataConfig, config_from_dict
from uncol.engine import RunPaths


@pytest.fixture(scope="module")
def data2d(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    root = tmp_path_factory.mktemp("baseline2d")
    return make_hdf5_dataset(root / "data", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)


@pytest.fixture(scope="module")
def data3d(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    root = tmp_path_factory.mktemp("baseline3d")
    return make_nifti_dataset(root / "data", n_cases=6, shape=(16, 16, 16), num_classes=3, spacing=(1.0, 1.0, 1.0))


def tiny_config(
    tmp_path: Path, data: DataConfig, method: str, dims: int = 2, options: dict[str, Any] | None = None, **train: Any
) -> Config:
    """A 6-step run of ``method`` (validation at steps 3 and 6, checkpoints every 2 steps)."""
    values: dict[str, Any] = {
        "name": f"{method}{dims}d",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 2 if dims == 2 else 0.5, "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"arch": f"unet{dims}d", "channels": [4, 8, 16]},
        "augment": {"flip": True, "rotate90": dims == 2, "rotate_degrees": 10.0, "intensity": True},
        "method": {"name": method, method: options or {}},
        "train": {
            "iterations": 6, "batch_size": 2, "patch_size": [32, 32] if dims == 2 else [16, 16, 16], "val_every": 3,
            "checkpoint_every": 2, "log_every": 1, "threads": 1, "lr": 0.01, "device": "cpu",
        }
        | train,
    }
    return config_from_dict(values)


def read_log(run: Path) -> list[dict[str, str]]:
    with open(RunPaths(run).log_csv) as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def modules_of(run: Path, which: str = "latest") -> dict[str, dict[str, torch.Tensor]]:
    path = RunPaths(run).latest if which == "latest" else Path(which)
    return torch.load(path, map_location="cpu", weights_only=False)["modules"]


def assert_same_modules(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    assert a.keys() == b.keys()
    for part in a:
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


def teacher_differs_from_student(modules: dict[str, dict[str, torch.Tensor]]) -> bool:
    """Whether any float parameter of the EMA teacher differs from the student's."""
    student, teacher = modules["network"], modules["ema"]
    return any(
        not torch.equal(teacher[f"module.{k}"], v) for k, v in student.items() if v.is_floating_point()
    )
