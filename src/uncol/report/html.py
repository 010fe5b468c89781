"""The report page: one self-contained HTML file (inline CSS, figures as base64 PNG data URIs, no
script and no external resource), so it can be mailed, archived or opened offline as is."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Sequence
from pathlib import Path

from uncol.atomic import atomic_write_text
from uncol.errors import UncolError
from uncol.report.figures import box_plots, reliability_figure, risk_coverage_figure, training_figure
from uncol.report.overlays import case_figures
from uncol.report.rundata import RunData, load_run_data
from uncol.report.suggestions import find_suggestions, suggestions_section
from uncol.report.tables import calibration_table, metrics_table, runs_table, uncertainty_table
from uncol.suggestions.table import SuggestionFiles

__all__ = ["build_report", "render_html"]

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 15px; line-height: 1.5; color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 16px; margin: 24px 0 6px; }
p.lead { color: #57606a; margin: 0 0 16px; }
nav { font-size: 14px; margin: 12px 0 8px; }
nav a { color: #0969da; text-decoration: none; margin-right: 14px; }
p.note, figcaption { color: #57606a; font-size: 13.5px; max-width: 900px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e9ec; vertical-align: top; }
thead th { background: #f3f5f7; text-align: center; border-bottom: 2px solid #d0d7de; }
tbody th { text-align: left; font-weight: 600; white-space: nowrap; }
td { text-align: right; white-space: nowrap; }
table.setup td { text-align: left; white-space: normal; max-width: 420px; overflow-wrap: anywhere; }
tr.mean th, tr.mean td { border-top: 2px solid #d0d7de; }
tr.group th, tr.group td { background: #f6f8fa; padding-top: 7px; }
tr.group td { text-align: left; color: #57606a; font-size: 12.5px; }
th.sub { font-weight: 400; padding-left: 24px; }
th.group { border-left: 1px solid #d0d7de; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.cols { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.cols > div { flex: 0 0 auto; }
.cols > div:last-child { flex: 1 1 440px; min-width: 0; }
footer { margin-top: 48px; color: #57606a; font-size: 12.5px; }
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _sampling_note(runs: Sequence[RunData]) -> str:
    notes = []
    for r in runs:
        scores = r.metrics.get("uncertainty", {}).get("error_detection", {})
        sampled = [s for s in scores.values() if not s.get("exact", True)]
        if sampled:
            s = sampled[0]
            notes.append(f"{r.name}: estimated from a uniform sample of {s['n_used']:,} of {s['n_voxels']:,} voxels")
    return ("<p class=\"note\">AUROC, AUPRC, AURC, E-AURC and the curves: " + _esc("; ".join(notes))
            + " (error rates are exact).</p>") if notes else ""


def render_html(
    runs: Sequence[RunData], device: str | None = None, suggestions: SuggestionFiles | None = None
) -> str:
    """The report page of ``runs`` (the first one picks the cases shown).

    Args:
        runs: evaluated runs, all on the same split.
        device: inference device for the case pictures.
        suggestions: the first run's ``uncol suggest`` output, shown as a last section.

    Returns:
        The HTML text.
    """
    split = runs[0].split
    names = ", ".join(r.name for r in runs)
    n_cases = len(runs[0].metrics.get("cases", []))
    title = f"uncol report: {names}" if len(runs) == 1 else f"uncol report: {names} compared"
    mc_missing = [r.name for r in runs if not r.metrics.get("uncertainty", {}).get("mc_dropout", {}).get("available")]
    mc_note = (
        f"MC-dropout variance and mutual information: not available for {', '.join(mc_missing)} "
        "(the network has no dropout; train with model.dropout > 0 to compare them)."
        if mc_missing else ""
    )
    cases = case_figures(runs, device)
    sections = [
        ("setup", "Runs", runs_table(runs), ""),
        ("metrics", "Segmentation metrics",
         metrics_table(runs)
         + "<p class=\"note\">Mean ± standard deviation over cases; <em>mean</em> averages each case's "
           "foreground classes first. (n=K): only K cases had a defined value (a class missing from the "
           "prediction or the reference)." + (" The best value of each row in bold." if len(runs) > 1 else "")
         + "</p>"
         + _img(box_plots(runs), "box plots of Dice and HD95 per class",
                "Each dot is one case; boxes span the quartiles, the line is the median, whiskers reach the "
                "furthest case within 1.5 box lengths."),
         ""),
        ("calibration", "Calibration",
         "<div class=\"cols\"><div>" + calibration_table(runs) + "</div><div>"
         + _img(reliability_figure(runs), "reliability diagram",
                "Accuracy against confidence in 15 equal-width bins. Points below the diagonal are "
                "over-confident, above it under-confident. The lower panel shows how many voxels each bin "
                "holds (log scale): most voxels are easy background near confidence 1, which keeps ECE small.")
         + "</div></div>",
         "Every voxel of every case counts, background included. Pooled: the value of all voxels "
         "together (not a mean of case values); per case: mean ± std of the case values."),
        ("uncertainty", "Uncertainty and errors",
         uncertainty_table(runs) + _sampling_note(runs)
         + _img(risk_coverage_figure(runs), "risk-coverage curves",
                "Voxels are kept from the least uncertain up: the curve gives the error rate of the kept "
                "voxels at each coverage. Lower is better; the grey curve is the oracle that drops every "
                "wrong voxel first, the dotted line the error rate without selection. AURC is the area "
                "under a curve, E-AURC its excess over the oracle's."),
         "AUROC: probability that a wrong voxel is more uncertain than a right one (0.5 = chance). "
         "AUPRC: average precision of finding the wrong voxels (chance = the error rate). "
         + mc_note),
        ("training", "Training",
         _img(training_figure(runs), "training curves",
              "Loss terms from log.csv and validation Dice from val.csv against the training step; the "
              "dotted line marks the step whose weights were selected."),
         ""),
        ("cases", "Best, median and worst cases",
         "".join(_img(c.png, f"{c.role} case {c.case_id}", c.caption) for c in cases)
         or "<p class=\"note\">No case has a defined Dice.</p>",
         "Ground truth and prediction in class colours, wrong voxels in yellow, uncertainty as the "
         "entropy of the probabilities divided by ln K (0: certain, 1: uniform)."),
    ]
    if suggestions is not None:
        intro, content = suggestions_section(runs[0], suggestions, device)
        sections.append(("suggestions", "Which scans to annotate next", content, intro))
    nav = "".join(f'<a href="#{sid}">{_esc(head)}</a>' for sid, head, _, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{_esc(head)}</h2>'
        + (f'<p class="note">{_esc(intro)}</p>' if intro else "")
        + content + "</section>"
        for sid, head, content, intro in sections
    )
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lead = (f"{split} split, {n_cases} cases. Metric definitions: docs/metrics.md; how to read this page: "
            "docs/report.md.")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_esc(title)}</h1><p class=\"lead\">{_esc(lead)}</p><nav>{nav}</nav>{body}"
        f"<footer>Generated by uncol on {generated}.</footer></main></body></html>\n"
    )


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    split: str = "test",
    device: str | None = None,
    evaluate: bool = True,
    suggestions: str | Path | None = None,
) -> Path:
    """Write the HTML report of one run, or of several runs side by side.

    Args:
        run_dirs: run folders; the first one is the reference (its cases are pictured, and the
            report goes into it by default).
        out: the HTML file; default ``RUN/report_<split>.html`` (``report_<split>_compare.html`` with
            several runs) in the first run's folder.
        split: the evaluated split, ``val`` or ``test``.
        device: inference device for the case pictures (default: each run's ``train.device``).
        evaluate: evaluate runs whose ``split`` has no (or an outdated) evaluation; when ``False``
            that is an error naming the command to run.
        suggestions: a folder written by ``uncol suggest`` to show as the section "Which scans to
            annotate next"; by default ``RUN/suggestions`` of the first run when it holds one.

    Returns:
        The path of the written file.

    Raises:
        UncolError: no run given, a folder that is not a run, a missing evaluation with
            ``evaluate=False``, or a ``suggestions`` folder without a complete ranking.
    """
    if not run_dirs:
        raise UncolError("no run folder given")
    runs = [load_run_data(r, split, evaluate=evaluate) for r in run_dirs]
    found = find_suggestions(runs[0].root, suggestions)
    if out is None:
        suffix = "" if len(runs) == 1 else "_compare"
        out = runs[0].root / f"report_{split}{suffix}.html"
    return atomic_write_text(out, render_html(runs, device, found))
