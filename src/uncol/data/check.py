"""``uncol data check``: load every case of a dataset and report statistics and all problems found.

Unlike training, which stops at the first bad file, the check collects every problem so that a
dataset can be fixed in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uncol.config import DataConfig
from uncol.data.index import Discovered, Problems, scan
from uncol.data.readers.load import channel_problem, load_case, ndim_problem
from uncol.data.types import Case, CaseData
from uncol.errors import ConfigError, DataError

_MAX_PROBLEMS_SHOWN = 50
_MAX_EXAMPLES = 5


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        root: dataset root folder.
        format: reader name.
        num_classes: number of classes the labels were checked against.
        class_names: names of the classes (ids when none are configured).
        counts: per role (``train``/``val``/``test``/``unlabeled``), number of ``cases`` and ``groups``.
        loaded: whether the cases were loaded (else only discovered).
        shapes: per number of spatial dimensions (``"2"``/``"3"``): ``cases``, per-axis ``min`` and ``max``.
        spacings: spacing (as text, e.g. ``"1x1x1"``) -> number of cases.
        channels: number of image channels (as text) -> number of cases.
        class_voxels: voxels of each class over all loaded labels.
        class_cases: number of labeled cases in which each class appears.
        labeled_cases: number of cases whose label was loaded.
        intensity: ``min``/``max`` over all images and the range of per-case maxima
            (``case_max_low``/``case_max_high``: a wide range calls for per-case normalisation).
        problems: every problem found, each naming its file.
    """

    root: str
    format: str
    num_classes: int
    class_names: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    loaded: bool = False
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    spacings: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    class_voxels: list[int] = field(default_factory=list)
    class_cases: list[int] = field(default_factory=list)
    labeled_cases: int = 0
    intensity: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "root": self.root,
            "format": self.format,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "ok": self.ok,
            "counts": self.counts,
            "loaded": self.loaded,
            "shapes": self.shapes,
            "spacings": self.spacings,
            "channels": self.channels,
            "class_voxels": self.class_voxels,
            "class_cases": self.class_cases,
            "labeled_cases": self.labeled_cases,
            "intensity": self.intensity,
            "problems": list(self.problems),
        }

    def to_text(self) -> str:
        """A readable multi-line report."""
        lines = [f"Dataset {self.root} (format {self.format}, {self.num_classes} classes)", "", "Cases:"]
        for role, c in self.counts.items():
            lines.append(f"  {role:<10} {c['cases']:>7} cases {c['groups']:>6} groups")
        if not self.loaded:
            lines += ["", "(cases not loaded: shapes, classes and intensities not checked)"]
        else:
            lines += ["", "Shapes (array axes, without channels):"]
            for nd, s in sorted(self.shapes.items()):
                lines.append(f"  {nd}D: {s['cases']} cases, min {tuple(s['min'])}, max {tuple(s['max'])}")
            if self.channels:
                lines.append("Channels: " + ", ".join(f"{k} ({n} cases)" for k, n in sorted(self.channels.items())))
            if self.spacings:
                shown = sorted(self.spacings.items(), key=lambda kv: -kv[1])
                extra = f", ... ({len(shown) - 10} more)" if len(shown) > 10 else ""
                lines.append("Spacing: " + ", ".join(f"{k} ({n} cases)" for k, n in shown[:10]) + extra)
            if self.intensity:
                i = self.intensity
                lines.append(
                    f"Intensity: min {i['min']:.4g}, max {i['max']:.4g}; "
                    f"per-case max from {i['case_max_low']:.4g} to {i['case_max_high']:.4g}"
                )
            if self.labeled_cases:
                total = max(1, sum(self.class_voxels))
                lines += ["", f"Classes ({self.labeled_cases} labeled cases):"]
                for k, name in enumerate(self.class_names):
                    lines.append(
                        f"  {k} {name:<16} {self.class_voxels[k]:>14} voxels ({100 * self.class_voxels[k] / total:5.2f}%)"
                        f"  in {self.class_cases[k]} cases"
                    )
        lines.append("")
        if self.ok:
            lines.append("OK: no problems found")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems[:_MAX_PROBLEMS_SHOWN]]
            if len(self.problems) > _MAX_PROBLEMS_SHOWN:
                lines.append(f"  ... and {len(self.problems) - _MAX_PROBLEMS_SHOWN} more")
        return "\n".join(lines)


def _role_ndim_problems(discovered: Discovered, data_cfg: DataConfig, problems: Problems) -> None:
    """Report 2D/3D cases that do not fit their role.

    image2d expects 2D everywhere. Other formats may mix 2D and 3D across roles (ACDC: 2D training
    slices, 3D val/test volumes), but within one role the minority dimension is reported.
    """
    for role, cases in discovered.roles().items():
        if data_cfg.format == "image2d":
            continue  # every image2d case is 2D at discovery; multi-frame files are caught on load
        by_ndim: dict[int, list[Case]] = {}
        for c in cases:
            by_ndim.setdefault(c.ndim, []).append(c)
        if len(by_ndim) < 2:
            continue
        majority = max(by_ndim, key=lambda nd: len(by_ndim[nd]))
        for nd, odd in sorted(by_ndim.items()):
            if nd == majority:
                continue
            for c in odd[:_MAX_EXAMPLES]:
                problems.add(
                    c.image_path,
                    f"{ndim_problem(nd, majority)}: {len(odd)} of {len(cases)} {role} cases are {nd}D",
                )


