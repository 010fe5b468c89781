"""The data layer: discovery, reading/writing, splits and dataset checks.

* :mod:`uncol.data.types`: :class:`Case` (a reference to a sample on disk) and :class:`CaseData`.
* :mod:`uncol.data.io`: single files: :func:`read_image_file`, :func:`read_mask`, :func:`write_mask`.
* :mod:`uncol.data.readers`: :func:`load_case`, the validated loading of one case.
* :mod:`uncol.data.index`: :func:`discover`, the cases of a dataset by role.
* :mod:`uncol.data.splits`: :func:`make_splits`, ``splits.json``.
* :mod:`uncol.data.check` / :mod:`uncol.data.layout`: ``uncol data check``.
"""

from __future__ import annotations

from uncol.data.check import CheckReport, check_dataset
from uncol.data.index import Discovered, discover
from uncol.data.io import read_image_file, read_mask, write_mask
from uncol.data.layout import detect_layout
from uncol.data.readers import load_case
from uncol.data.splits import Splits, load_splits, make_splits, save_splits
from uncol.data.types import Case, CaseData

__all__ = [
    "Case",
    "CaseData",
    "CheckReport",
    "Discovered",
    "Splits",
    "check_dataset",
    "detect_layout",
    "discover",
    "load_case",
    "load_splits",
    "make_splits",
    "read_image_file",
    "read_mask",
    "save_splits",
    "write_mask",
]
