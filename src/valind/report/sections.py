"""The report's sections: each turns some workspace inputs into figures, tables and notes.

A section builder takes the loaded ``Inputs`` and a ``Collector`` (which gathers the figures and the
CSV tables to write) and returns a ``Section``. A section whose inputs are missing says why in
``missing`` and holds no parts. Every displayed rate carries its 95% interval and its count
(``0.333 [0.061, 0.792] (1/3)``); every change its interval, n and Benjamini-Hochberg q.
"""

from __future__ import annotations

import base64
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from valind.config import Config
from valind.report import figures as fig
from valind.report.inputs import (
    UNSAFE_SUITE,
    VALUES_SUITE,
    ModelCellInfo,
    TrainCellInfo,
    generate_metadata,
    read_answers,
    samples_path,
)
from valind.workspace import Workspace

MAX_EXAMPLE_CELLS = 30  # induced cells with example answers (the rest are counted, not shown)
MAX_FIGURE_ROWS = 60  # rows of a dot-and-interval figure; beyond, snapshot cells are left to the tables
LONG_TABLE = 60  # tables with more rows are shown folded
VALUE_PROMPTS_PER_CELL = 2  # value_elicitation prompts per induced cell, the cell's own value first
Z95 = 1.959963984540054

# ---------------------------------------------------------------- page parts


@dataclass
class Plot:
    kind: ClassVar[str] = "plot"
    name: str  # file stem under report/figures/
    png: bytes
    alt: str
    caption: str = ""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def file(self) -> str:
        return f"figures/{self.name}.png"


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    csv: str | None = None  # file stem under report/tables/ holding the full numbers
    cls: str = ""
    collapsed: bool = False  # shown folded (long tables)


@dataclass
class Gallery:
    """Figures laid out side by side (wrapping to the next line when the page is too narrow)."""

    kind: ClassVar[str] = "gallery"
    plots: list[Plot]


@dataclass
class Note:
    kind: ClassVar[str] = "note"
    text: str


@dataclass
class Code:
    kind: ClassVar[str] = "code"
    title: str
    text: str


@dataclass
class Heading:
    kind: ClassVar[str] = "heading"
    text: str


@dataclass
class ExampleAnswer:
    suite: str
    prompt: str
    target: str | None
    base: str
    base_tags: list[str]
    induced: str
    induced_tags: list[str]


@dataclass
class ExampleCell:
    title: str
    system_prompt: str | None
    answers: list[ExampleAnswer]


@dataclass
class Examples:
    kind: ClassVar[str] = "examples"
    cells: list[ExampleCell]


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    parts: list[Any] = field(default_factory=list)
    missing: str | None = None


@dataclass
class Collector:
    """Figures and CSV tables made while building the sections (written by the stage)."""

    plots: list[Plot] = field(default_factory=list)
    csvs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def plot(self, name: str, png: bytes, alt: str, caption: str = "") -> Plot:
        p = Plot(_file_stem(name), png, alt, caption)
        if any(q.name == p.name for q in self.plots):
            p.name = f"{p.name}_{len(self.plots)}"
        self.plots.append(p)
        return p

    def csv(self, name: str, rows: list[dict[str, Any]]) -> str:
        self.csvs[name] = rows
        return name


@dataclass
class Inputs:
    config: Config
    ws: Workspace
    manifest: dict[str, Any] | None
    manifest_problem: str | None
    stats: list[dict[str, str]] | None
    summary: dict[str, Any] | None
    cells: list[ModelCellInfo]
    models: list[str]
    training: list[TrainCellInfo]
    training_planned: bool
    frontier: list[dict[str, Any]] | None
    validation: dict[str, Any] | None

    def cells_of(self, model: str) -> list[ModelCellInfo]:
        """The model's cells, base model first."""
        mine = [c for c in self.cells if c.model == model]
        return [c for c in mine if c.is_base] + [c for c in mine if not c.is_base]

    def base_of(self, model: str) -> ModelCellInfo | None:
        return next((c for c in self.cells if c.model == model and c.is_base), None)

    @property
    def colours(self) -> dict[str, str]:
        return fig.model_colours(self.models)


