"""Validated case loading: uncol.data.readers.load_case."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fixtures_data import make_hdf5_dataset, make_image2d_dataset, make_nifti_dataset, write_h5, write_nifti
from uncol.config import DataConfig
from uncol.data.index import discover
from uncol.data.readers import load_case
from uncol.data.types import Case
from uncol.errors import ConfigError, DataError


def _case(image: Path, label: Path | None, fmt: str, ndim: int = 3) -> Case:
    return Case(case_id=image.name.split(".")[0], image_path=image, label_path=label, group="g", fmt=fmt, ndim=ndim)


def test_nifti_case(nifti_dataset: DataConfig) -> None:
    case = discover(nifti_dataset).train[0]
    data = load_case(case, nifti_dataset)
    assert data.case_id == "case_000"
    assert data.image.shape == (1, 24, 24, 16)
    assert data.label is not None and data.label.shape == (24, 24, 16)
    assert set(np.unique(data.label)) == {0, 1, 2}
    assert data.spacing == pytest.approx((1.5, 1.0, 2.0))
    assert data.slice_axis == 2
    assert data.meta["path"] == str(case.image_path) and data.meta["label_path"] == str(case.label_path)


def test_nnunet_channels_stacked(nnunet_dataset: DataConfig) -> None:
    case = discover(nnunet_dataset).train[0]
    assert case.image_path.name == "case_000_0000.nii.gz"
    data = load_case(case, nnunet_dataset)
    assert data.image.shape == (2, 24, 24, 16)
    assert data.image[1].mean() > 1.5 * data.image[0].mean()  # channel 1 was written at twice the scale


def test_hdf5_cases_2d_and_3d(hdf5_dataset: DataConfig) -> None:
    found = discover(hdf5_dataset)
    assert found.val is not None
    sl = load_case(found.train[0], hdf5_dataset, expect_ndim=2)
    assert sl.image.shape == (1, 32, 32) and sl.spacing == (1.0, 1.0)
    vol = load_case(found.val[0], hdf5_dataset, expect_ndim=3)
    assert vol.image.shape == (1, 4, 32, 32) and vol.slice_axis == 0


def test_spacing_from_config_and_slice_axis(hdf5_dataset: DataConfig) -> None:
    cfg = dataclasses.replace(hdf5_dataset, spacing=[10.0, 1.25, 1.5], slice_axis=1)
    found = discover(cfg)
    assert found.val is not None
    assert load_case(found.val[0], cfg).spacing == (10.0, 1.25, 1.5)
    assert load_case(found.val[0], cfg).slice_axis == 1
    assert load_case(found.train[0], cfg).spacing == (1.25, 1.5)  # 2D slice: in-plane values
    with pytest.raises(ConfigError, match="data.slice_axis"):
        load_case(found.val[0], dataclasses.replace(cfg, slice_axis=3))


def test_nifti_spacing_wins_over_config(nifti_dataset: DataConfig) -> None:
    cfg = dataclasses.replace(nifti_dataset, spacing=[9.0, 9.0, 9.0])
    assert load_case(discover(cfg).train[0], cfg).spacing == pytest.approx((1.5, 1.0, 2.0))


def test_image2d_rgb_case(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, rgb=True, n_cases=2)
    data = load_case(discover(cfg).train[0], cfg, expect_ndim=2)
    assert data.image.shape == (3, 32, 40)
    assert data.label is not None and set(np.unique(data.label)) == {0, 1}


def test_expect_ndim_mismatch(hdf5_dataset: DataConfig) -> None:
    found = discover(hdf5_dataset)
    assert found.val is not None
    with pytest.raises(DataError, match=r"patient\d+_frame01.h5: 3D volume where a 2D image is expected"):
        load_case(found.val[0], hdf5_dataset, expect_ndim=2)
    with pytest.raises(DataError, match=r"_slice_\d.h5: 2D image where a 3D volume is expected"):
        load_case(found.train[0], hdf5_dataset, expect_ndim=3)


def test_nan_image(tmp_path: Path) -> None:
    img = np.zeros((6, 6, 4), np.float32)
    img[1, 1, 1] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", img)
    with pytest.raises(DataError, match="nan.nii.gz.*NaN or Inf"):
        load_case(_case(path, None, "nifti"), DataConfig())
    path = write_h5(tmp_path / "inf.h5", np.array([[0.0, np.inf]], np.float32))
    with pytest.raises(DataError, match="inf.h5.*NaN or Inf"):
        load_case(_case(path, None, "hdf5", 2), DataConfig(format="hdf5"))


def test_label_out_of_range(tmp_path: Path) -> None:
    img = write_nifti(tmp_path / "img.nii.gz", np.zeros((6, 6, 4), np.float32))
    lab = write_nifti(tmp_path / "lab.nii.gz", np.full((6, 6, 4), 3, np.uint8))
    with pytest.raises(DataError, match=r"lab.nii.gz: label values outside \[0, 3\): \[3\]"):
        load_case(_case(img, lab, "nifti"), DataConfig(num_classes=3))
    neg = write_nifti(tmp_path / "neg.nii.gz", np.full((6, 6, 4), -1, np.int16))
    with pytest.raises(DataError, match="neg.nii.gz.*outside"):
        load_case(_case(img, neg, "nifti"), DataConfig(num_classes=3))


def test_shape_mismatch(tmp_path: Path) -> None:
    img = write_nifti(tmp_path / "img.nii.gz", np.zeros((6, 6, 4), np.float32))
    lab = write_nifti(tmp_path / "small.nii.gz", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"small.nii.gz: label shape \(6, 6, 3\) differs .*img.nii.gz"):
        load_case(_case(img, lab, "nifti"), DataConfig())


def test_affine_mismatch_and_tolerance(tmp_path: Path) -> None:
    img = write_nifti(tmp_path / "img.nii.gz", np.zeros((6, 6, 4), np.float32), spacing=(1.0, 1.0, 1.0))
    close = np.diag([1.0, 1.0, 1.0, 1.0])
    close[:3, 3] = [-10.0 + 5e-4, 5.0, 2.5]
    ok = write_nifti(tmp_path / "close.nii.gz", np.zeros((6, 6, 4), np.uint8), affine=close)
    load_case(_case(img, ok, "nifti"), DataConfig())
    far = write_nifti(tmp_path / "far.nii.gz", np.zeros((6, 6, 4), np.uint8), spacing=(2.0, 1.0, 1.0))
    with pytest.raises(DataError, match="far.nii.gz: label affine differs.*img.nii.gz"):
        load_case(_case(img, far, "nifti"), DataConfig())


def test_truncated_label(tmp_path: Path) -> None:
    cfg = make_nifti_dataset(tmp_path, n_cases=2)
    case = discover(cfg).train[1]
    assert case.label_path is not None
    data = case.label_path.read_bytes()
    case.label_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="case_001.nii.gz.*truncated"):
        load_case(case, cfg)


def test_hdf5_unlabeled_case_reads_no_label(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path, n_unlabeled=1)
    unl = discover(cfg).unlabeled[0]
    assert unl.label_path is None
    assert load_case(unl, cfg).label is None
