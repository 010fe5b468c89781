"""Per-case, per-class metrics of label maps, empty-mask policies and the summary over cases.

:func:`compute_case_metrics` scores every foreground class of one prediction against its reference
and applies the empty-mask policy, so its output never holds NaN: an undefined value is ``None``.
:func:`summarize` turns a list of case results into the JSON-able report that ``uncol score`` and
evaluation write, and :func:`format_table` renders that report as plain text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uncol.metrics.overlap import compute_dice, compute_jaccard
from uncol.metrics.surface import compute_surface_metrics, validate_convention, validate_spacing

__all__ = [
    "EMPTY_BOTH_POLICIES",
    "EMPTY_KINDS",
    "EMPTY_ONE_POLICIES",
    "METRIC_NAMES",
    "CaseResult",
    "compute_case_metrics",
    "format_table",
    "summarize",
]

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")
EMPTY_BOTH_POLICIES = ("skip", "perfect")
EMPTY_ONE_POLICIES = ("zero", "skip")
EMPTY_KINDS = ("both", "pred_only", "ref_only")

ClassMetrics = dict[str, float | None]


@dataclass
class CaseResult:
    """Metrics of one case.

    Attributes:
        metrics: per class id as a string (``"1"``, ``"2"``, ...): ``{"dice", "jaccard", "hd95",
            "asd"}`` -> value, ``None`` where undefined under the chosen policy (never NaN).
        empty: per class id: ``None`` when the class is in both prediction and reference, else
            ``"both"`` (absent from both), ``"pred_only"`` (predicted but absent from the
            reference: a false detection) or ``"ref_only"`` (in the reference but not predicted: a
            miss).
    """

    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    empty: dict[str, str | None] = field(default_factory=dict)


def _check_policy(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _check_labels(arr: np.ndarray, what: str, num_classes: int) -> None:
    """Check that a label map holds integer values in ``[0, num_classes)``."""
    if arr.dtype == bool:
        values_ok = True
    elif np.issubdtype(arr.dtype, np.integer):
        values_ok = True
    elif np.issubdtype(arr.dtype, np.floating):
        values_ok = bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    else:
        values_ok = False
    if not values_ok:
        raise ValueError(
            f"{what} must hold integer class labels, got dtype {arr.dtype} with non-integer values"
        )
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{what} has labels in [{lo}, {hi}] but num_classes={num_classes} allows only 0..{num_classes - 1}"
        )


def _all(value: float | None) -> ClassMetrics:
    return dict.fromkeys(METRIC_NAMES, value)


def _empty_kind(p_any: bool, r_any: bool) -> str | None:
    """Which side of a class is empty: ``None``, ``"both"``, ``"pred_only"`` or ``"ref_only"``."""
    if p_any and r_any:
        return None
    if not (p_any or r_any):
        return "both"
    return "pred_only" if p_any else "ref_only"


def _score_class(
    p: np.ndarray,
    r: np.ndarray,
    spacing: tuple[float, ...],
    convention: str,
    empty_both: str,
    empty_one: str,
) -> tuple[ClassMetrics, str | None]:
    """Metrics and empty-kind of one class given its two boolean masks."""
    p_any, r_any = bool(p.any()), bool(r.any())
    kind = _empty_kind(p_any, r_any)
    if convention == "medpy":
        # SSL4MIS's calculate_metric_percase returns 0 for every metric when nothing is predicted
        # (a miss, or a class absent from both), and the published tables average those zeros in.
        if not p_any:
            return _all(0.0), kind
        if not r_any:
            # medpy's dc gives 0 here and its hd95/asd raise: no distance exists.
            return {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}, kind
    elif kind == "both":
        if empty_both == "perfect":
            return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}, kind
        return _all(None), kind
    elif kind is not None:
        if empty_one == "zero":
            return {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}, kind
        return _all(None), kind
    hd95, asd = compute_surface_metrics(p, r, spacing, convention)
    return {"dice": compute_dice(p, r), "jaccard": compute_jaccard(p, r), "hd95": hd95, "asd": asd}, kind


def compute_case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    convention: str = "standard",
    empty_both: str = "skip",
    empty_one: str = "zero",
) -> CaseResult:
    """Score every foreground class of one predicted label map against its reference.

    Args:
        pred: predicted integer label map, 2D or 3D, values in ``[0, num_classes)``.
        ref: reference label map of the same shape.
        num_classes: number of classes including background; classes ``1..num_classes-1`` are scored.
        spacing: voxel size along each axis (physical units); ``None`` means 1.0. Ignored by the
            ``"medpy"`` convention.
        convention: ``"standard"`` or ``"medpy"`` (see ``docs/metrics.md``).
        empty_both: standard convention, class absent from both: ``"skip"`` (all metrics ``None``)
            or ``"perfect"`` (Dice/Jaccard 1, HD95/ASD 0).
        empty_one: standard convention, class in exactly one of them: ``"zero"`` (Dice/Jaccard 0,
            HD95/ASD ``None``) or ``"skip"`` (all ``None``).

    Returns:
        The case's :class:`CaseResult`. In the ``"medpy"`` convention the two policies are not
        used: a class that is not predicted scores 0 on every metric, a class predicted but absent
        from the reference scores Dice/Jaccard 0 and HD95/ASD ``None``.

    Raises:
        ValueError: on a shape mismatch, labels outside ``[0, num_classes)``, an invalid spacing,
            convention or policy.
    """
    validate_convention(convention)
    _check_policy("empty_both", empty_both, EMPTY_BOTH_POLICIES)
    _check_policy("empty_one", empty_one, EMPTY_ONE_POLICIES)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background + one class), got {num_classes!r}")
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"label maps must be 2D or 3D, got shape {pred.shape}")
    _check_labels(pred, "prediction", int(num_classes))
    _check_labels(ref, "reference", int(num_classes))
    sampling = validate_spacing(spacing, pred.ndim)

    result = CaseResult()
    for c in range(1, int(num_classes)):
        values, kind = _score_class(pred == c, ref == c, sampling, convention, empty_both, empty_one)
        result.metrics[str(c)] = {k: _clean(v) for k, v in values.items()}
        result.empty[str(c)] = kind
    return result


def _clean(value: float | None) -> float | None:
    """A plain float, or ``None`` for undefined values (NaN never reaches the output)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, population std (ddof=0) and count; mean/std ``None`` when there is no value."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


