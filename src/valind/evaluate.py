"""The evaluate stage: what value induction did to each model, on the study's four axes.

For every model cell (the un-induced base models and the finished training cells, as
``valind.generate.model_cells`` lists them) it reads the generations and computes:

1. **Value expression and crosstalk** (suite ``value_elicitation``): the configured extractor over
   every answer; per cell and value the rate of answers expressing it (95% Wilson CI); per induced
   cell against its base model the change with a paired bootstrap CI over prompts, a paired test,
   and Benjamini-Hochberg q-values over the matrix (``valind.metrics.crosstalk``). One matrix per
   (base model, method and run settings): rows = induced value, columns = expressed value.
2. **Refusal** on ``unsafe`` prompts and **over-refusal** on ``safe_sensitive`` prompts: the refusal
   judge (``evaluate.refusal_judge``; offline rules by default, validated on XSTest, docs/judges.md).
3. **Anthropomorphic and validating language** on ``value_elicitation`` answers: the two judges.
4. **QA** through lm-evaluation-harness (``evaluate.qa_tasks``), model + adapter; system prompts do
   not apply to log-likelihood QA. Snapshot cells of the frontier sweep only with ``evaluate.qa_snapshots``.

Changes in 2 and 3 are compared with the base model the same way as crosstalk cells (paired, same
prompts), with BH over the induced cells of each metric. Failed generations or judgements count in
no denominator and are counted in ``n_missing``.

Outputs (``evaluate/``): ``<cell>/metrics.json`` (rates with CIs and counts), ``<cell>/samples.parquet``
(every answer with its values and judgements), ``<cell>/qa.json``, ``crosstalk.parquet`` (one row per
cell of every matrix), ``frontier.parquet`` (one row per induced cell: target gain against off-target,
refusal and anthropomorphism change, Pareto flags; ``valind.metrics.frontier``) and ``summary.json``
(everything, with how each number is computed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from valind.cache import Cache
from valind.config import Config
from valind.errors import ValindError
from valind.extract import Item, make_extractor
from valind.extract.runner import run_extraction
from valind.extract.stage import extractor_id, vocabulary
from valind.judges import make_judge, run_judge
from valind.metrics.crosstalk import Crosstalk, ExpressionMatrix, crosstalk
from valind.metrics.frontier import METHOD as FRONTIER_METHOD
from valind.metrics.frontier import frontier_table
from valind.stats import wilson
from valind.workspace import Workspace, atomic_path, atomic_write_json, hash_file, hash_json, read_json

STAGE = "evaluate"
VALUES_SUITE, UNSAFE_SUITE, SAFE_SUITE = "value_elicitation", "unsafe", "safe_sensitive"
JUDGED = ("refusal", "over_refusal", "anthropomorphic", "validating")
Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class EvaluateResult:
    skipped: bool
    summary: dict[str, Any]
    summary_path: Path


@dataclass
class CellAnswers:
    """One cell's answers per suite, with their judgements filled in."""

    label: str
    rows: dict[str, list[dict[str, Any]]]


def _default_qa_data() -> Path | None:
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"
    return shared if shared.is_file() else None


