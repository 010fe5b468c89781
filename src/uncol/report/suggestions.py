"""The report's section on which scans to annotate next, from the files of ``uncol suggest``.

``uncol report RUN`` adds it when ``RUN/suggestions/suggestions.csv`` exists (``--suggestions DIR``
names a folder written elsewhere with ``uncol suggest --out``). It lists the top-ranked groups and
draws, for the first few, the group's most uncertain scan: the image, the run's prediction and its
entropy, on the slice (or the three planes of a 3D model) with the most entropy. The scans are
predicted again with the weights ``uncol suggest`` used.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import torch

from uncol.data.splits import load_splits
from uncol.devices import select_device
from uncol.errors import UncolError
from uncol.report.overlays import pick_planes_by, predict_case, render_case
from uncol.report.rundata import RunData
from uncol.runs import RunPaths, load_weights
from uncol.suggest import SUGGESTIONS_DIR
from uncol.suggestions.scores import ScanScore
from uncol.suggestions.sources import SPLIT, Scan
from uncol.suggestions.table import TABLE_NAME, SuggestionFiles, read_suggestions

__all__ = ["FIGURES", "ROWS", "find_suggestions", "suggestions_section"]

#: Groups drawn (their most uncertain scan each), from rank 1.
FIGURES = 4
#: Groups listed in the table when ``uncol suggest`` was given no ``--top``.
ROWS = 20


def find_suggestions(run_root: Path, folder: str | Path | None = None) -> SuggestionFiles | None:
    """The suggestions of a run: ``folder`` when given, else ``RUN/suggestions`` if it holds a ranking.

    Raises:
        UncolError: ``folder`` holds no complete output of ``uncol suggest``.
    """
    if folder is None:
        default = run_root / SUGGESTIONS_DIR
        return read_suggestions(default) if (default / TABLE_NAME).is_file() else None
    return read_suggestions(folder)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(files: SuggestionFiles, rows: int) -> str:
    head = ("<tr><th>rank</th><th>group</th><th>scans</th><th>mean entropy (nats)</th>"
            "<th>foreground entropy (nats)</th><th>teacher disagreement</th><th>score</th></tr>")
    body = "".join(
        f"<tr><td>{g.rank}</td><th scope=\"row\">{_esc(g.group)}</th><td>{len(g.cases)}</td>"
        f"<td>{_num(g.mean_entropy)}</td><td>{_num(g.foreground_entropy)}</td><td>{_num(g.disagreement)}</td>"
        f"<td>{_num(g.score)}</td></tr>"
        for g in files.groups[:rows]
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _scan(score: ScanScore, run_root: Path) -> Scan:
    """The scan behind a row of ``scans.csv`` (a split case is looked up in the run's splits.json)."""
    if score.source == SPLIT:
        for case in load_splits(RunPaths(run_root).splits).unlabeled:
            if case.case_id == score.case:
                return Scan(score.case, score.group, score.files, case)
        raise UncolError(f"{run_root}: case {score.case} of the suggestions is not in the run's unlabeled split")
    return Scan(score.case, score.group, score.files)


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _figures(run: RunData, files: SuggestionFiles, count: int, device: str | None) -> list[str]:
    cfg, net, _ = load_weights(run.root, str(files.meta.get("checkpoint") or "best"))
    dev = select_device(device or cfg.train.device)
    net.to(dev)
    out = []
    for group in files.groups[:count]:
        members: Sequence[ScanScore] = [s for s in files.scans if s.group == group.group]
        if not members:
            continue
        score = max(members, key=lambda s: s.mean_entropy)
        try:
            data = _scan(score, run.root).read(cfg)
        except UncolError as e:  # e.g. a file moved since: the table still stands
            out.append(f'<p class="note">{_esc(f"#{group.rank} {group.group}: cannot draw {score.case}: {e}")}</p>')
            continue
        pred = predict_case(net, data, cfg, dev)
        weight = pred.entropy if pred.entropy is not None else data.image[0] * 0
        planes = pick_planes_by(weight, cfg.spatial_dims, data.slice_axis)
        extra = "" if score.disagreement is None else f", teacher disagreement {score.disagreement:.3f}"
        title = f"#{group.rank} {group.group}: {score.case} (mean entropy {score.mean_entropy:.3f} nats{extra})"
        caption = (f"Rank {group.rank}: the most uncertain of the group's {len(members)} scan(s), on the "
                   + ("image." if data.image.ndim == 3 else "slice(s) with the most entropy."))
        out.append(_figure(render_case(data, planes, [pred], [run], title), f"suggested scan {score.case}", caption))
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def suggestions_section(run: RunData, files: SuggestionFiles, device: str | None = None) -> tuple[str, str]:
    """The section's introduction and content (HTML) for the report of ``run``.

    Args:
        run: the report's first run (its weights draw the scans).
        files: the output of ``uncol suggest`` (:func:`find_suggestions`).
        device: inference device (default: the run's ``train.device``).

    Returns:
        ``(intro text, HTML content)``.
    """
    meta = files.meta
    top = meta.get("top")
    rows = int(top) if isinstance(top, int) and top > 0 else ROWS
    by_teacher = meta.get("ranking") == "entropy+teacher"
    grouping = (f"scans grouped by patient (data.group_regex {meta['group_regex']}), each group ranked by "
                "the mean of its scans' values" if meta.get("group_regex") else "each scan ranked on its own")
    formula = ("the mean of the group's percentile ranks of mean entropy and of the foundation teacher's "
               "disagreement with the prediction (1 − Dice, the teacher prompted with boxes from the prediction)"
               if by_teacher else "the percentile rank of the mean predictive entropy")
    intro = (f"Unlabeled scans ranked by uncol suggest ({meta.get('scans', len(files.scans))} scans, "
             f"{len(files.groups)} groups, {meta.get('checkpoint', 'best')} weights): {grouping}; score = "
             f"{formula}. Rank 1 is the group to annotate first. How to feed the annotations back: "
             "docs/suggest.md.")
    failures = meta.get("failures") or []
    note = (f'<p class="note">{len(failures)} input(s) could not be scored (listed in '
            f"{_esc(files.folder / 'suggestions.json')}).</p>" if failures else "")
    shown = min(rows, len(files.groups))
    content = (_table(files, rows)
               + f'<p class="note">The top {shown} of {len(files.groups)} groups; all of them are in '
               + f"{_esc(files.folder / TABLE_NAME)}.</p>" + note
               + "".join(_figures(run, files, min(FIGURES, rows), device)))
    return intro, content
