"""``split.labeled_list``: a file naming the labeled groups (uncol.data.labeled_list, uncol.data.splits)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fixtures_data import make_hdf5_dataset, make_image2d_dataset
from uncol.config import SplitConfig, config_from_dict
from uncol.data.index import discover
from uncol.data.labeled_list import read_labeled_list, write_labeled_list
from uncol.data.splits import make_splits
from uncol.errors import DataError


@pytest.fixture
def acdc_like(tmp_path: Path):
    """6 training patients (2 slices each), predefined val/test volumes, 2 image-only unlabeled patients."""
    return make_hdf5_dataset(tmp_path / "h5", n_train=6, n_val=1, n_test=1, slices=2, n_unlabeled=2)


def _split(data, **split: object):
    cfg = config_from_dict({"data": dataclasses.asdict(data), "split": split})
    return make_splits(discover(cfg.data), cfg.split)


def test_listed_patients_and_cases_are_labeled_whatever_split_labeled_says(acdc_like, tmp_path):
    listed = write_labeled_list(tmp_path / "l.list", [
        ("first round", ["patient004", "patient002"]),
        ("a case stands for its patient; repeats and comments are fine", ["patient005_frame01_slice_2", "patient004"]),
    ])
    (tmp_path / "l.list").write_text(listed.read_text() + "\n   # indented comment\npatient002  # trailing comment\n\n")
    assert read_labeled_list(listed) == ["patient004", "patient002", "patient005_frame01_slice_2"]
    splits = _split(acdc_like, labeled=2, labeled_order="random", labeled_list=str(listed))
    assert sorted({c.group for c in splits.labeled}) == ["patient002", "patient004", "patient005"]
    assert len(splits.labeled) == 6  # every slice of each listed patient
    pool = {c.group for c in splits.unlabeled if c.label_path is not None}
    assert pool == {"patient001", "patient003", "patient006"}
    assert splits.config["labeled_list"] == str(listed)
    # the same split without the list: two groups drawn at random
    assert len({c.group for c in _split(acdc_like, labeled=2, labeled_order="random").labeled}) == 2


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        (["patient001", "patient007"], "patient007 (in the validation split)"),
        (["patient008_frame01"], "patient008_frame01 (in the test split)"),
        (["patient009"], "patient009 (an image without label"),
        (["patient001", "patient099"], "patient099 (no such group or case"),
        (["# nothing but a comment"], "names no group or case"),
    ],
)
def test_entries_that_cannot_be_labeled_are_refused_naming_the_file(acdc_like, tmp_path, entries, why):
    listed = tmp_path / "bad.list"
    listed.write_text("\n".join(entries) + "\n")
    with pytest.raises(DataError) as info:
        _split(acdc_like, labeled_list=str(listed))
    assert str(listed) in str(info.value) and why in str(info.value)


def test_a_drawn_validation_group_and_a_missing_file_are_refused(tmp_path):
    data = make_image2d_dataset(tmp_path / "img", n_cases=8)
    drawn = _split(data, val_fraction=0.25, test_fraction=0.25)
    val_group = drawn.val[0].group
    listed = tmp_path / "l.list"
    listed.write_text(f"{val_group}\n")
    with pytest.raises(DataError, match=f"{val_group} \\(in the validation split\\)"):
        _split(data, val_fraction=0.25, test_fraction=0.25, labeled_list=str(listed))
    with pytest.raises(DataError, match="labeled list not found"):
        _split(data, labeled_list=str(tmp_path / "missing.list"))


def test_splits_written_before_the_option_existed_match_its_default(acdc_like):
    splits = _split(acdc_like, labeled=2)
    del splits.config["labeled_list"]
    assert splits.differences(SplitConfig(labeled=2)) == []
    assert splits.differences(SplitConfig(labeled=2, labeled_list="x.list")) == [
        "split.labeled_list: '' (splits.json) != 'x.list'"
    ]
