"""The data layer on the shared real datasets (ACDC HDF5, MSD Hippocampus NIfTI); skipped when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uncol.config import SplitConfig
from uncol.data import check_dataset, detect_layout, discover, load_case, make_splits

pytestmark = pytest.mark.realdata


def _dataset(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"{name} not found under {shared_data}")
    return path


def test_acdc_protocol(shared_data: Path) -> None:
    root = _dataset(shared_data, "ACDC")
    cfg = detect_layout(root)
    assert (cfg.format, cfg.train_list, cfg.path_pattern) == ("hdf5", "train_slices.list", "data/{case}.h5")
    assert (cfg.group_regex, cfg.num_classes) == (r"^(patient\d+)", 4)
    found = discover(cfg)
    assert len(found.train) == 1312 and len({c.group for c in found.train}) == 70
    assert found.val is not None and found.test is not None
    assert (len(found.val), len(found.test)) == (20, 40)
    splits = make_splits(found, SplitConfig(labeled=7, labeled_order="list"))
    listed = (root / "train_slices.list").read_text().split()
    first_seven = list(dict.fromkeys(line.split("_")[0] for line in listed))[:7]
    assert sorted({c.group for c in splits.labeled}) == sorted(first_seven)
    assert splits.summary()["unlabeled"]["groups"] == 63
    sl = load_case(splits.labeled[0], cfg, expect_ndim=2)
    vol = load_case(splits.test[0], cfg, expect_ndim=3)
    assert sl.label is not None and vol.label is not None and int(vol.label.max()) == 3
    assert vol.image.shape[1:] == vol.label.shape and np.isfinite(vol.image).all()


def test_hippocampus(shared_data: Path) -> None:
    root = _dataset(shared_data, "Hippocampus")
    cfg = detect_layout(root)
    assert (cfg.format, cfg.images_dir, cfg.num_classes) == ("nifti", "TrainingSet/images", 3)
    found = discover(cfg)
    assert len(found.train) == 260 and found.test is None
    splits = make_splits(found, SplitConfig(seed=0, val_fraction=0.1, test_fraction=0.2, labeled=1.0))
    assert splits.summary()["test"]["cases"] == 52 and splits.summary()["val"]["cases"] == 26
    data = load_case(splits.val[0], cfg)
    assert data.spacing == pytest.approx((1.0, 1.0, 1.0)) and data.affine is not None
    assert data.label is not None and set(np.unique(data.label)) == {0, 1, 2}


def test_hippocampus_check_listing(shared_data: Path) -> None:
    root = _dataset(shared_data, "Hippocampus")
    cfg = detect_layout(root)
    report = check_dataset(cfg, load_all=False)
    assert report.ok, report.problems
    assert report.counts["train"] == {"cases": 260, "groups": 260}