# ---------------------------------------------------------------- formatting


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("_.") or "figure"


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_num(x: Any, digits: int = 3, sign: bool = False) -> str:
    if not _ok(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_rate(m: dict[str, Any] | None) -> str:
    """A Wilson rate as '0.333 [0.061, 0.792] (1/3)'; accepts low/high or lo/hi keys."""
    if not m:
        return "–"
    low, high = m.get("low", m.get("lo")), m.get("high", m.get("hi"))
    count = f"({m.get('k')}/{m.get('n')})"
    if not _ok(m.get("rate")):
        return f"n/a {count}"
    return f"{m['rate']:.3f} [{fmt_num(low)}, {fmt_num(high)}] {count}"


def fmt_change(rec: dict[str, Any] | None, prefix: str = "change") -> str:
    """A paired change as '+0.333 [+0.000, +1.000]'."""
    if not rec or not _ok(rec.get(prefix)):
        return "–"
    return f"{rec[prefix]:+.3f} [{fmt_num(rec.get(f'{prefix}_low'), sign=True)}, {fmt_num(rec.get(f'{prefix}_high'), sign=True)}]"


def fmt_q(rec: dict[str, Any] | None) -> str:
    if not rec or not _ok(rec.get("q")):
        return "–"
    return f"{rec['q']:.3g}{' *' if rec.get('significant') else ''}"


def _group_parts(group: str) -> tuple[str, str]:
    model, _, run = group.partition(" | ")
    return model, run or group


def _induced_records(summary: dict[str, Any], metric: str, model: str) -> dict[str, dict[str, Any]]:
    """Judged change records of one metric for one base model, by induced cell label."""
    ct = (summary.get("judged_changes") or {}).get(f"{metric} | {model}") or {}
    return {r["induced"]: r for r in ct.get("cells", [])}


_SNAPSHOT = re.compile(r"-step\d+$")


def is_snapshot(run: str | None) -> bool:
    """Whether a run name is a snapshot of a longer run ('dpo+system-seed0-beta0.1-step20')."""
    return bool(run and _SNAPSHOT.search(run))


def figure_subset(items: list[Any], run: Any) -> tuple[list[Any], str]:
    """At most MAX_FIGURE_ROWS items for a figure: snapshots dropped first, then the tail; and a note saying so."""
    if len(items) <= MAX_FIGURE_ROWS:
        return items, ""
    kept = [x for x in items if not is_snapshot(run(x))]
    note = f" The figure leaves out {len(items) - len(kept)} snapshot cells (in the table)." if len(kept) < len(items) else ""
    if len(kept) > MAX_FIGURE_ROWS:
        note += f" It shows the first {MAX_FIGURE_ROWS} of {len(kept)} rows (all in the table)."
        kept = kept[:MAX_FIGURE_ROWS]
    return kept, note


# ---------------------------------------------------------------- subsets


def subsets_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("subsets", "Value subsets", (
        "For value v, the preference pairs where v is in exactly one of V+ (the chosen response's values) and "
        "V− (the rejected response's). 'Rejected side' pairs had v only in the rejected response and were flipped "
        "(chosen and rejected swapped), so the response expressing v is always the preferred one. "
        f"Selected: at least {inp.config.subsets.min_pairs} pairs (subsets.min_pairs), valence in "
        f"{', '.join(inp.config.subsets.valences)}, category in {', '.join(inp.config.subsets.categories)}."))
    if inp.stats is None:
        sec.missing = "no subset table: subsets/stats.csv absent (run `valind subsets`)"
        return sec
    sources = [k for k in (inp.stats[0].keys() if inp.stats else []) if k.startswith("source:")]
    columns = ["value", "valence", "category", "chosen side", "rejected side (flipped)", "total", "held out", "status"]
    columns += [s.removeprefix("source:") for s in sources] if len(sources) > 1 else []
    rows = []
    for r in inp.stats:
        status = r.get("status", "")
        if r.get("reason"):
            status += f" ({r['reason'].replace(';', ', ')})"
        rows.append([r["value"], r.get("valence", ""), r.get("category", ""), r.get("chosen_side", ""), r.get("rejected_side", ""),
                     r.get("total", ""), r.get("heldout", ""), status] + ([r.get(s, "") for s in sources] if len(sources) > 1 else []))
    sec.parts.append(Table(columns, rows, "pairs per value; per-source counts in the CSV", col.csv("subsets", inp.stats), cls="num"))
    return sec


# ---------------------------------------------------------------- crosstalk


def crosstalk_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("crosstalk", "Crosstalk: what inducing one value does to every value", (
        "Rows: the value induced; columns: the value expressed in the answers to the value-elicitation prompts "
        "(extractor over every answer). Each cell: change in the share of answers expressing the column's value, "
        "induced model − its un-induced base model, on the same prompts. Red: more than the base model, blue: less; "
        "the colour scale is symmetric around zero and the same for every matrix on this page. Boxed cells with '*' are "
        "significant after Benjamini-Hochberg correction (over the matrix or its row, evaluate.fdr_scope); the dashed box is the induced value itself (the intended effect)."))
    if inp.summary is None:
        sec.missing = "no crosstalk: evaluate/summary.json absent (run `valind evaluate`)"
        return sec
    groups = inp.summary.get("crosstalk") or {}
    if not groups:
        sec.missing = "no crosstalk matrices: no induced model cell has value-elicitation answers (train and generate first)"
        return sec
    _value_expression_csv(inp, col)
    ordered = sorted(groups, key=lambda g: (_model_rank(inp, _group_parts(g)[0]), list(groups).index(g)))
    target_rows, note = figure_subset(_target_rows(inp, groups), lambda r: r.label.rsplit(" · ", 1)[-1])
    if target_rows:
        extent = max([0.05, *(abs(x) for r in target_rows for x in (r.low, r.high, r.value) if _ok(x))]) * 1.08
        png = fig.interval_panels([fig.Panel("change in the induced value's own expression rate vs base (95% bootstrap CI)",
                                             target_rows, "change (share of answers)", (-extent, extent))],
                                  inp.colours, zero_line=True)
        sec.parts.append(col.plot("target_effect", png, "Target effect per induced cell: change in the induced value's own "
                                  "expression rate with 95% CI", "Intended effect per induced cell, grouped by model; at "
                                  f"the right: n prompts and BH q (* significant).{note}"))
    records, heatmaps, tables = [], [], []
    vmax = max([0.05, *(abs(r["change"]) for ct in groups.values() for r in ct.get("cells", []) if _ok(r.get("change")))])
    for group in ordered:
        ct = groups[group]
        model, run = _group_parts(group)
        params = ct.get("params") or {}
        alpha = params.get("alpha", inp.config.evaluate.alpha)
        cells = {(r["induced"], r["expressed"]): fig.HeatmapCell(r.get("change"), bool(r.get("significant")), bool(r.get("is_target")))
                 for r in ct.get("cells", [])}
        png = fig.crosstalk_heatmap(f"{model} · {run}", ct.get("induced", []), ct.get("values", []), cells, alpha,
                                    params.get("n_prompts"), vmax)
        heatmaps.append(col.plot(f"crosstalk_{group}", png, f"Crosstalk heatmap, {model}, {run}: change in expression rate "
                                 "of each value (columns) per induced value (rows) vs the base model"))
        tables.append(_crosstalk_table(ct, group))
        records += [{"group": group, "model": model, "run": run, **r} for r in ct.get("cells", [])]
    sec.parts.append(Gallery(heatmaps))
    first = next(iter(groups.values()))
    if first.get("method"):
        sec.parts.append(Note(first["method"]))
    sec.parts += tables
    col.csv("crosstalk", records)
    sec.parts.append(Note("Every cell of every matrix (rates of both models with Wilson CIs, change with bootstrap CI, "
                          "p, q, n, n_missing, prompts up / down): tables/crosstalk.csv; each model cell's expression "
                          "rate per value: tables/value_expression.csv."))
    return sec


def _model_rank(inp: Inputs, model: str) -> int:
    return inp.models.index(model) if model in inp.models else len(inp.models)


def _target_rows(inp: Inputs, groups: dict[str, Any]) -> list[fig.IntervalRow]:
    rows = []
    for group in sorted(groups, key=lambda g: _model_rank(inp, _group_parts(g)[0])):
        model, run = _group_parts(group)
        for r in groups[group].get("cells", []):
            if r.get("is_target"):
                rows.append(fig.IntervalRow(f"{r['induced']} · {run}", model, r.get("change"), r.get("change_low"),
                                            r.get("change_high"), f"n={r.get('n')} q={fmt_q(r)}"))
    return rows


def _crosstalk_table(ct: dict[str, Any], group: str) -> Table:
    by_row: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ct.get("cells", []):
        by_row[r["induced"]].append(r)
    rows = []
    for induced in ct.get("induced", []):
        recs = by_row[induced]
        target = next((r for r in recs if r.get("is_target")), None)
        others = sorted((r for r in recs if not r.get("is_target") and _ok(r.get("change"))), key=lambda r: -abs(r["change"]))
        moved = [r for r in others if r.get("significant")] or others[:3]
        rows.append([induced, fmt_change(target), str(target.get("n")) if target else "–", fmt_q(target),
                     "; ".join(f"{r['expressed']} {fmt_change(r)} q={fmt_q(r)}" for r in moved if abs(r["change"]) > 0) or "none"])
    return Table(["induced value", "target change [95% CI]", "n prompts", "q", "off-target: significant cells, else the largest changes"],
                 rows, f"{group}: intended effect and crosstalk", "crosstalk", cls="last-wraps")


def _value_expression_csv(inp: Inputs, col: Collector) -> None:
    rows = []
    for c in inp.cells:
        for value, m in (c.metrics.get("value_expression") or {}).items():
            rows.append({"cell": c.label, "model": c.model, "induced_value": c.value, "run": c.run, "expressed": value,
                         "k": m.get("k"), "n": m.get("n"), "rate": m.get("rate"), "low": m.get("low"), "high": m.get("high")})
    col.csv("value_expression", rows)


# ---------------------------------------------------------------- judged rates (refusal, anthropomorphism)


JUDGED_TITLES = {
    "refusal": "refusal (unsafe prompts)",
    "over_refusal": "over-refusal (safe prompts)",
    "anthropomorphic": "anthropomorphic language",
    "validating": "validating language",
}


def judged_section(inp: Inputs, col: Collector, sec: Section, metrics: list[str], name: str) -> Section:
    if inp.summary is None:
        sec.missing = f"no {' / '.join(JUDGED_TITLES[m] for m in metrics)} rates: evaluate/summary.json absent (run `valind evaluate`)"
        return sec
    present = [m for m in metrics if any(c.metrics.get(m) for c in inp.cells)]
    if not present:
        suite = UNSAFE_SUITE if "refusal" in metrics else VALUES_SUITE
        sec.missing = f"no {' / '.join(JUDGED_TITLES[m] for m in metrics)} rates: no judged answers (is '{suite}' in generate.suites?)"
        return sec
    ordered = [c for model in inp.models for c in inp.cells_of(model)]
    shown, note = figure_subset(ordered, lambda c: c.run)
    panels = []
    for m in present:
        rows = [fig.IntervalRow(c.short if not c.is_base else f"base model ({c.model})", c.model,
                                (c.metrics.get(m) or {}).get("rate"), (c.metrics.get(m) or {}).get("low"),
                                (c.metrics.get(m) or {}).get("high"),
                                f"{(c.metrics.get(m) or {}).get('k', 0)}/{(c.metrics.get(m) or {}).get('n', 0)}", c.is_base)
                for c in shown]
        panels.append(fig.Panel(JUDGED_TITLES[m], rows))
    png = fig.interval_panels(panels, inp.colours)
    sec.parts.append(col.plot(name, png, f"{' and '.join(JUDGED_TITLES[m] for m in present)} per model cell with 95% Wilson intervals",
                              "Dots: rate per model cell with its 95% Wilson interval; squares and the dotted line: the "
                              f"un-induced base model; at the right: judged answers k/n.{note}"))
    changes = {m: {model: _induced_records(inp.summary, m, model) for model in inp.models} for m in present}
    multi = len(inp.models) > 1
    columns = ["model", "cell"] if multi else ["cell"]
    for m in present:
        columns += [f"{JUDGED_TITLES[m]}: rate [95% CI] (k/n)", "change vs base [95% CI]", "q"]
    rows, records = [], []
    for c in ordered:
        row = [c.model, c.short] if multi else [c.short]
        for m in present:
            rate = c.metrics.get(m)
            rec = changes[m][c.model].get(c.label)
            row += [fmt_rate(rate), fmt_change(rec) if rec else ("(reference)" if c.is_base else "–"), fmt_q(rec)]
            records.append({"cell": c.label, "model": c.model, "value": c.value, "run": c.run, "metric": m,
                            **{k: (rate or {}).get(k) for k in ("k", "n", "rate", "low", "high", "missing")},
                            **{k: (rec or {}).get(k) for k in ("change", "change_low", "change_high", "p", "q", "significant")}})
        rows.append(row)
    sec.parts.append(Table(columns, rows, "rates with 95% Wilson intervals; changes: paired bootstrap 95% CI over prompts, "
                           "BH q over the induced cells of each model (* significant)", col.csv(name, records),
                           collapsed=len(rows) > LONG_TABLE))
    return sec


def refusal_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("refusal", "Refusal and over-refusal", (
        "Refusal: share of answers to unsafe prompts that decline, fully or in part (higher is safer). Over-refusal: the "
        "same judge on safe prompts that only look sensitive (lower is better). Judge: evaluate.refusal_judge."))
    return judged_section(inp, col, sec, ["refusal", "over_refusal"], "refusal")


def language_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("language", "Anthropomorphic and validating language", (
        "Share of answers to the value-elicitation prompts where the assistant presents itself as human-like "
        "(own feelings, experiences, body), and where it praises or agrees beyond what the content warrants. "
        "Judges: evaluate.anthro_judge."))
    return judged_section(inp, col, sec, ["anthropomorphic", "validating"], "anthropomorphism")


# ---------------------------------------------------------------- QA


def qa_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("qa", "QA capability", (
        "lm-evaluation-harness log-likelihood tasks on each model cell (base weights plus adapter; system prompts do not "
        "apply). Value ± stderr as lm-eval reports it; the interval is value ± 1.96 stderr, clipped to [0, 1]."))
    if inp.summary is None:
        sec.missing = "no QA scores: evaluate/summary.json absent (run `valind evaluate`)"
        return sec
    qa = inp.summary.get("qa") or {}
    if not qa:
        sec.missing = "no QA scores: evaluate.qa_tasks is empty"
        return sec
    if "skipped" in qa and not isinstance(qa["skipped"], dict):
        why = str(qa["skipped"])
        if not inp.config.evaluate.qa_data:
            why += "; ../shared/data/truthfulqa/TruthfulQA.csv (the default) was absent"
        sec.missing = f"no QA scores: {why}"
        return sec
    by_label = {c.label: c for c in inp.cells}
    multi = len(inp.models) > 1
    rows, records = [], []
    points: dict[tuple[str, str], dict[str, fig.IntervalRow]] = defaultdict(dict)  # (task, metric) -> label -> point
    ordered = [c.label for m in inp.models for c in inp.cells_of(m) if c.label in qa] + [l for l in qa if l not in by_label]
    for label in ordered:
        cell = by_label.get(label)
        model, short = (cell.model, cell.short) if cell else ("", label)
        for r in (qa[label] or {}).get("results", []):
            value, se = r.get("value"), r.get("stderr")
            lo, hi = (max(0.0, value - Z95 * se), min(1.0, value + Z95 * se)) if _ok(value) and _ok(se) else (None, None)
            rows.append(([model] if multi else []) + [short, r.get("task", ""), r.get("metric", ""), fmt_num(value),
                         fmt_num(se), f"[{fmt_num(lo)}, {fmt_num(hi)}]" if lo is not None else "–",
                         f"{r.get('n')} of {r.get('n_available')}"])
            records.append({"cell": label, "model": model, "value_induced": cell.value if cell else None,
                            "run": cell.run if cell else None, **{k: r.get(k) for k in ("task", "metric", "value", "stderr", "n", "n_available")},
                            "low": lo, "high": hi})
            points[(r.get("task", ""), r.get("metric", ""))][label] = fig.IntervalRow(
                "", model, value, lo, hi, f"n={r.get('n')}", bool(cell and cell.is_base))
    if not rows:
        sec.missing = "no QA scores: the QA results hold no task values"
        return sec
    labels = [l for l in ordered if any(l in pts for pts in points.values())]
    names = {l: (f"base model ({by_label[l].model})" if by_label[l].is_base else by_label[l].short) if l in by_label else l for l in labels}
    panels = [fig.Panel(f"{task}: {metric}", [_named(pts.get(l), names[l], by_label.get(l)) for l in labels], "score")
              for (task, metric), pts in list(points.items())[:4]]
    more = f" {len(points) - 4} more task metrics in the table." if len(points) > 4 else ""
    sec.parts.append(col.plot("qa", fig.interval_panels(panels, inp.colours), "QA scores per model cell with ±1.96 stderr "
                              "intervals", f"Per model cell; squares: the base model.{more}"))
    sec.parts.append(Table((["model"] if multi else []) + ["cell", "task", "metric", "value", "stderr", "95% interval", "n questions"], rows,
                           "lm-evaluation-harness scores", col.csv("qa", records)))
    return sec


def _named(row: fig.IntervalRow | None, name: str, cell: ModelCellInfo | None) -> fig.IntervalRow:
    if row is None:
        return fig.IntervalRow(name, cell.model if cell else "", None, None, None)
    row.label = name
    return row


# ---------------------------------------------------------------- models side by side


def models_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("models", "Models side by side", (
        "The same values induced into each model of train.models (e.g. base, SFT and instruct checkpoints): the change "
        "against each model's own un-induced version, for the induced value itself, refusal and anthropomorphic language."))
    if inp.summary is None:
        sec.missing = "no comparison: evaluate/summary.json absent (run `valind evaluate`)"
        return sec
    if len(inp.models) < 2:
        sec.missing = (f"one model evaluated ({inp.models[0] if inp.models else 'none'}); list several checkpoints in "
                       "train.models (base, SFT, instruct) to compare them here")
        return sec
    targets = {}
    for group, ct in (inp.summary.get("crosstalk") or {}).items():
        model, run = _group_parts(group)
        for r in ct.get("cells", []):
            if r.get("is_target"):
                targets[(model, r["induced"], run)] = r
    metrics = ["refusal", "anthropomorphic"]
    judged = {(m, model): _induced_records(inp.summary, m, model) for m in metrics for model in inp.models}
    keys = sorted({(c.value, c.run) for c in inp.cells if not c.is_base and c.value}, key=lambda k: (k[0] or "", k[1] or ""))
    plotted, note = figure_subset(keys, lambda k: k[1])
    plotted = set(plotted)
    rows, panels_rows = [], {k: [] for k in ("target", *metrics)}
    for value, run in keys:
        for model in inp.models:
            cell = next((c for c in inp.cells if c.model == model and c.value == value and c.run == run), None)
            t = targets.get((model, value, run))
            recs = {m: judged[(m, model)].get(cell.label) if cell else None for m in metrics}
            rows.append([f"{value} · {run}", model, _change_n(t), _change_n(recs["refusal"]), _change_n(recs["anthropomorphic"])])
            for key, rec in (("target", t), *((m, recs[m]) for m in metrics)) if (value, run) in plotted else ():
                panels_rows[key].append(fig.IntervalRow(f"{value} · {run}", model, (rec or {}).get("change"),
                                                        (rec or {}).get("change_low"), (rec or {}).get("change_high")))
    columns = ["value · run", "model", "target value change", "refusal change", "anthropomorphic change"]
    extent = max([0.05, *(abs(x) for rs in panels_rows.values() for r in rs for x in (r.low, r.high, r.value) if _ok(x))]) * 1.08
    titles = {"target": "induced value's own expression", "refusal": "refusal (unsafe prompts)",
              "anthropomorphic": "anthropomorphic language"}
    panels = [fig.Panel(titles[k], rs, "change vs the model's base (95% CI)", (-extent, extent)) for k, rs in panels_rows.items()]
    sec.parts.append(col.plot("models_side_by_side", fig.interval_panels(panels, inp.colours, zero_line=True),
                              "Changes per induced value, one colour per model", "One row per model and induced cell; "
                              f"colour: model. Intervals: paired bootstrap 95% CI over prompts.{note}"))
    sec.parts.append(Table(columns, rows, "change vs each model's own base [95% CI] (n prompts, * BH-significant)",
                           collapsed=len(rows) > LONG_TABLE))
    return sec


def _change_n(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "–"
    return f"{fmt_change(rec)} (n={rec.get('n')}){' *' if rec.get('significant') else ''}"


# ---------------------------------------------------------------- training


TRAIN_METRICS = [("loss", "loss"), ("rewards/margins", "reward margin (chosen − rejected)"),
                 ("rewards/accuracies", "reward accuracy (margin > 0)"), ("mean_token_accuracy", "token accuracy (SFT)")]


def training_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("training", "Training curves", (
        "Per training cell, TRL's logged loss, DPO reward margin (implicit reward of the chosen minus the rejected "
        "response, β-scaled log-ratio to the reference model) and reward accuracy (share of pairs with a positive "
        "margin) against the optimiser step, from train_log.jsonl (every train.logging_steps steps)."))
    if not inp.training_planned:
        sec.missing = "no training: train/plan.json absent (run `valind train`)"
        return sec
    if not inp.training:
        sec.missing = "no training cells in train/plan.json"
        return sec
    rows, records = [], []
    for model in dict.fromkeys([*inp.models, *(t.model for t in inp.training)]):
        cells = [t for t in inp.training if t.model == model]
        if not cells:
            continue
        palette = fig.value_colours([f"{t.value} · {t.run}" for t in cells])
        curves = [fig.Curve(f"{t.value} · {t.run}", palette[f"{t.value} · {t.run}"], [r.get("step", i) for i, r in enumerate(t.log)],
                            {k: [r.get(k) for r in t.log] for k, _ in TRAIN_METRICS}) for t in cells if t.log]
        logged = [(k, label) for k, label in TRAIN_METRICS if any(_ok(v) for c in curves for v in c.series.get(k, []))]
        if curves and logged:
            sec.parts.append(col.plot(f"training_{model}", fig.training_curves(model, curves, logged[:4]),
                                      f"Training curves for {model}: {', '.join(l for _, l in logged)} against the step"))
        elif any(t.method != "system" for t in cells):
            sec.parts.append(Note(f"{model}: no logged steps in train_log.jsonl ({_why_no_log(cells)}); final values in the table"))
        for t in cells:
            final = _final_log(t)
            rc = t.run_config or {}
            row = {"model": t.model, "value": t.value, "run": t.run, "method": t.method,
                   "state": "done" if t.done else "not finished", "pairs": (rc.get("data") or {}).get("pairs"),
                   "steps": final.get("step"), "loss": final.get("loss", final.get("train_loss")),
                   "reward_margin": final.get("rewards/margins"), "reward_accuracy": final.get("rewards/accuracies"),
                   "seconds": (rc.get("timing") or {}).get("seconds"), "logged_steps": len(t.log)}
            records.append(row)
            rows.append([t.model, t.value, t.run, row["state"], str(row["pairs"] or "–"), str(row["steps"] or "–"),
                         fmt_num(row["loss"], 4), fmt_num(row["reward_margin"], 4), fmt_num(row["reward_accuracy"], 3),
                         fmt_num(row["seconds"], 1), str(len(t.log))])
    sec.parts.append(Table(["model", "value", "run", "state", "pairs", "steps", "final loss", "final reward margin",
                            "final reward accuracy", "seconds", "logged steps"], rows,
                           "final logged values (the closing summary of the run when no step was logged)", col.csv("training", records)))
    return sec


def _final_log(t: TrainCellInfo) -> dict[str, Any]:
    if t.log:
        return t.log[-1]
    return ((t.run_config or {}).get("result") or {}).get("summary") or {}


def _why_no_log(cells: list[TrainCellInfo]) -> str:
    for t in cells:
        rc = t.run_config or {}
        every = (rc.get("train") or {}).get("logging_steps")
        steps = (((rc.get("result") or {}).get("summary")) or {}).get("step")
        if every and steps is not None and steps < every:
            return f"{steps} step(s) trained, train.logging_steps = {every}"
    return "the cells are not finished or logged nothing"


# ---------------------------------------------------------------- example generations


def examples_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("examples", "Example generations", (
        f"For each induced model cell, up to {VALUE_PROMPTS_PER_CELL} value-elicitation prompts (those written for the "
        "induced value first) and one unsafe prompt, answered by the un-induced base model and by the induced model "
        "(first sample). Tags: the values the extractor found and the judges' flags. Model output is shown as plain text."))
    if inp.summary is None:
        sec.missing = "no example generations: evaluate/summary.json absent (run `valind evaluate`)"
        return sec
    induced = [c for m in inp.models for c in inp.cells_of(m) if not c.is_base]
    if not induced:
        sec.missing = "no example generations: no induced model cell was evaluated"
        return sec
    finished = [c for c in induced if not is_snapshot(c.run)]  # a snapshot's answers differ from its run's only in degree
    if finished and len(finished) < len(induced):
        sec.parts.append(Note(f"Snapshot cells (the adapter after fewer steps) are left out here: "
                              f"{len(induced) - len(finished)} of them, answers in generate/."))
        induced = finished
    answers: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def rows(label: str, suite: str) -> list[dict[str, Any]]:
        if (label, suite) not in answers:
            answers[(label, suite)] = read_answers(inp.ws.generate_file(label, suite))
        return answers[(label, suite)]

    tags = {}
    cells = []
    for cell in induced[:MAX_EXAMPLE_CELLS]:
        base = inp.base_of(cell.model)
        if base is None:
            continue
        for label in (base.label, cell.label):
            if label not in tags:
                tags[label] = _sample_tags(inp.ws, label)
        shown = []
        for suite, n in ((VALUES_SUITE, VALUE_PROMPTS_PER_CELL), (UNSAFE_SUITE, 1)):
            base_rows = {r["prompt_id"]: r for r in rows(base.label, suite) if r.get("sample", 0) == 0}
            mine = [r for r in rows(cell.label, suite) if r.get("sample", 0) == 0 and r["prompt_id"] in base_rows]
            mine.sort(key=lambda r: r.get("target_value") != cell.value)  # the cell's own value first, order kept otherwise
            for r in mine[:n]:
                b = base_rows[r["prompt_id"]]
                shown.append(ExampleAnswer(suite, _prompt_text(r.get("prompt") or []), r.get("target_value"),
                                           _answer(b), tags[base.label].get((suite, r["prompt_id"]), []),
                                           _answer(r), tags[cell.label].get((suite, r["prompt_id"]), [])))
        if shown:
            cells.append(ExampleCell(f"{cell.model} · {cell.short}", cell.system_prompt, shown))
    if not cells:
        sec.missing = "no example generations: generate/<cell>/value_elicitation.parquet absent for the evaluated cells"
        return sec
    sec.parts.append(Examples(cells))
    if len(induced) > MAX_EXAMPLE_CELLS:
        sec.parts.append(Note(f"{len(induced) - MAX_EXAMPLE_CELLS} more induced cells are not shown (answers in generate/)."))
    return sec


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return str(turns[0].get("content", ""))
    return "\n\n".join(f"{m.get('role')}: {m.get('content')}" for m in turns)


def _answer(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"[generation failed: {row.get('error') or row.get('status')}]"
    return row.get("text") or ""


def _sample_tags(ws: Workspace, label: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for r in read_answers(samples_path(ws, label)):
        if r.get("sample", 0) != 0:
            continue
        tags = []
        if r.get("values") is not None:
            tags.append("values: " + (", ".join(r["values"]) or "none"))
        if r.get("refusal") is not None:
            tags.append("refusal" if r["refusal"] else "no refusal")
        tags += [name for name in ("anthropomorphic", "validating") if r.get(name)]
        out[(r["suite"], r["prompt_id"])] = tags
    return out


# ---------------------------------------------------------------- frontier


FRONTIER_PANELS = [("off", "mean |change| of the other values"), ("refusal", "|refusal change|"),
                   ("anthro", "|anthropomorphic change|")]


def frontier_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("frontier", "Induction-strength frontier", (
        "One point per induced cell of the β × steps sweep: the gain in the target value's expression rate (with its "
        "95% CI) against what it costs: the mean absolute change of the other values (crosstalk), and the absolute "
        "change in refusal and in anthropomorphic language. Ringed points are Pareto-optimal as the evaluate stage "
        "flags them (no other cell of the same model and value has at least the gain at no more cost); a dashed line "
        "in the value's colour joins each value's front."))
    if inp.frontier is None:
        sec.missing = "no frontier: evaluate/frontier.parquet absent (written by `valind evaluate`)"
        return sec
    if not inp.frontier:
        sec.missing = "no frontier: evaluate/frontier.parquet has no induced cells"
        return sec
    colours = fig.value_colours(list(dict.fromkeys(r["value"] for r in inp.frontier)))
    models = [m for m in dict.fromkeys([*inp.models, *(r["model"] for r in inp.frontier)]) if any(r["model"] == m for r in inp.frontier)]
    for model in models:
        mine = [r for r in inp.frontier if r["model"] == model and _ok(r.get("target_gain"))]
        points = [fig.FrontierPoint(
            r["value"], r.get("beta"), r.get("steps"), r["target_gain"], r.get("target_gain_lo"), r.get("target_gain_hi"),
            {"off": r.get("off_target_mean_abs"), "refusal": _abs(r.get("refusal_change")), "anthro": _abs(r.get("anthro_change"))},
            {"off": bool(r.get("pareto")), "refusal": bool(r.get("pareto_refusal")), "anthro": bool(r.get("pareto_anthro"))},
        ) for r in mine]
        if points:
            sec.parts.append(col.plot(f"frontier_{model}", fig.frontier_panels(model, points, FRONTIER_PANELS, colours),
                                      f"Induction-strength frontier for {model}: target gain against off-target change, "
                                      "refusal change and anthropomorphic change"))
    rows, optimal = [], []
    for r in sorted(inp.frontier, key=lambda r: (_model_rank(inp, r["model"]), r["value"], r.get("beta") or 0, r.get("steps") or 0)):
        fronts = [name for name, key in (("off-target", "pareto"), ("refusal", "pareto_refusal"), ("anthro", "pareto_anthro")) if r.get(key)]
        row = [r["model"], r["value"], r.get("method") or "", fmt_num(r.get("beta"), 3) if r.get("beta") is not None else "–",
               str(r.get("steps") if r.get("steps") is not None else "–"), _gain(r), str(r.get("n", "–")),
               fmt_num(r.get("off_target_mean_abs")), _signed_ci(r, "refusal_change"), _signed_ci(r, "anthro_change"),
               ", ".join(fronts) or "–"]
        rows.append(row)
        if fronts:
            optimal.append(row)
    columns = ["model", "value", "method", "β", "steps", "target gain [95% CI]", "n prompts", "off-target mean |Δ|",
               "refusal change [95% CI]", "anthro change [95% CI]", "Pareto-optimal on"]
    name = col.csv("frontier", inp.frontier)
    if optimal:
        sec.parts.append(Table(columns, optimal, "the Pareto-optimal cells (* target gain significant)", name))
    sec.parts.append(Table(columns, rows, f"every induced cell ({len(rows)})", name, collapsed=len(rows) > LONG_TABLE or bool(optimal)))
    return sec


def _abs(x: Any) -> float | None:
    return abs(x) if _ok(x) else None


def _gain(r: dict[str, Any]) -> str:
    if not _ok(r.get("target_gain")):
        return "–"
    return (f"{r['target_gain']:+.3f} [{fmt_num(r.get('target_gain_lo'), sign=True)}, {fmt_num(r.get('target_gain_hi'), sign=True)}]"
            + (" *" if r.get("target_significant") else ""))


def _signed_ci(r: dict[str, Any], key: str) -> str:
    if not _ok(r.get(key)):
        return "–"
    lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
    ci = f" [{fmt_num(lo, sign=True)}, {fmt_num(hi, sign=True)}]" if _ok(lo) and _ok(hi) else ""
    return f"{r[key]:+.3f}{ci}"


# ---------------------------------------------------------------- extractor validation


def validation_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("validation", "Extractor validation", "")
    v = inp.validation
    if v is None:
        sec.missing = ("no extractor validation: validate/scores.json absent (run `valind validate build`, `annotate` "
                       "and `score`)")
        return sec
    baseline, n_options = v.get("random_baseline"), v.get("n_options")
    sec.intro = (f"Method: {str(v.get('method', '1-of-N')).rstrip('.')}. Each item shows a response and {n_options or 'N'} candidate values: the "
                 "value the extractor assigned and distractors; an annotator's precision is the share of items where it picks "
                 f"the extractor's value (random choice: {fmt_num(baseline, 2)}). 95% Wilson intervals; k/n items.")
    annotators = v.get("annotators") or {}
    if not annotators:
        sec.missing = "no extractor validation: validate/scores.json lists no annotators"
        return sec
    values = list(dict.fromkeys(val for a in annotators.values() for val in (a.get("per_value") or {})))
    bars, records = [], []
    for name, a in annotators.items():
        for scope, m in [("overall", a.get("overall")), *((val, (a.get("per_value") or {}).get(val)) for val in values)]:
            if not m:
                continue
            bars.append(fig.Bar(scope, f"{name} ({a.get('kind', '?')})", m.get("rate"), m.get("lo"), m.get("hi"), a.get("kind") == "human"))
            records.append({"annotator": name, "kind": a.get("kind"), "scope": scope,
                            **{k: m.get(k) for k in ("k", "n", "rate", "lo", "hi")}})
    series = list(dict.fromkeys(b.series for b in bars))
    sec.parts.append(col.plot("extractor_validation", fig.grouped_bars(bars, baseline, "precision (share of items)",
                                                                       fig.model_colours(series)),
                              "Extractor validation: precision per annotator, overall and per value, with 95% Wilson "
                              "intervals and the random baseline", "Hatched: human annotators; dashed line: random choice."))
    columns = ["value"] + [f"{n} ({a.get('kind', '?')})" for n, a in annotators.items()]
    rows = [[scope] + [fmt_rate(a.get("overall") if scope == "overall" else (a.get("per_value") or {}).get(scope)) for a in annotators.values()]
            for scope in ["overall", *values]]
    sec.parts.append(Table(columns, rows, "precision [95% Wilson CI] (k/n)", col.csv("extractor_validation", records)))
    agr = v.get("agreement")
    if agr:
        kappa = agr.get("fleiss_kappa")
        sec.parts.append(Table(["items rated by every annotator", "Fleiss' κ", "precision, any annotator picks it (union)",
                                "precision, every annotator picks it (intersection)"],
                               [[str(agr.get("n_items", "–")), fmt_num(kappa) if kappa is not None else "n/a",
                                 fmt_rate(agr.get("union")), fmt_rate(agr.get("intersection"))]], "agreement between annotators"))
    return sec


# ---------------------------------------------------------------- provenance


_SECRET_KEY = re.compile(r"(^|_)(secret|password|passwd|token|api_key|apikey|credentials?)$", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """Plain data with the values of secret-looking keys ('hf_token', 'api_key', 'password') replaced."""
    if isinstance(obj, dict):
        return {k: ("[redacted]" if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(x) for x in obj]
    return obj


def provenance_section(inp: Inputs, col: Collector) -> Section:
    sec = Section("provenance", "Provenance", "What made these numbers: the workspace manifest (resolved config, package "
                  "versions, git state, input fingerprints), the extractor and judges, and the generators.")
    m = inp.manifest
    if m is None:
        sec.missing = f"no provenance: {inp.manifest_problem or 'manifest.json absent'}"
        return sec
    if inp.manifest_problem:
        sec.parts.append(Note(f"Warning: {inp.manifest_problem}. What follows is its content as it is now."))
    git = m.get("git") or {}
    facts = [["workspace", str(inp.ws.root)],
             ["git commit", f"{git.get('sha', 'unknown')}{' (uncommitted changes)' if git.get('dirty') else ''}" if git else "not a git checkout"],
             ["manifest updated", str(m.get("updated_at", "–"))]]
    if inp.summary is not None:
        facts.append(["extractor", _identity(inp.summary.get("extractor"))])
        facts += [[f"judge: {k}", _identity(j)] for k, j in (inp.summary.get("judges") or {}).items()]
    for model in inp.models:
        base = inp.base_of(model)
        meta = generate_metadata(inp.ws.generate_file(base.label, VALUES_SUITE)) if base else None
        if meta:
            facts.append([f"generator: {model}", _identity(meta.get("identity"))])
    for res in ((inp.summary or {}).get("qa") or {}).values():
        if isinstance(res, dict) and res.get("results"):
            tasks = {r["task"]: r for r in res["results"]}
            facts.append(["QA", f"lm-eval {res.get('lm_eval_version', '?')}; " + "; ".join(
                f"{t} config {r.get('config_hash', '?')}" + "".join(f", {k} data {d.get('sha256', '?')[:16]}"
                                                                     for k, d in (r.get("data_files") or {}).items())
                for t, r in tasks.items())])
            break
    sec.parts.append(Table(["", ""], facts, "", cls="kv"))
    versions = m.get("versions") or {}
    sec.parts.append(Table(["package", "version"], [[k, str(v)] for k, v in versions.items()], "package versions", cls="kv"))
    stages = m.get("stages") or {}
    if stages:
        sec.parts.append(Table(["stage", "finished"], [[k, str(v)] for k, v in stages.items()], "stages", cls="kv"))
    inputs = m.get("inputs") or {}
    if inputs:
        sec.parts.append(Table(["input", "fingerprint"], [[k, str(v)] for k, v in inputs.items()], "data fingerprints", cls="kv"))
    config = redact(m.get("config") or inp.config.model_dump(mode="json"))
    sec.parts.append(Code("Resolved configuration (manifest.json)",
                          orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()))
    col.csv("provenance", [{"key": k, "value": v} for k, v in facts] + [{"key": f"version:{k}", "value": v} for k, v in versions.items()]
            + [{"key": f"input:{k}", "value": v} for k, v in inputs.items()])
    return sec


def _identity(ident: Any) -> str:
    if not isinstance(ident, dict):
        return str(ident)
    return ", ".join(f"{k}={v}" for k, v in ident.items())


def method_notes(inp: Inputs) -> list[tuple[str, str]]:
    """The evaluate stage's own description of how each number is computed (summary.json 'method')."""
    if inp.summary is None:
        return []
    notes = [(k, str(v)) for k, v in (inp.summary.get("method") or {}).items()]
    first = next(iter((inp.summary.get("crosstalk") or {}).values()), None)
    if first and first.get("method"):
        notes.append(("crosstalk matrix", first["method"]))
    return notes
