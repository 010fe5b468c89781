"""Dataset check and layout detection: uncol.data.check, uncol.data.layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_data import (
    make_hdf5_dataset,
    make_image2d_dataset,
    make_nifti_dataset,
    truncate,
    write_h5,
    write_nifti,
)
from uncol.config import DataConfig
from uncol.data.check import check_dataset
from uncol.data.layout import detect_layout
from uncol.errors import DataError


def _problem(report_problems: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in report_problems)


def test_clean_dataset_counts_and_stats(hdf5_dataset: DataConfig) -> None:
    report = check_dataset(hdf5_dataset)
    assert report.ok, report.problems
    assert report.counts == {
        "train": {"cases": 24, "groups": 6},
        "val": {"cases": 2, "groups": 2},
        "test": {"cases": 2, "groups": 2},
    }
    assert report.shapes["2"] == {"cases": 24, "min": [32, 32], "max": [32, 32]}
    assert report.shapes["3"]["min"] == [4, 32, 32]
    assert report.spacings == {"1x1": 24, "1x1x1": 4}
    assert report.labeled_cases == 28 and len(report.class_voxels) == 4
    assert report.class_cases[0] == 28 and sum(report.class_voxels) == 24 * 32 * 32 + 4 * 4 * 32 * 32
    assert 0.0 <= report.intensity["min"] <= report.intensity["max"] <= 1.0
    text = report.to_text()
    assert "OK: no problems found" in text and "train" in text
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_nifti_problems_all_collected(tmp_path: Path) -> None:
    cfg = make_nifti_dataset(tmp_path, n_cases=7, num_classes=3)
    root = Path(cfg.root)
    sp = (1.5, 1.0, 2.0)  # the fixture's spacing: rewritten files keep the affine of their partner
    truncate(root / "images" / "case_000.nii.gz")
    write_nifti(root / "labels" / "case_001.nii.gz", np.zeros((24, 24, 15), np.uint8), sp)  # shape mismatch
    write_nifti(root / "labels" / "case_002.nii.gz", np.full((24, 24, 16), 5, np.uint8), sp)  # out of range
    bad = np.zeros((24, 24, 16), np.float32)
    bad[0, 0, 0] = np.inf
    write_nifti(root / "images" / "case_003.nii.gz", bad, sp)  # Inf
    (root / "labels" / "case_004.nii.gz").unlink()  # missing label
    write_nifti(root / "labels" / "orphan.nii.gz", np.zeros((4, 4, 4), np.uint8))  # orphan label
    write_nifti(root / "images" / "case_005.nii.gz", np.zeros((24, 24), np.float32), sp)  # 2D among 3D
    report = check_dataset(cfg)
    assert not report.ok
    p = report.problems
    assert _problem(p, "case_000.nii.gz", "truncated")
    assert _problem(p, "case_001.nii.gz", "label shape (24, 24, 15) differs")
    assert _problem(p, "case_002.nii.gz", "outside [0, 3)")
    assert _problem(p, "case_003.nii.gz", "NaN or Inf")
    assert _problem(p, "case_004.nii.gz", "missing label")
    assert _problem(p, "orphan.nii.gz", "orphan label")
    assert _problem(p, "case_005.nii.gz", "2D image where a 3D volume is expected")
    assert report.counts["train"]["cases"] == 6  # the case without label is left out
    assert "problem(s):" in report.to_text()


def test_hdf5_problems(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path)
    root = Path(cfg.root)
    listed = (root / "train_slices.list").read_text().split()
    truncate(root / "data" / f"{listed[0]}.h5")
    write_h5(root / "data" / f"{listed[1]}.h5", np.zeros((4, 32, 32), np.float32), np.zeros((4, 32, 32), np.uint8))
    (root / "empty.list").write_text("")
    report = check_dataset(dataclasses.replace(cfg, unlabeled_list="empty.list"))
    assert _problem(report.problems, listed[0], "truncated")
    assert _problem(report.problems, listed[1], "3D volume where a 2D image is expected", "train")
    assert _problem(report.problems, "empty.list", "empty list")


def test_group_in_two_roles(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path)
    root = Path(cfg.root)
    train_case = (root / "train_slices.list").read_text().split()[0]
    (root / "val.list").write_text((root / "val.list").read_text() + train_case + "\n")
    report = check_dataset(cfg, load_all=False)
    patient = train_case.split("_")[0]
    assert _problem(report.problems, train_case, f"group '{patient}' of this val case also appears in the train")


def test_image2d_problems(tmp_path: Path) -> None:
    cfg = make_image2d_dataset(tmp_path, n_cases=4, num_classes=3, mask_style="index")
    root = Path(cfg.root)
    frames = [Image.fromarray(np.zeros((32, 40), np.uint8)) for _ in range(2)]
    frames[0].save(root / "images" / "stack.tif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(root / "masks" / "stack.png")
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(root / "images" / "lonely.png")
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(root / "masks" / "nobody.png")
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(root / "images" / "img_002.png")  # RGB among gray
    report = check_dataset(cfg)
    p = report.problems
    assert _problem(p, "stack.tif", "3D file where 2D is expected")
    assert _problem(p, "lonely.png", "missing mask")
    assert _problem(p, "nobody.png", "orphan mask")
    assert _problem(p, "img_002.png", "3 channel(s) but data.in_channels=1")


def test_empty_folder_reported(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    report = check_dataset(DataConfig(root=str(tmp_path)))
    assert _problem(report.problems, "imagesTr", "empty folder")
    assert report.counts == {"train": {"cases": 0, "groups": 0}}


def test_check_without_loading(nifti_dataset: DataConfig) -> None:
    report = check_dataset(nifti_dataset, load_all=False)
    assert report.ok and not report.loaded and report.shapes == {}
    assert "not loaded" in report.to_text()


# -- layout detection -----------------------------------------------------------------------


def test_detect_folders_nifti(tmp_path: Path) -> None:
    cfg = make_nifti_dataset(tmp_path, num_classes=3)
    found = detect_layout(tmp_path)
    assert (found.format, found.images_dir, found.labels_dir, found.num_classes) == ("nifti", "images", "labels", 3)
    assert found.channel_suffix == "" and check_dataset(found).ok
    assert found == dataclasses.replace(cfg)


def test_detect_training_set_subfolder(tmp_path: Path) -> None:
    make_nifti_dataset(tmp_path / "TrainingSet", n_cases=3, num_classes=2)
    found = detect_layout(tmp_path)
    assert (found.images_dir, found.labels_dir, found.num_classes) == ("TrainingSet/images", "TrainingSet/labels", 2)


def test_detect_nnunet_with_dataset_json(tmp_path: Path) -> None:
    make_nifti_dataset(tmp_path, layout="nnunet", channels=2, n_test=1, num_classes=4)
    found = detect_layout(tmp_path)
    assert (found.images_dir, found.channel_suffix, found.in_channels, found.num_classes) == ("imagesTr", "_0000", 2, 4)
    assert found.class_names == ["background", "class1", "class2", "class3"]
    assert (found.test_images_dir, found.test_labels_dir) == ("imagesTs", "labelsTs")
    assert check_dataset(found).ok


def test_detect_msd_4d(tmp_path: Path) -> None:
    make_nifti_dataset(tmp_path, layout="msd", channels=3)
    found = detect_layout(tmp_path)
    assert (found.channel_suffix, found.in_channels, found.num_classes) == ("", 3, 3)


def test_detect_hdf5(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path, n_unlabeled=1)
    (tmp_path / "train.list").write_text("patient001_frame01\n")  # volumes that do not exist (as in ACDC)
    found = detect_layout(tmp_path)
    assert found == cfg


def test_detect_hdf5_flat_no_patient_ids(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_h5(tmp_path / f"{name}.h5", np.zeros((6, 6), np.float32), np.full((6, 6), 2, np.uint8))
    (tmp_path / "train.list").write_text("a\nb\n")
    found = detect_layout(tmp_path)
    assert (found.path_pattern, found.group_regex, found.num_classes) == ("{case}.h5", "", 3)


@pytest.mark.parametrize("style", ["binary", "palette"])
def test_detect_image2d(tmp_path: Path, style: str) -> None:
    classes = 2 if style == "binary" else 4
    make_image2d_dataset(
        tmp_path, rgb=True, num_classes=classes, mask_style=style, mask_match="suffix", mask_suffix="_seg",  # type: ignore[arg-type]
        masks_dir="labels",
    )
    found = detect_layout(tmp_path)
    assert (found.format, found.labels_dir, found.mask_match, found.mask_suffix) == ("image2d", "labels", "suffix", "_seg")
    assert (found.in_channels, found.num_classes) == (3, classes)
    assert check_dataset(found).ok


def test_detect_unrecognised(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="unrecognised dataset layout; looked for: imagesTr"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        detect_layout(tmp_path / "nothing")


def test_detect_survives_broken_files(tmp_path: Path) -> None:
    cfg = make_hdf5_dataset(tmp_path)
    for p in sorted((tmp_path / "data").glob("*.h5"))[:3]:
        truncate(p, keep=0.02)
    assert detect_layout(tmp_path) == cfg
    report = check_dataset(cfg)
    assert len([p for p in report.problems if "truncated" in p]) == 3