def summarize(results: Sequence[tuple[str, CaseResult]], num_classes: int, convention: str) -> dict[str, Any]:
    """Build the JSON-able report of a set of scored cases.

    Class means ignore ``None`` values (``n`` says how many were used). The ``"mean"`` row first
    averages, for each case, the defined values over the foreground classes, then takes the mean and
    std over cases (the way papers average e.g. RV/Myo/LV).

    Args:
        results: ``(case name, CaseResult)`` pairs; case names must be unique.
        num_classes: number of classes including background.
        convention: the convention the results were computed with (recorded in the report).

    Returns:
        ``{"convention", "cases": [{"case", "metrics"}], "summary": {<class id>: {<metric>:
        {"mean", "std", "n"}}, "mean": {...}}, "empty_cases": {<class id>: {"both", "pred_only",
        "ref_only"}, "total"}}``, where ``total`` is the number of (case, class) pairs with an empty
        mask on at least one side.

    Raises:
        ValueError: on duplicate case names, a result missing a class, or an invalid convention.
    """
    validate_convention(convention)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    class_ids = [str(c) for c in range(1, num_classes)]
    per_class: dict[str, dict[str, list[float]]] = {cid: {m: [] for m in METRIC_NAMES} for cid in class_ids}
    case_means: dict[str, list[float]] = {m: [] for m in METRIC_NAMES}
    empty_counts = {cid: dict.fromkeys(EMPTY_KINDS, 0) for cid in class_ids}
    cases: list[dict[str, Any]] = []
    seen: set[str] = set()

    for name, res in results:
        name = str(name)
        if name in seen:
            raise ValueError(f"case {name!r} appears more than once")
        seen.add(name)
        missing = [cid for cid in class_ids if cid not in res.metrics]
        if missing:
            raise ValueError(f"case {name!r} has no metrics for class(es) {', '.join(missing)}")
        metrics = {cid: {m: _clean(res.metrics[cid].get(m)) for m in METRIC_NAMES} for cid in class_ids}
        cases.append({"case": name, "metrics": metrics})
        for m in METRIC_NAMES:
            defined = [v for cid in class_ids if (v := metrics[cid][m]) is not None]
            for cid in class_ids:
                if metrics[cid][m] is not None:
                    per_class[cid][m].append(metrics[cid][m])
            if defined:
                case_means[m].append(float(np.mean(defined)))
        for cid in class_ids:
            kind = res.empty.get(cid)
            if kind is not None:
                if kind not in EMPTY_KINDS:
                    raise ValueError(f"case {name!r}, class {cid}: unknown empty kind {kind!r}")
                empty_counts[cid][kind] += 1

    summary: dict[str, Any] = {cid: {m: _stats(per_class[cid][m]) for m in METRIC_NAMES} for cid in class_ids}
    summary["mean"] = {m: _stats(case_means[m]) for m in METRIC_NAMES}
    empty_cases: dict[str, Any] = dict(empty_counts)
    empty_cases["total"] = sum(sum(counts.values()) for counts in empty_counts.values())
    return {"convention": convention, "cases": cases, "summary": summary, "empty_cases": empty_cases}


