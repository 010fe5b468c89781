"""Train/val/test and labeled/unlabeled splits, made by group (patient) and saved as ``splits.json``.

Rules:
    * val/test come from the dataset's predefined lists/folders when it has them, else from a seeded
      random draw of groups (``split.val_fraction`` / ``split.test_fraction`` of the training groups).
    * The labeled subset is a number or ratio of the remaining training groups, taken in list order
      (the protocol of the semi-supervised literature) or drawn at random, or the groups a
      ``split.labeled_list`` file names; every other training case becomes unlabeled (its label path
      is kept for analyses, but training never reads it).
    * All cases of a group stay in one split; this is verified, not assumed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uncol.atomic import atomic_write_json
from uncol.config import SplitConfig
from uncol.data.index import Discovered
from uncol.data.labeled_list import labeled_groups_from_list
from uncol.data.types import Case
from uncol.errors import DataError

SPLITS_FORMAT_VERSION = 1
ROLES: tuple[str, ...] = ("labeled", "unlabeled", "val", "test")
# Split options whose values decide the content of the split (compared when a run resumes).
_CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SplitConfig))


@dataclass
class Splits:
    """The cases of a run, by role.

    Attributes:
        labeled: labeled training cases.
        unlabeled: unlabeled training cases (the rest of the training pool, then extra unlabeled data).
        val: validation cases (model selection).
        test: test cases (final evaluation only).
        config: the split options used and where val/test came from (``predefined``/``random``/``none``).
    """

    labeled: list[Case]
    unlabeled: list[Case]
    val: list[Case]
    test: list[Case]
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, int]]:
        """Number of cases and of groups per role."""
        return {
            role: {"cases": len(cases), "groups": len({c.group for c in cases})}
            for role, cases in ((r, getattr(self, r)) for r in ROLES)
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (``splits.json``)."""
        out: dict[str, Any] = {
            "format_version": SPLITS_FORMAT_VERSION,
            "config": dict(self.config),
            "summary": self.summary(),
        }
        for role in ROLES:
            out[role] = [c.to_json() for c in getattr(self, role)]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Splits:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: wrong version, missing role, or counts that disagree with the stored summary
                (a hand-edited or damaged file).
        """
        if not isinstance(d, dict) or d.get("format_version") != SPLITS_FORMAT_VERSION:
            raise ValueError(f"not a splits file of format version {SPLITS_FORMAT_VERSION}")
        roles = {}
        for role in ROLES:
            items = d.get(role)
            if not isinstance(items, list):
                raise ValueError(f"missing list '{role}'")
            roles[role] = [Case.from_json(x) for x in items]
        splits = cls(**roles, config=dict(d.get("config") or {}))
        stored = d.get("summary")
        if stored is not None and stored != splits.summary():
            raise ValueError(f"stored counts {stored} disagree with the listed cases {splits.summary()}")
        return splits

    def differences(self, split_cfg: SplitConfig) -> list[str]:
        """Split options whose values differ from those this split was made with (empty: all match)."""
        current = dataclasses.asdict(split_cfg)
        # A splits file written before an option existed was made with that option's default.
        default = dataclasses.asdict(SplitConfig())
        return [
            f"split.{k}: {self.config.get(k, default[k])!r} (splits.json) != {current[k]!r}"
            for k in _CONFIG_KEYS
            if self.config.get(k, default[k]) != current[k]
        ]


def _half_up(x: float) -> int:
    # Python's round() rounds halves to even (round(2.5) == 2); a split count should not depend on parity.
    return int(math.floor(x + 0.5))


def _groups(cases: list[Case]) -> list[str]:
    """Groups in order of first appearance."""
    return list(dict.fromkeys(c.group for c in cases))


def _draw_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Groups to draw for val and test: rounded fractions, at least 1 each, leaving >= 1 for training."""
    n_val = max(1, _half_up(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, _half_up(test_fraction * n)) if test_fraction > 0 else 0
    while n_val + n_test > n - 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:  # pragma: no cover - excluded by the caller's group count check
            raise DataError(None, "too few groups for the requested split")
    return n_val, n_test


def _labeled_count(labeled: float, n_train: int) -> int:
    if labeled > 1:
        k = int(labeled)
        if k > n_train:
            raise DataError(
                None,
                f"split.labeled={k} groups requested but the training pool has only {n_train} group(s) "
                "after removing val/test",
            )
        return k
    return max(1, _half_up(labeled * n_train))


def _counted_labeled_groups(split_cfg: SplitConfig, train_groups: list[str]) -> set[str]:
    """The ``split.labeled`` first groups in list order, spread evenly over it, or drawn at random.

    ``split.labeled_order`` chooses: ``list`` takes the first groups, ``spread`` the groups at the
    centres of ``k`` equal parts of the list (so that ordered cases, such as slabs of one volume,
    are sampled over their whole range), ``random`` a seeded draw.
    """
    k = _labeled_count(split_cfg.labeled, len(train_groups))
    if split_cfg.labeled_order == "list":
        return set(train_groups[:k])
    if split_cfg.labeled_order == "spread":
        n = len(train_groups)
        return {train_groups[min(n - 1, int((i + 0.5) * n / k))] for i in range(k)}
    # Its own stream, so that the labeled draw does not change when val/test fractions do.
    pick = np.random.default_rng([split_cfg.seed, 1]).choice(len(train_groups), size=k, replace=False)
    return {train_groups[i] for i in pick}


def check_group_integrity(splits: Splits) -> None:
    """Verify that no group is shared by training, validation and test cases.

    Raises:
        DataError: a group appears in two of train (labeled + unlabeled), val and test, or in both
            labeled and unlabeled training cases of the training pool.
    """
    labeled = {c.group for c in splits.labeled}
    pool_unlabeled = {c.group for c in splits.unlabeled if c.label_path is not None}
    train = labeled | {c.group for c in splits.unlabeled}
    val = {c.group for c in splits.val}
    test = {c.group for c in splits.test}
    pairs = [
        ("labeled", labeled, "unlabeled", pool_unlabeled),
        ("training", train, "val", val),
        ("training", train, "test", test),
        ("val", val, "test", test),
    ]
    for name_a, a, name_b, b in pairs:
        shared = sorted(a & b)
        if shared:
            more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
            raise DataError(
                None,
                f"groups {', '.join(shared[:5])}{more} appear in both {name_a} and {name_b} cases; "
                "cases of one patient/subject must stay in one split (check the lists and data.group_regex)",
            )


def make_splits(discovered: Discovered, split_cfg: SplitConfig) -> Splits:
    """Split discovered cases into labeled, unlabeled, val and test.

    Args:
        discovered: the dataset's cases (see :func:`uncol.data.index.discover`).
        split_cfg: fractions, labeled amount and order, seed.

    Returns:
        The splits; every list keeps discovery order.

    Raises:
        DataError: no training cases, too few groups for the requested split, or a group shared
            between roles.
    """
    train = discovered.train
    if not train:
        raise DataError(None, "no training cases found")
    groups = _groups(train)
    draw_val = discovered.val is None and split_cfg.val_fraction > 0
    draw_test = discovered.test is None and split_cfg.test_fraction > 0
    needed = 1 + int(draw_val) + int(draw_test)
    if len(groups) < needed:
        parts = " + ".join(["train"] + ["val"] * draw_val + ["test"] * draw_test)
        raise DataError(
            None,
            f"too few groups for the requested split: the training pool has {len(groups)} group(s), "
            f"{needed} needed ({parts}); add cases, provide val/test lists or folders, or set "
            "split.val_fraction / split.test_fraction to 0",
        )
    n_val, n_test = _draw_counts(
        len(groups), split_cfg.val_fraction if draw_val else 0.0, split_cfg.test_fraction if draw_test else 0.0
    )
    rng = np.random.default_rng(split_cfg.seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    test_groups = set(order[:n_test])
    val_groups = set(order[n_test : n_test + n_val])
    train_groups = [g for g in groups if g not in test_groups and g not in val_groups]

    val_cases = list(discovered.val) if discovered.val is not None else [c for c in train if c.group in val_groups]
    test_cases = list(discovered.test) if discovered.test is not None else [c for c in train if c.group in test_groups]
    if split_cfg.labeled_list:
        held_out = {"validation": val_cases, "test": test_cases, "unlabeled": list(discovered.unlabeled)}
        labeled_groups = labeled_groups_from_list(split_cfg.labeled_list, train, train_groups, held_out)
    else:
        labeled_groups = _counted_labeled_groups(split_cfg, train_groups)

    def source(predefined: list[Case] | None, drawn: bool) -> str:
        return "predefined" if predefined is not None else ("random" if drawn else "none")

    splits = Splits(
        labeled=[c for c in train if c.group in labeled_groups],
        unlabeled=[c for c in train if c.group in train_groups and c.group not in labeled_groups]
        + list(discovered.unlabeled),
        val=val_cases,
        test=test_cases,
        config={
            **dataclasses.asdict(split_cfg),
            "val_source": source(discovered.val, draw_val),
            "test_source": source(discovered.test, draw_test),
        },
    )
    check_group_integrity(splits)
    return splits


def save_splits(path: str | Path, splits: Splits) -> Path:
    """Write ``splits.json`` atomically."""
    return atomic_write_json(path, splits.to_json())


def load_splits(path: str | Path) -> Splits:
    """Read a ``splits.json`` written by :func:`save_splits`.

    Raises:
        DataError: missing, unreadable, corrupt or inconsistent file (naming it).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "splits file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"unreadable or corrupt splits file ({e})") from None
    try:
        return Splits.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(path, f"corrupt splits file: {e}") from None
