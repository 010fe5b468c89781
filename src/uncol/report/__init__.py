"""The HTML report of a run, or of runs side by side (``uncol report``; docs/report.md).

:func:`build_report` reads each run folder (evaluating a run whose split has no evaluation yet),
draws the figures (:mod:`uncol.report.figures`, :mod:`uncol.report.overlays`), lays out the tables
(:mod:`uncol.report.tables`) and writes one self-contained HTML file (:mod:`uncol.report.html`).
"""

from __future__ import annotations

from uncol.report.html import build_report

__all__ = ["build_report"]
