"""The report's HTML tables: the runs' set-up, segmentation metrics, calibration and uncertainty-error
metrics, one column (group) per run. Every text is escaped; cells hold numbers formatted for reading.

When runs are compared, the best value of each row is set in bold (higher Dice, Jaccard, AUROC and
AUPRC; lower distances, ECE, NLL, Brier, AURC and E-AURC).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from uncol.methods.registry import summary_images_trained
from uncol.report.figures import SCORE_LABELS
from uncol.report.rundata import RunData

__all__ = ["calibration_table", "metrics_table", "runs_table", "uncertainty_table"]


@dataclass(frozen=True)
class _Cell:
    text: str
    value: float | None = None  # what "best" compares; None: not compared


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value) * scale:.{digits}f}"


def _bold_best(cells: list[_Cell], higher_better: bool | None) -> list[str]:
    texts = [_esc(c.text) for c in cells]
    values = [c.value for c in cells if c.value is not None]
    if higher_better is None or len(cells) < 2 or len(values) < 2:
        return texts
    best = max(values) if higher_better else min(values)
    if all(v == best for v in values):
        return texts
    return [f"<strong>{t}</strong>" if c.value == best else t for t, c in zip(texts, cells, strict=True)]


def _table(head: str, rows: Sequence[str], cls: str = "") -> str:
    return f'<table class="{cls}"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _row(label: str, cells: Sequence[str], label_cls: str = "", row_cls: str = "") -> str:
    th_cls = f' class="{label_cls}"' if label_cls else ""
    tr_cls = f' class="{row_cls}"' if row_cls else ""
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr{tr_cls}><th scope="row"{th_cls}>{_esc(label)}</th>{tds}</tr>'


def _run_head(runs: Sequence[RunData], first: str = "") -> str:
    return f"<tr><th>{_esc(first)}</th>{''.join(f'<th>{_esc(r.name)}</th>' for r in runs)}</tr>"


def _minutes(seconds: Any) -> str:
    if seconds is None:
        return "–"
    s = float(seconds)
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _labeled(run: RunData) -> str:
    c = run.split_counts
    lab, unl = c.get("labeled", {}), c.get("unlabeled", {})
    amount = run.cfg.split.labeled
    asked = f"{amount:g} of the training groups" if amount <= 1 else f"{amount:g} groups"
    chosen = f"split.labeled_list = {run.cfg.split.labeled_list}" if run.cfg.split.labeled_list else f"split.labeled = {asked}"
    text = f"{lab.get('cases', 0)} cases ({lab.get('groups', 0)} groups; {chosen})"
    if unl.get("cases"):
        text += f", {unl['cases']} unlabeled"
    return text


def runs_table(runs: Sequence[RunData]) -> str:
    """The runs' set-up and training summary (``config.yaml``, ``splits.json``, ``summary.json``)."""
    def summary(r: RunData, key: str) -> Any:
        return (r.summary or {}).get(key)

    def best(r: RunData) -> str:
        step, dice = summary(r, "best_step"), summary(r, "best_val_dice")
        return "–" if step is None else f"step {step}" + (f" (val Dice {100 * dice:.1f}%)" if dice is not None else "")

    def seen(r: RunData) -> str:
        drawn = summary(r, "images_seen") or {}
        if not drawn:
            return "–"
        used = summary_images_trained(r.cfg, r.summary or {}) or {}
        text = f"{used.get('labeled', 0):,} labeled, {used.get('unlabeled', 0):,} unlabeled"
        if used != drawn:
            text += f" (drawn: {drawn.get('labeled', 0):,} + {drawn.get('unlabeled', 0):,})"
        return text

    def evaluated(r: RunData) -> str:
        m = r.metrics
        unit = r.distance_unit
        return (f"{m.get('checkpoint', '?')} checkpoint (step {m.get('checkpoint_step', '?')}), "
                f"{len(m.get('cases', []))} {r.split} cases, {m.get('convention', '?')} convention ({unit})")

    fields: list[tuple[str, Callable[[RunData], str]]] = [
        ("run folder", lambda r: str(r.root)),
        ("method", lambda r: r.cfg.method.name),
        ("network", lambda r: f"{r.cfg.model.arch}" + (f", dropout {r.cfg.model.dropout:g}" if r.cfg.model.dropout else ", no dropout")),
        ("labeled", _labeled),
        ("steps", lambda r: f"{summary(r, 'steps_done')} of {r.cfg.train.iterations}" if r.summary
         else f"? of {r.cfg.train.iterations} (no summary.json: training not finished?)"),
        ("selected weights", best),
        ("CPU time (training loop)", lambda r: _minutes(summary(r, "cpu_seconds"))),
        ("wall time", lambda r: _minutes(summary(r, "seconds"))),
        ("images trained on", seen),
        ("parameters", lambda r: f"{summary(r, 'parameters'):,}" if summary(r, "parameters") else "–"),
        ("evaluated", evaluated),
    ]
    rows = [_row(label, [_esc(fn(r)) for r in runs]) for label, fn in fields]
    return _table(_run_head(runs), rows, "setup")


_SEG = (("dice", "Dice (%)", 100.0, 1, True), ("jaccard", "Jaccard (%)", 100.0, 1, True),
        ("hd95", "HD95", 1.0, 2, False), ("asd", "ASD", 1.0, 2, False))