def _role_overlap_problems(discovered: Discovered, problems: Problems) -> None:
    """Report groups (patients) that appear in two predefined roles: a train/test leak."""
    roles = discovered.roles()
    names = list(roles)
    for i, a in enumerate(names):
        groups_a = {c.group for c in roles[a]}
        for b in names[i + 1 :]:
            if {a, b} == {"train", "unlabeled"}:
                continue  # extra unlabeled data of training patients is fine
            for c in roles[b]:
                if c.group in groups_a:
                    problems.add(c.image_path, f"group '{c.group}' of this {b} case also appears in the {a} cases")
                    break


def _fmt_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{s:.4g}" for s in spacing)


class _Stats:
    """Running statistics over loaded cases."""

    def __init__(self, num_classes: int) -> None:
        self.shapes: dict[int, list[tuple[int, ...]]] = {}
        self.spacings: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.class_voxels = np.zeros(num_classes, dtype=np.int64)
        self.class_cases = np.zeros(num_classes, dtype=np.int64)
        self.labeled = 0
        self.lows: list[float] = []
        self.highs: list[float] = []

    def add(self, data: CaseData) -> None:
        shape = data.spatial_shape
        self.shapes.setdefault(len(shape), []).append(shape)
        key = _fmt_spacing(data.spacing)
        self.spacings[key] = self.spacings.get(key, 0) + 1
        ch = str(data.image.shape[0])
        self.channels[ch] = self.channels.get(ch, 0) + 1
        if data.image.size:
            self.lows.append(float(data.image.min()))
            self.highs.append(float(data.image.max()))
        if data.label is not None:
            counts = np.bincount(data.label.ravel().astype(np.int64), minlength=len(self.class_voxels))
            self.class_voxels += counts[: len(self.class_voxels)]
            self.class_cases += counts[: len(self.class_cases)] > 0
            self.labeled += 1

    def fill(self, report: CheckReport) -> None:
        for nd, shapes in self.shapes.items():
            arr = np.asarray(shapes)
            report.shapes[str(nd)] = {
                "cases": len(shapes),
                "min": [int(v) for v in arr.min(axis=0)],
                "max": [int(v) for v in arr.max(axis=0)],
            }
        report.spacings = dict(self.spacings)
        report.channels = dict(self.channels)
        report.class_voxels = [int(v) for v in self.class_voxels]
        report.class_cases = [int(v) for v in self.class_cases]
        report.labeled_cases = self.labeled
        if self.highs:
            report.intensity = {
                "min": min(self.lows),
                "max": max(self.highs),
                "case_max_low": min(self.highs),
                "case_max_high": max(self.highs),
            }


def check_dataset(
    data_cfg: DataConfig,
    load_all: bool = True,
    on_case: Callable[[str, Case, CaseData], None] | None = None,
) -> CheckReport:
    """Check a dataset: discover and (optionally) load every case, collecting all problems.

    Args:
        data_cfg: dataset options (e.g. from a run config or :func:`uncol.data.layout.detect_layout`).
        load_all: load every case (slower, finds content problems); else only list the files.
        on_case: called with ``(role, case, data)`` for every case loaded without error, so that a
            caller needing more than the report (``uncol init``'s dataset fingerprint) reads the
            dataset once.

    Returns:
        The report; ``report.ok`` is False when any problem was found.

    Raises:
        ConfigError: options that make the dataset unreadable as configured (e.g. an invalid regex).
    """
    problems = Problems(strict=False)
    discovered = scan(data_cfg, problems)
    names = list(data_cfg.class_names) or [str(k) for k in range(data_cfg.num_classes)]
    report = CheckReport(
        root=str(data_cfg.root or "."),
        format=data_cfg.format,
        num_classes=data_cfg.num_classes,
        class_names=names,
        loaded=load_all,
    )
    for role, cases in discovered.roles().items():
        report.counts[role] = {"cases": len(cases), "groups": len({c.group for c in cases})}
    _role_ndim_problems(discovered, data_cfg, problems)
    _role_overlap_problems(discovered, problems)
    if load_all:
        stats = _Stats(data_cfg.num_classes)
        # image2d datasets are 2D by definition: a 3D file (e.g. NIfTI in unlabeled_dir) is a problem.
        expect = 2 if data_cfg.format == "image2d" else None
        for role, cases in discovered.roles().items():
            for case in cases:
                try:
                    data = load_case(case, data_cfg, expect_ndim=expect)
                except (DataError, ConfigError) as e:
                    problems.add(getattr(e, "path", None), getattr(e, "problem", str(e)))
                    continue
                channels = channel_problem(data, data_cfg.in_channels)
                if channels is not None:
                    problems.add(case.image_path, channels)
                stats.add(data)
                if on_case is not None:
                    on_case(role, case, data)
        stats.fill(report)
    report.problems = list(problems.items)
    return report