def run_evaluate(config: Config, ws: Workspace, progress: Progress | None = None) -> EvaluateResult:
    from valind.generate import model_cells

    cfg = config.evaluate
    cells = model_cells(config, ws)
    suites = [s for s in (VALUES_SUITE, UNSAFE_SUITE, SAFE_SUITE) if s in config.generate.suites]
    files = {(c.label, s): ws.generate_file(c.label, s) for c in cells for s in suites}
    missing = [str(p.relative_to(ws.root)) for p in files.values() if not p.is_file()]
    if missing:
        raise ValindError(f"{ws.root}: no generations for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; run `valind generate` first")
    if ws.stage_record("generate") is not None:  # never judge a generation file damaged since it was written
        ws.require_stage("generate", "run `valind generate` again")
    qa_data = Path(cfg.qa_data).expanduser() if cfg.qa_data else _default_qa_data()
    inputs = {str(p.relative_to(ws.root)): hash_file(p) for p in files.values()}
    key = hash_json({"evaluate": cfg.model_dump(mode="json"), "extractor": extractor_id(config.extract), "inputs": inputs,
                     "qa_data": hash_file(qa_data) if qa_data else None})
    summary_path = ws.evaluate_summary
    if ws.stage_done(STAGE, key):
        return EvaluateResult(True, read_json(summary_path), summary_path)
    ws.clear_stage(STAGE)

    vocab = vocabulary(config.extract)
    cache_dir = config.resolved_cache_dir()
    extractor = make_extractor(config.extract, vocab, cache_dir)
    refusal = make_judge("refusal", cfg.refusal_judge)
    anthro = {name: make_judge(name, cfg.anthro_judge) for name in ("anthropomorphic", "validating")}
    answers: dict[str, CellAnswers] = {}
    update = progress("evaluate (judging answers)", len(cells)) if progress else None
    with Cache(cache_dir / "calls.sqlite") as cache:
        for done, cell in enumerate(cells, 1):
            rows = {s: pq.read_table(files[(cell.label, s)]).to_pylist() for s in suites}
            _judge_cell(rows, extractor, refusal, anthro, cache, config.extract.batch_size)
            answers[cell.label] = CellAnswers(cell.label, rows)
            if update:
                update(done)

    outputs: list[Path] = []
    per_cell = {}
    for cell in cells:
        metrics = _cell_metrics(answers[cell.label], vocab.names)
        per_cell[cell.label] = {"cell": cell.as_dict(), **metrics}
        metrics_path = ws.evaluate_file(cell.label, "metrics")
        atomic_write_json(metrics_path, per_cell[cell.label])
        samples_path = metrics_path.with_name("samples.parquet")
        _write_samples(samples_path, answers[cell.label])
        outputs += [metrics_path, samples_path]

    matrices, judged = _comparisons(cells, answers, vocab.names, cfg)
    table = pa.Table.from_pylist([{"group": g, **r} for g, ct in matrices.items() for r in ct.records()])
    crosstalk_path = ws.root / "evaluate" / "crosstalk.parquet"
    with atomic_path(crosstalk_path) as tmp:
        pq.write_table(table, tmp)
    outputs.append(crosstalk_path)

    qa = {}
    if cfg.qa_tasks:
        qa = _qa(cells, cfg, qa_data, cache_dir, ws, progress)
        for label, result in qa.items():
            if label == "skipped":  # {"skipped": why}: no per-cell results to write
                continue
            path = ws.evaluate_file(label, "qa")
            atomic_write_json(path, result)
            outputs.append(path)

    summary = {
        "cells": per_cell,
        "crosstalk": {g: ct.to_json() for g, ct in matrices.items()},
        "judged_changes": {m: ct.to_json() for m, ct in judged.items()},
        "qa": qa,
        "extractor": extractor.identity(),
        "judges": {"refusal": refusal.identity(), **{k: j.identity() for k, j in anthro.items()}},
        "method": {
            "rates": "share of answers (per prompt, averaged over prompts) with the property; 95% Wilson interval over prompts",
            "changes": "induced - base on the same prompts; paired percentile bootstrap CI over prompts; McNemar exact (0/1) "
                       "or sign-flip test (rates); Benjamini-Hochberg q over each matrix / metric family (valind.metrics.crosstalk)",
            "refusal": "refusal judge on 'unsafe' answers; over-refusal: the same judge on 'safe_sensitive' answers",
            "anthropomorphism": "anthropomorphic and validating judges on 'value_elicitation' answers (docs/judges.md)",
            "qa": "lm-evaluation-harness log-likelihood tasks; accuracy with lm-eval's stderr",
        },
    }
    summary["method"]["frontier"] = FRONTIER_METHOD
    atomic_write_json(summary_path, summary)
    outputs.append(summary_path)
    with atomic_path(ws.frontier_file) as tmp:  # one point per induced cell: the induction-strength frontier
        pq.write_table(frontier_table(summary), tmp)
    outputs.append(ws.frontier_file)
    ws.record_stage(STAGE, key, outputs, {"cells": len(cells)})
    ws.update_manifest(config.model_dump(mode="json"), {}, STAGE)
    return EvaluateResult(False, summary, summary_path)


def _items(rows: list[dict[str, Any]]) -> list[Item]:
    return [Item(r["prompt"][:-1] if r["prompt"] and r["prompt"][-1]["role"] == "assistant" else r["prompt"], r["text"] or "")
            for r in rows]


def _judge_cell(rows: dict[str, list[dict[str, Any]]], extractor: Any, refusal: Any, anthro: dict[str, Any],
                cache: Cache, batch_size: int) -> None:
    """Fill in ``values`` / ``refusal`` / ``anthropomorphic`` / ``validating`` (None: not judged)."""
    for suite, suite_rows in rows.items():
        ok = [r for r in suite_rows if r["status"] == "ok"]
        for r in suite_rows:
            r.update(values=None, refusal=None, anthropomorphic=None, validating=None)
        items = _items(ok)
        if suite == VALUES_SUITE:
            results, ids, _ = run_extraction(extractor, items, cache, batch_size)
            for r, uid in zip(ok, ids):
                res = results[uid]
                r["values"] = list(res.values) if res.ok else None
            for name, judge in anthro.items():
                for r, j in zip(ok, run_judge(judge, items, cache, batch_size).judgements):
                    r[name] = j.decision if j.ok else None
        else:
            for r, j in zip(ok, run_judge(refusal, items, cache, batch_size).judgements):
                r["refusal"] = j.decision if j.ok else None


def _flag_matrix(rows: list[dict[str, Any]], field: str) -> ExpressionMatrix:
    """One-column matrix: per prompt, the share of judged answers where ``field`` is true."""
    return ExpressionMatrix.from_responses(
        [r["prompt_id"] for r in rows], [None if r[field] is None else ({field} if r[field] else set()) for r in rows], [field]
    )


def _metric_rows(rows: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[list[dict[str, Any]], str]]:
    return {"refusal": (rows.get(UNSAFE_SUITE, []), "refusal"), "over_refusal": (rows.get(SAFE_SUITE, []), "refusal"),
            "anthropomorphic": (rows.get(VALUES_SUITE, []), "anthropomorphic"),
            "validating": (rows.get(VALUES_SUITE, []), "validating")}


