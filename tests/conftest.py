"""Shared pytest fixtures: tiny datasets built at run time, and the optional real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fixtures_data import make_hdf5_dataset, make_image2d_dataset, make_nifti_dataset
from uncol.config import DataConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored afterwards: tests share the machine with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def nifti_dataset(tmp_path: Path) -> DataConfig:
    """6 labeled 3D NIfTI cases (24x24x16, 3 classes) in ``images/`` + ``labels/``."""
    return make_nifti_dataset(tmp_path / "nifti")


@pytest.fixture
def nnunet_dataset(tmp_path: Path) -> DataConfig:
    """6 nnU-Net style cases (``imagesTr/case_000_0000.nii.gz``, 2 channels) with 2 test cases."""
    return make_nifti_dataset(tmp_path / "nnunet", layout="nnunet", channels=2, n_test=2)


@pytest.fixture
def hdf5_dataset(tmp_path: Path) -> DataConfig:
    """ACDC-like HDF5: 6 training patients x 4 slices (2D), 2 val and 2 test volumes (3D), 4 classes."""
    return make_hdf5_dataset(tmp_path / "hdf5")


@pytest.fixture
def image2d_dataset(tmp_path: Path) -> DataConfig:
    """6 grayscale PNG images (32x40) with binary 0/255 masks in ``masks/``."""
    return make_image2d_dataset(tmp_path / "image2d")


def shared_data_dir() -> Path:
    """The shared real datasets: ``$UNCOL_SHARED_DATA`` or ``../shared/data`` next to the repo."""
    return Path(os.environ.get("UNCOL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path of the shared real datasets; skips the test when the folder is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set UNCOL_SHARED_DATA)")
    return path
