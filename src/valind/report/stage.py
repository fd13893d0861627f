"""The report stage: one self-contained HTML page, with its figures and tables, from a workspace.

``build_report(config, ws)`` reads whatever the earlier stages left (``valind.report.inputs``),
builds each section (``valind.report.sections``; a section without inputs says what is missing),
and writes, atomically:

- ``report/index.html``: one page, no network needed to view it: inline CSS, no scripts, figures
  embedded as base64 PNG data URIs; every model text HTML-escaped (Jinja2 autoescape);
- ``report/figures/<name>.png``: the same figures as files (matplotlib, Agg);
- ``report/tables/<name>.csv``: the full numbers behind each table.

Figures and tables of an earlier report that this one no longer makes are removed. The stage key is
a hash of the report version, the template, the config and the content of every input file, so a
re-run with unchanged inputs is skipped (``ReportResult.skipped``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import orjson

from valind import __version__
from valind.config import Config
from valind.report import inputs as ri
from valind.report import sections as rs
from valind.workspace import (
    Workspace,
    atomic_write_bytes,
    atomic_write_text,
    hash_file,
    hash_json,
    hash_tree,
)

STAGE = "report"
REPORT_VERSION = 1  # bump when a change here changes the page for the same inputs
TEMPLATES = Path(__file__).resolve().parent / "templates"
Progress = Callable[[str, int | None], Callable[[int], None]]

SECTIONS: list[Callable[[rs.Inputs, rs.Collector], rs.Section]] = [
    rs.subsets_section, rs.crosstalk_section, rs.refusal_section, rs.language_section, rs.qa_section,
    rs.models_section, rs.frontier_section, rs.training_section, rs.examples_section, rs.validation_section,
    rs.provenance_section,
]


@dataclass
class ReportResult:
    """What ``build_report`` did. ``missing``: section id -> why it is empty (inputs absent)."""

    skipped: bool
    index: Path
    figures: list[Path]
    tables: list[Path]
    missing: dict[str, str]


def build_report(config: Config, ws: Workspace, progress: Progress | None = None) -> ReportResult:
    summary = ri.read_summary(ws)
    files = ri.input_files(ws, summary)
    key = hash_json({
        "version": REPORT_VERSION, "template": hash_tree(TEMPLATES), "config": config.model_dump(mode="json"),
        "inputs": {str(p.relative_to(ws.root)): hash_file(p) for p in files},
    })
    record = ws.stage_done(STAGE, key)
    if record is not None:
        return _result(ws, True, record.outputs, record.summary.get("missing", []))
    ws.clear_stage(STAGE)

    inp = _inputs(config, ws, summary)
    col = rs.Collector()
    update = progress("report", len(SECTIONS)) if progress else None
    sections = []
    for done, build in enumerate(SECTIONS, 1):
        sections.append(build(inp, col))
        if update:
            update(done)
    html = _render(inp, sections)

    outputs = _write(ws, col, html)
    missing = [[s.id, s.missing] for s in sections if s.missing]  # a list: the record keeps the page's order
    record = ws.record_stage(STAGE, key, outputs, {"figures": len(col.plots), "tables": len(col.csvs), "missing": missing})
    return _result(ws, False, record.outputs, missing)


def _inputs(config: Config, ws: Workspace, summary: dict[str, Any] | None) -> rs.Inputs:
    cells = ri.model_cells(summary) if summary else []
    manifest, problem = ri.read_manifest(ws)
    return rs.Inputs(
        config=config, ws=ws, manifest=manifest, manifest_problem=problem, stats=ri.read_stats(ws), summary=summary, cells=cells,
        models=ri.model_order(list(config.train.models), cells), training=ri.training_cells(ws),
        training_planned=ri.train_plan_exists(ws), frontier=ri.read_frontier(ws), validation=ri.read_validation(ws),
    )


def _render(inp: rs.Inputs, sections: list[rs.Section]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("index.html.j2").render(
        sections=sections, workspace=str(inp.ws.root), models=inp.models, valind_version=__version__,
        n_cells=len(inp.cells), n_induced=sum(not c.is_base for c in inp.cells),
        method_notes=rs.method_notes(inp), alpha=inp.config.evaluate.alpha,
    )


def _csv_text(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return orjson.dumps(v).decode()
    return v


def _write(ws: Workspace, col: rs.Collector, html: str) -> list[Path]:
    figures = [ws.report_figures / f"{p.name}.png" for p in col.plots]
    tables = [ws.report_tables / f"{name}.csv" for name in col.csvs]
    for path, plot in zip(figures, col.plots):
        atomic_write_bytes(path, plot.png)
    for path, rows in zip(tables, col.csvs.values()):
        atomic_write_text(path, _csv_text(rows))
    for folder, suffix, keep in ((ws.report_figures, ".png", figures), (ws.report_tables, ".csv", tables)):
        if folder.is_dir():
            for stale in folder.glob(f"*{suffix}"):
                if stale not in keep:
                    stale.unlink()
    atomic_write_text(ws.report_index, html)
    return [ws.report_index, *figures, *tables]


def _result(ws: Workspace, skipped: bool, outputs: dict[str, int], missing: list[list[str]]) -> ReportResult:
    paths = [ws.root / rel for rel in outputs]
    return ReportResult(skipped, ws.report_index, [p for p in paths if p.suffix == ".png"],
                        [p for p in paths if p.suffix == ".csv"], {k: v for k, v in missing})