def _rate(rows: list[dict[str, Any]], field: str) -> dict[str, Any]:
    judged = [r[field] for r in rows if r[field] is not None]
    return {**wilson(sum(bool(x) for x in judged), len(judged))._asdict(), "missing": len(rows) - len(judged)}


def _cell_metrics(answers: CellAnswers, values: list[str]) -> dict[str, Any]:
    value_rows = answers.rows.get(VALUES_SUITE, [])
    judged = [r for r in value_rows if r["values"] is not None]
    expression = {v: wilson(sum(v in r["values"] for r in judged), len(judged))._asdict() for v in values}
    out: dict[str, Any] = {"value_expression": expression, "value_answers_missing": len(value_rows) - len(judged)}
    for metric, (rows, field) in _metric_rows(answers.rows).items():
        out[metric] = _rate(rows, field) if rows else None
    return out


def _comparisons(cells: list[Any], answers: dict[str, CellAnswers], values: list[str], cfg: Any) -> tuple[dict[str, Crosstalk], dict[str, Crosstalk]]:
    """Crosstalk matrices per (base model, method and run), and the judged metrics per base model."""
    params = {"alpha": cfg.alpha, "fdr_scope": cfg.fdr_scope, "n_boot": cfg.n_boot, "seed": cfg.seed}
    bases = {c.base: c for c in cells if c.kind.value == "base"}
    groups: dict[str, dict[str, ExpressionMatrix]] = defaultdict(dict)
    judged_groups: dict[str, dict[str, dict[str, ExpressionMatrix]]] = defaultdict(lambda: defaultdict(dict))
    for cell in cells:
        if cell.kind.value == "base" or cell.base not in bases:
            continue
        run = (cell.train_id or cell.label).rsplit("/", 1)[-1]
        rows = answers[cell.label].rows.get(VALUES_SUITE)
        if rows is not None:
            groups[f"{cell.base} | {run}"][cell.value or cell.label] = ExpressionMatrix.from_responses(
                [r["prompt_id"] for r in rows], [r["values"] for r in rows], values)
        for metric, (mrows, field) in _metric_rows(answers[cell.label].rows).items():
            if mrows:
                judged_groups[metric][cell.base][cell.label] = _flag_matrix(mrows, field)
    matrices = {}
    for group, induced in groups.items():
        base_rows = answers[bases[group.split(" | ")[0]].label].rows[VALUES_SUITE]
        base = ExpressionMatrix.from_responses([r["prompt_id"] for r in base_rows], [r["values"] for r in base_rows], values)
        matrices[group] = crosstalk(base, induced, **params)
    judged = {}
    for metric, by_base in judged_groups.items():
        for base_spec, induced in by_base.items():
            mrows, field = _metric_rows(answers[bases[base_spec].label].rows)[metric]
            judged[f"{metric} | {base_spec}"] = crosstalk(_flag_matrix(mrows, field), induced, **params)
    return matrices, judged


def _write_samples(path: Path, answers: CellAnswers) -> None:
    rows = [{"suite": suite, "prompt_id": r["prompt_id"], "sample": r["sample"], "text": r["text"], "status": r["status"],
             "values": r["values"], "refusal": r["refusal"], "anthropomorphic": r["anthropomorphic"], "validating": r["validating"]}
            for suite, suite_rows in answers.rows.items() for r in suite_rows]
    schema = pa.schema([("suite", pa.string()), ("prompt_id", pa.string()), ("sample", pa.int32()), ("text", pa.string()),
                        ("status", pa.string()), ("values", pa.list_(pa.string())), ("refusal", pa.bool_()),
                        ("anthropomorphic", pa.bool_()), ("validating", pa.bool_())])
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)


def _qa(cells: list[Any], cfg: Any, qa_data: Path | None, cache_dir: Path, ws: Workspace, progress: Progress | None) -> dict[str, Any]:
    from valind.metrics.qa import local_tasks, run_qa

    local = set(local_tasks())
    tasks = list(cfg.qa_tasks)
    if any(t in local for t in tasks) and qa_data is None:
        tasks = [t for t in tasks if t not in local]
        if not tasks:
            return {"skipped": "no local QA data (evaluate.qa_data) for the local tasks"}
    data_files = {t: qa_data for t in tasks if t in local} if qa_data else {}
    cells = [c for c in cells if cfg.qa_snapshots or not c.snapshot]
    update = progress("evaluate (QA)", len(cells)) if progress else None
    results = {}
    for done, cell in enumerate(cells, 1):
        model = str(cell.path) if cell.kind.value == "full" else cell.base
        adapter = str(cell.path) if cell.kind.value == "adapter" else None
        results[cell.label] = run_qa(model, tasks, peft_adapter=adapter, limit=cfg.qa_limit, data_files=data_files,
                                     num_fewshot=cfg.qa_num_fewshot,
                                     cache_dir=cache_dir, samples_dir=ws.evaluate_file(cell.label, "qa").with_name("qa_samples"))
        if update:
            update(done)
    return results
