"""Splits by group: uncol.data.splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uncol.config import DataConfig, SplitConfig
from uncol.data.index import Discovered, discover
from uncol.data.splits import Splits, check_group_integrity, load_splits, make_splits, save_splits
from uncol.data.types import Case
from uncol.errors import DataError


def _cases(groups: list[str], per_group: int = 3, prefix: str = "", labeled: bool = True) -> list[Case]:
    out = []
    for g in groups:
        for k in range(per_group):
            cid = f"{prefix}{g}_slice_{k}"
            path = Path(f"/data/{cid}.h5")
            out.append(Case(cid, path, path if labeled else None, f"{prefix}{g}", "hdf5", 2))
    return out


GROUPS = [f"p{i:02d}" for i in (7, 3, 11, 1, 9, 4, 12, 2, 8, 5, 10, 6)]  # list order != sorted order


def _groups(cases: list[Case]) -> list[str]:
    return list(dict.fromkeys(c.group for c in cases))


def _assert_partition(splits: Splits, pool: list[Case]) -> None:
    ids = [c.case_id for c in splits.labeled + splits.unlabeled + splits.val + splits.test]
    assert sorted(ids) == sorted(c.case_id for c in pool)
    check_group_integrity(splits)
    roles = [splits.labeled, splits.unlabeled, splits.val, splits.test]
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            assert not ({c.group for c in a} & {c.group for c in b})


def test_random_val_test_by_group_and_seed() -> None:
    pool = _cases(GROUPS)
    cfg = SplitConfig(seed=3, val_fraction=0.2, test_fraction=0.25, labeled=1.0)
    s = make_splits(Discovered(train=pool), cfg)
    _assert_partition(s, pool)
    assert s.summary()["val"] == {"cases": 6, "groups": 2}  # round(0.2*12)=2 groups
    assert s.summary()["test"] == {"cases": 9, "groups": 3}
    assert s.summary()["labeled"]["groups"] == 7 and s.unlabeled == []
    again = make_splits(Discovered(train=pool), cfg)
    assert again.to_json() == s.to_json()
    other = make_splits(Discovered(train=pool), SplitConfig(seed=4, val_fraction=0.2, test_fraction=0.25))
    assert {c.group for c in other.test} != {c.group for c in s.test}


def test_at_least_one_group_each_when_few_groups() -> None:
    pool = _cases(GROUPS[:3])
    s = make_splits(Discovered(train=pool), SplitConfig(val_fraction=0.05, test_fraction=0.05))
    assert [len(_groups(x)) for x in (s.labeled, s.val, s.test)] == [1, 1, 1]


def test_too_few_groups() -> None:
    with pytest.raises(DataError, match="too few groups.*2 group"):
        make_splits(Discovered(train=_cases(GROUPS[:2])), SplitConfig(val_fraction=0.1, test_fraction=0.2))
    with pytest.raises(DataError, match="no training cases"):
        make_splits(Discovered(train=[]), SplitConfig())
    # without drawn val/test, one group is enough
    s = make_splits(Discovered(train=_cases(GROUPS[:1])), SplitConfig(val_fraction=0.0, test_fraction=0.0))
    assert len(s.labeled) == 3 and s.val == [] and s.test == []


def test_labeled_count_list_order() -> None:
    pool = _cases(GROUPS)
    found = Discovered(train=pool, val=_cases(["v1"], prefix="val"), test=_cases(["t1"], prefix="test"))
    s = make_splits(found, SplitConfig(labeled=4, labeled_order="list"))
    assert _groups(s.labeled) == GROUPS[:4]
    assert _groups(s.unlabeled) == GROUPS[4:]
    assert all(c.label_path is not None for c in s.unlabeled)  # kept for analyses
    assert [c.case_id for c in s.labeled] == [c.case_id for c in pool[:12]]
    assert s.val == found.val and s.test == found.test
    assert s.config["val_source"] == "predefined" and s.config["labeled"] == 4


def test_labeled_ratio_and_minimum() -> None:
    found = Discovered(train=_cases(GROUPS), val=[], test=[])
    assert len(_groups(make_splits(found, SplitConfig(labeled=0.25)).labeled)) == 3
    assert len(_groups(make_splits(found, SplitConfig(labeled=0.125)).labeled)) == 2  # 1.5 rounds half up
    assert len(_groups(make_splits(found, SplitConfig(labeled=0.01)).labeled)) == 1
    with pytest.raises(DataError, match="split.labeled=13 groups.*only 12"):
        make_splits(found, SplitConfig(labeled=13))


def test_labeled_random_is_seeded_and_grouped() -> None:
    found = Discovered(train=_cases(GROUPS), val=[], test=[])
    a = make_splits(found, SplitConfig(labeled=5, labeled_order="random", seed=1))
    b = make_splits(found, SplitConfig(labeled=5, labeled_order="random", seed=1))
    c = make_splits(found, SplitConfig(labeled=5, labeled_order="random", seed=2))
    assert _groups(a.labeled) == _groups(b.labeled)
    assert set(_groups(a.labeled)) != set(_groups(c.labeled))
    assert len(a.labeled) == 15
    _assert_partition(a, found.train)


def test_labeled_spread_covers_the_list_order() -> None:
    found = Discovered(train=_cases(GROUPS), val=[], test=[])
    s = make_splits(found, SplitConfig(labeled=3, labeled_order="spread"))
    # 12 groups in 3 equal parts: the centre of each part (indices 2, 6, 10), not the first three
    assert _groups(s.labeled) == [GROUPS[2], GROUPS[6], GROUPS[10]]
    assert _groups(make_splits(found, SplitConfig(labeled=12, labeled_order="spread")).labeled) == GROUPS
    assert _groups(make_splits(found, SplitConfig(labeled=0.05, labeled_order="spread")).labeled) == [GROUPS[6]]
    _assert_partition(s, found.train)


def test_extra_unlabeled_appended() -> None:
    extra = _cases(["u1", "u2"], prefix="extra", labeled=False)
    s = make_splits(Discovered(train=_cases(GROUPS), val=[], test=[], unlabeled=extra), SplitConfig(labeled=2))
    assert s.unlabeled[-6:] == extra
    assert s.summary()["unlabeled"] == {"cases": 36, "groups": 12}


def test_predefined_lists_sharing_a_group_rejected() -> None:
    pool = _cases(GROUPS)
    leaked = Discovered(train=pool, val=_cases([GROUPS[5]]), test=[])
    with pytest.raises(DataError, match=f"{GROUPS[5]} appear in both training and val"):
        make_splits(leaked, SplitConfig())
    extra_leak = Discovered(train=pool, val=[], test=_cases(["t"]), unlabeled=_cases(["t"], labeled=False))
    with pytest.raises(DataError, match="t appear in both training and test"):
        make_splits(extra_leak, SplitConfig())


def test_json_round_trip_and_differences(tmp_path: Path) -> None:
    cfg = SplitConfig(seed=5, labeled=3)
    s = make_splits(Discovered(train=_cases(GROUPS)), cfg)
    path = save_splits(tmp_path / "run" / "splits.json", s)
    stored = json.loads(path.read_text())
    assert stored["summary"] == s.summary() and stored["config"]["seed"] == 5
    back = load_splits(path)
    assert back.to_json() == s.to_json()
    assert back.labeled == s.labeled and back.test == s.test
    assert back.differences(cfg) == []
    assert back.differences(SplitConfig(seed=6, labeled=3)) == ["split.seed: 5 (splits.json) != 6"]


def test_corrupt_splits_file(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    with pytest.raises(DataError, match="splits.json: splits file not found"):
        load_splits(path)
    path.write_text('{"format_version": 1, "labeled": [')
    with pytest.raises(DataError, match="splits.json: unreadable or corrupt"):
        load_splits(path)
    s = make_splits(Discovered(train=_cases(GROUPS)), SplitConfig())
    data = s.to_json()
    data["labeled"] = data["labeled"][1:]  # hand-edited: counts no longer match
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="splits.json: corrupt splits file.*disagree"):
        load_splits(path)
    data = s.to_json()
    del data["test"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="splits.json: corrupt.*'test'"):
        load_splits(path)


def test_hdf5_dataset_split(hdf5_dataset: DataConfig) -> None:
    found = discover(hdf5_dataset)
    order = _groups(found.train)
    s = make_splits(found, SplitConfig(labeled=2))
    assert _groups(s.labeled) == order[:2]
    assert len(s.labeled) == 8 and len(s.unlabeled) == 16
    assert len(s.val) == 2 and len(s.test) == 2 and all(c.ndim == 3 for c in s.val)