def _cell(stats: dict[str, Any], scale: float, n_cases: int) -> str:
    """``mean ± std`` with 2 decimals, plus the count when some cases were left out."""
    if stats["mean"] is None:
        return "n/a"
    text = f"{stats['mean'] * scale:.2f} ± {stats['std'] * scale:.2f}"
    return text if stats["n"] == n_cases else f"{text} (n={stats['n']})"


def format_table(summary_dict: dict[str, Any], class_names: Sequence[str] | None = None) -> str:
    """Render a :func:`summarize` report as a plain-text table.

    Rows are the foreground classes and their mean; columns Dice and Jaccard (percent), HD95 and
    ASD, each as ``mean ± std`` (with ``(n=K)`` when only K cases had a defined value), then the
    counts of empty cases. Distances are labelled with the report's ``distance_unit`` where it has
    one, else ``vox`` for the medpy convention and ``mm`` for the standard one.

    Args:
        summary_dict: the output of :func:`summarize`.
        class_names: names of the classes, background first (as ``data.class_names``), or of the
            foreground classes only; ``None`` uses the class ids.

    Returns:
        The table, lines joined by newlines (no trailing newline).

    Raises:
        ValueError: if the number of class names fits neither form.
    """
    summary = summary_dict["summary"]
    class_ids = [k for k in summary if k != "mean"]
    n_cases = len(summary_dict["cases"])
    if class_names is None:
        labels = class_ids
    elif len(class_names) == len(class_ids) + 1:
        labels = [str(n) for n in class_names[1:]]
    elif len(class_names) == len(class_ids):
        labels = [str(n) for n in class_names]
    else:
        raise ValueError(
            f"{len(class_names)} class names given for {len(class_ids)} foreground classes "
            f"(give {len(class_ids) + 1} names, background first, or {len(class_ids)})"
        )
    # A report may name its distance unit (uncol score: px for images without spacing).
    unit = summary_dict.get("distance_unit") or ("vox" if summary_dict["convention"] == "medpy" else "mm")
    header = [
        "Class",
        "Dice (%)",
        "Jaccard (%)",
        f"HD95 ({unit})",
        f"ASD ({unit})",
        "both empty",
        "pred only",
        "ref only",
    ]
    rows = []
    empty = summary_dict["empty_cases"]
    for cid, label in zip(class_ids, labels, strict=True):
        s = summary[cid]
        counts = empty.get(cid, {})
        rows.append(
            [label]
            + [_cell(s[m], 100.0 if m in ("dice", "jaccard") else 1.0, n_cases) for m in METRIC_NAMES]
            + [str(counts.get(k, 0)) for k in EMPTY_KINDS]
        )
    s = summary["mean"]
    totals = [sum(empty.get(cid, {}).get(k, 0) for cid in class_ids) for k in EMPTY_KINDS]
    rows.append(
        ["mean"]
        + [_cell(s[m], 100.0 if m in ("dice", "jaccard") else 1.0, n_cases) for m in METRIC_NAMES]
        + [str(t) for t in totals]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    title = f"{n_cases} case(s), convention: {summary_dict['convention']}"
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])
