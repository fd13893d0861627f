"""The HTML report: every result of a workspace on one self-contained page.

Public API:

- ``build_report(config: Config, ws: Workspace, progress: Progress | None = None) -> ReportResult``:
  writes ``report/index.html`` (inline CSS, figures as data URIs, no scripts, nothing fetched),
  ``report/figures/*.png`` and ``report/tables/*.csv``; skipped when its inputs are unchanged.

Modules, in reading order: inputs (what is read from the workspace), figures (matplotlib),
sections (one builder per section of the page), stage (the stage: key, render, write).
docs/report.md describes each section and how its numbers are computed.
"""

from __future__ import annotations

from valind.report.stage import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