def _seg_cell(stats: dict[str, Any] | None, scale: float, digits: int, n_cases: int) -> _Cell:
    if not stats or stats.get("mean") is None:
        return _Cell("–")
    text = f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"
    if stats.get("n", n_cases) < n_cases:
        text += f" (n={stats['n']})"
    return _Cell(text, float(stats["mean"]))


def metrics_table(runs: Sequence[RunData]) -> str:
    """Overlap and surface metrics per class and for the mean over classes: mean ± std over cases.

    One column group per metric, one column per run inside it, so runs sit side by side.
    """
    unit = runs[0].distance_unit
    names = [*runs[0].class_names, "mean"]
    ids = [str(c) for c in range(1, len(names))] + ["mean"]
    multi = len(runs) > 1
    head = "<tr><th rowspan=\"2\">class</th>" if multi else "<tr><th>class</th>"
    for _, label, *_ in _SEG:
        label = f"{label} ({unit})" if label in ("HD95", "ASD") else label
        head += f'<th colspan="{len(runs)}" class="group">{_esc(label)}</th>' if multi else f"<th>{_esc(label)}</th>"
    head += "</tr>"
    if multi:
        head += "<tr>" + "".join(f"<th>{_esc(r.name)}</th>" for _ in _SEG for r in runs) + "</tr>"
    rows = []
    for cid, name in zip(ids, names, strict=True):
        cells: list[str] = []
        for metric, _, scale, digits, higher in _SEG:
            group = [
                _seg_cell(r.metrics.get("summary", {}).get(cid, {}).get(metric), scale, digits, len(r.metrics.get("cases", [])))
                for r in runs
            ]
            cells += _bold_best(group, higher)
        rows.append(_row(name, cells, row_cls="mean" if cid == "mean" else ""))
    return _table(head, rows, "metrics")


def _unc(run: RunData) -> dict[str, Any]:
    return run.metrics.get("uncertainty", {})


def calibration_table(runs: Sequence[RunData]) -> str:
    """Pooled ECE, class-wise ECE per class, NLL and Brier score of every run (lower is better).

    A single run also gets the mean ± std of the per-case values.
    """
    names = ["background", *runs[0].class_names]
    rows_spec: list[tuple[str, Callable[[dict[str, Any]], Any], int, str | None]] = [
        ("ECE", lambda u: u["calibration"].get("ece"), 4, "ece"),
    ]
    for c, name in enumerate(names):
        rows_spec.append((f"class-wise ECE: {name}", lambda u, c=c: u["calibration"]["classwise_ece"].get(str(c)), 4, None))
    rows_spec += [
        ("class-wise ECE: foreground mean", lambda u: u["calibration"].get("classwise_ece_foreground_mean"),
         4, None),
        ("NLL (nats)", lambda u: u["calibration"].get("nll"), 4, "nll"),
        ("Brier score", lambda u: u["calibration"].get("brier"), 4, "brier"),
    ]
    single = len(runs) == 1
    head = _run_head(runs, "lower is better") if not single else (
        "<tr><th>lower is better</th><th>pooled</th><th>per case</th></tr>"
    )
    rows = []
    for label, get, digits, case_key in rows_spec:
        cells = [_Cell(_num(get(_unc(r)), digits), get(_unc(r))) for r in runs]
        texts = _bold_best(cells, higher_better=False)
        if single:
            stats = _unc(runs[0]).get("case_summary", {}).get(case_key) if case_key else None
            texts.append(_esc(f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}") if stats and stats["mean"] is not None
                         else "")
        rows.append(_row(label, texts, "sub" if label.startswith("class-wise ECE: ") else ""))
    return _table(head, rows, "numbers")


_UE = (("auroc", "AUROC ↑", True), ("auprc", "AUPRC ↑", True), ("aurc", "AURC ↓", False), ("eaurc", "E-AURC ↓", False))


def uncertainty_table(runs: Sequence[RunData]) -> str:
    """Error detection (AUROC, AUPRC) and selective prediction (AURC, E-AURC) per uncertainty score."""
    head = _run_head(runs, "")
    rows = []
    error_cells = []
    for r in runs:
        ent = _unc(r).get("error_detection", {}).get("entropy", {})
        rate = ent.get("error_rate")
        error_cells.append(_esc(f"{100 * rate:.2f}% of {ent.get('n_voxels', 0):,} voxels" if rate is not None else "–"))
    rows.append(_row("wrong voxels (argmax ≠ label)", error_cells))
    for score, score_label in SCORE_LABELS.items():
        present = [score in _unc(r).get("error_detection", {}) for r in runs]
        if not any(present) and score.startswith("mc_"):
            reason = _unc(runs[0]).get("mc_dropout", {}).get("reason", "not computed")
            rows.append(_row(score_label, [_esc(reason)] * len(runs), row_cls="group"))
            continue
        # A run without this score says why once, in the score's heading row, and leaves its cells empty.
        notes = ["" if has else _esc(_unc(r).get("mc_dropout", {}).get("reason", "not computed"))
                 for r, has in zip(runs, present, strict=True)]
        rows.append(_row(score_label, notes, row_cls="group"))
        for field, label, higher in _UE:
            cells = []
            for r, has in zip(runs, present, strict=True):
                if not has:
                    cells.append(_Cell(""))
                    continue
                v = _unc(r)["error_detection"][score].get(field)
                cells.append(_Cell(_num(v, 4), v))
            rows.append(_row(label, _bold_best(cells, higher), "sub"))
    return _table(head, rows, "numbers")
