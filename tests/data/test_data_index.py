"""Dataset discovery: uncol.data.index.discover."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures_data import make_hdf5_dataset, make_image2d_dataset, make_nifti_dataset, write_h5, write_nifti
from uncol.config import DataConfig
from uncol.data.index import discover, make_grouper
from uncol.errors import ConfigError, DataError


def test_nifti_folders(nifti_dataset: DataConfig) -> None:
    found = discover(nifti_dataset)
    assert [c.case_id for c in found.train] == [f"case_{i:03d}" for i in range(6)]
    assert found.val is None and found.test is None and found.unlabeled == []
    c = found.train[0]
    assert c.fmt == "nifti" and c.ndim == 3 and c.group == c.case_id
    assert c.label_path is not None and c.label_path.parent.name == "labels"


def test_nnunet_suffix_test_and_unlabeled(tmp_path: Path) -> None:
    cfg = make_nifti_dataset(tmp_path, layout="nnunet", channels=3, n_test=2, n_unlabeled=2)
    found = discover(cfg)
    assert [c.case_id for c in found.train] == [f"case_{i:03d}" for i in range(6)]  # _0001/_0002 not cases
    assert found.train[0].label_path is not None and found.train[0].label_path.name == "case_000.nii.gz"
    assert found.test is not None and [c.case_id for c in found.test] == ["test_000", "test_001"]
    assert all(c.label_path is not None for c in found.test)
    assert [c.case_id for c in found.unlabeled] == ["extra_000", "extra_001"]
    assert all(c.label_path is None for c in found.unlabeled)


def test_nifti_exact_label_name_wins_over_channel_suffix(tmp_path: Path) -> None:
    # Plain case ids that happen to end in 4 digits are not mistaken for channels of one case.
    for i in range(3):
        write_nifti(tmp_path / "imagesTr" / f"img_{i:04d}.nii.gz", np.zeros((4, 4, 4), np.float32))
        write_nifti(tmp_path / "labelsTr" / f"img_{i:04d}.nii.gz", np.zeros((4, 4, 4), np.uint8))
    found = discover(DataConfig(root=str(tmp_path)))
    assert [c.case_id for c in found.train] == ["img_0000", "img_0001", "img_0002"]


def test_missing_label_names_image(nifti_dataset: DataConfig) -> None:
    (Path(nifti_dataset.root) / "labels" / "case_003.nii.gz").unlink()
    with pytest.raises(DataError, match="case_003.nii.gz: missing label"):
        discover(nifti_dataset)


def test_empty_folder_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(DataError, match="imagesTr: empty folder"):
        discover(DataConfig(root=str(tmp_path)))
    with pytest.raises(DataError, match="nope: folder not found"):
        discover(DataConfig(root=str(tmp_path), images_dir="nope"))
    with pytest.raises(DataError, match="dataset root folder not found"):
        discover(DataConfig(root=str(tmp_path / "absent")))


def test_group_regex(hdf5_dataset: DataConfig) -> None:
    found = discover(hdf5_dataset)
    assert {c.group for c in found.train} == {c.case_id.split("_")[0] for c in found.train}
    assert len({c.group for c in found.train}) == 6
    bad = dataclasses.replace(hdf5_dataset, group_regex=r"^(subject\d+)")
    with pytest.raises(DataError, match=r"case id 'patient\d+_frame01_slice_\d' does not match data.group_regex"):
        discover(bad)
    with pytest.raises(ConfigError, match="capture group"):
        make_grouper(r"^patient\d+")
    with pytest.raises(ConfigError, match="invalid regex"):
        make_grouper(r"^(patient")


def test_hdf5_lists_order_and_ndim(hdf5_dataset: DataConfig) -> None:
    root = Path(hdf5_dataset.root)
    found = discover(hdf5_dataset)
    listed = (root / "train_slices.list").read_text().split()
    assert [c.case_id for c in found.train] == listed
    assert all(c.ndim == 2 and c.fmt == "hdf5" and c.label_path == c.image_path for c in found.train)
    assert found.val is not None and found.test is not None
    assert all(c.ndim == 3 for c in found.val + found.test)


def test_hdf5_list_entries_normalised(tmp_path: Path) -> None:
    write_h5(tmp_path / "a.h5", np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    write_h5(tmp_path / "b.h5", np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    (tmp_path / "train.list").write_text("  a.h5 \n\n b\n")
    found = discover(DataConfig(format="hdf5", root=str(tmp_path), train_list="train.list"))
    assert [c.case_id for c in found.train] == ["a", "b"]


def test_hdf5_bad_lists(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path)
    root = Path(cfg.root)
    (root / "empty.list").write_text("\n \n")
    with pytest.raises(DataError, match="empty.list: empty list"):
        discover(dataclasses.replace(cfg, train_list="empty.list"))
    with pytest.raises(DataError, match="missing.list: list file not found"):
        discover(dataclasses.replace(cfg, val_list="missing.list"))
    (root / "ghost.list").write_text("patient999_frame01\n")
    with pytest.raises(DataError, match="patient999_frame01.h5: file of case 'patient999_frame01' not found"):
        discover(dataclasses.replace(cfg, test_list="ghost.list"))
    with pytest.raises(DataError, match="train_list is not set"):
        discover(dataclasses.replace(cfg, train_list=""))


def test_hdf5_missing_label_key(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path, n_unlabeled=1)
    with pytest.raises(DataError, match=r"_slice_1.h5: no label dataset 'label'.*unlabeled.list"):
        discover(dataclasses.replace(cfg, train_list="unlabeled.list"))


def test_image2d_stem_matching(image2d_dataset: DataConfig) -> None:
    found = discover(image2d_dataset)
    assert len(found.train) == 6
    c = found.train[0]
    assert c.fmt == "image2d" and c.ndim == 2 and c.case_id == "img_000"
    assert c.label_path is not None and c.label_path.parent.name == "masks"


def test_image2d_suffix_matching(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, mask_match="suffix", mask_suffix="_segmentation", image_ext=".jpg")
    found = discover(cfg)
    assert [c.case_id for c in found.train][:2] == ["img_000", "img_001"]
    assert found.train[0].label_path is not None and found.train[0].label_path.name == "img_000_segmentation.png"
    with pytest.raises(DataError, match="img_000.jpg: missing mask"):
        discover(dataclasses.replace(cfg, mask_match="stem"))


def test_image2d_suffix_same_folder(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, mask_match="suffix", n_cases=3)
    for p in (tmp_path / "masks").iterdir():
        shutil.move(p, tmp_path / "images" / p.name)
    found = discover(dataclasses.replace(cfg, labels_dir="images"))
    assert [c.case_id for c in found.train] == ["img_000", "img_001", "img_002"]


def test_image2d_regex_matching(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, n_cases=3)
    for p in sorted((tmp_path / "images").iterdir()):
        p.rename(p.with_name("scan-" + p.name))
    for p in sorted((tmp_path / "masks").iterdir()):
        p.rename(p.with_name("gt-" + p.name))
    found = discover(dataclasses.replace(cfg, mask_match="regex", match_regex=r"(img_\d+)"))
    assert [c.case_id for c in found.train] == ["img_000", "img_001", "img_002"]
    assert found.train[0].label_path is not None and found.train[0].label_path.name == "gt-img_000.png"
    with pytest.raises(ConfigError, match="match_regex"):
        discover(dataclasses.replace(cfg, mask_match="regex", match_regex=r"img_\d+"))


def test_image2d_ambiguous_mask(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, n_cases=2)
    shutil.copy(tmp_path / "masks" / "img_001.png", tmp_path / "masks" / "img_001.bmp")
    with pytest.raises(DataError, match="img_001.png: ambiguous mask"):
        discover(cfg)


def test_unlabeled_dir_any_format(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, n_cases=2, n_unlabeled=2)
    write_h5(tmp_path / "unlabeled" / "more.h5", np.zeros((8, 8), np.float32))
    (tmp_path / "unlabeled" / "README.txt").write_text("ignored")
    found = discover(cfg)
    assert [(c.case_id, c.fmt) for c in found.unlabeled] == [
        ("extra_000", "image2d"),
        ("extra_001", "image2d"),
        ("more", "hdf5"),
    ]
    shutil.rmtree(tmp_path / "unlabeled")
    (tmp_path / "unlabeled").mkdir()
    with pytest.raises(DataError, match="unlabeled: empty folder"):
        discover(cfg)


def test_duplicate_case_ids(nifti_dataset: DataConfig) -> None:
    root = Path(nifti_dataset.root)
    shutil.copy(root / "labels" / "case_002.nii.gz", root / "labels" / "case_002.nii")
    with pytest.raises(DataError, match=r"case_002.nii(.gz)?: duplicate of label case_002"):
        discover(nifti_dataset)
