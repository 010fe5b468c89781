"""``uncol init``: a commented, validated configuration planned from a dataset's fingerprint.

* :func:`fingerprint_dataset`: layout, cases, shapes, spacing, classes, intensities (one pass);
* :func:`plan_config` / :func:`plan_from_fingerprint`: the configuration and why each value was chosen;
* :func:`write_config`: the commented YAML, checked to load back as planned;
* :func:`split_preview`: the split a configuration makes and UnCoL's one-time teacher cost.
"""

from __future__ import annotations

from uncol.planning.budget import MachineBudget, cpu_budget, detect_budget
from uncol.planning.commented_yaml import render_config, write_config
from uncol.planning.fingerprint import DatasetFingerprint, fingerprint_dataset
from uncol.planning.plan import Plan, plan_config, plan_dataset, plan_from_fingerprint
from uncol.planning.preview import SplitPreview, TeacherCost, split_preview, teacher_cost

__all__ = [
    "DatasetFingerprint",
    "MachineBudget",
    "Plan",
    "SplitPreview",
    "TeacherCost",
    "cpu_budget",
    "detect_budget",
    "fingerprint_dataset",
    "plan_config",
    "plan_dataset",
    "plan_from_fingerprint",
    "render_config",
    "split_preview",
    "teacher_cost",
    "write_config",
]
