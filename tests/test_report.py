"""The HTML report: sections from a workspace written by the test, escaping, skipping, and a real browser.

The workspace is built here with the real statistics (``valind.metrics.crosstalk``, ``valind.stats``)
over planted answers, in the formats the stages write: two models (base and instruct), three
values, one hostile model answer, a frontier table and extractor validation scores.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from markupsafe import escape

from valind.config import Config, validate_config
from valind.metrics.crosstalk import ExpressionMatrix, crosstalk
from valind.report import build_report
from valind.stats import wilson
from valind.train.config import Method
from valind.train.plan import Cell, cell_paths
from valind.workspace import Workspace, atomic_write_json, read_json

MODELS = ["llama-3-8b", "llama-3-8b-instruct"]
VALUES = ["empathy", "humor", "privacy"]
VOCAB = ["empathy", "humor", "privacy", "honesty", "curiosity"]
RUN = "dpo+system-seed0-beta0.1"
HOSTILE = "<script>alert(1)</script> & <b>bold</b>"
N_PROMPTS = 24


def _config() -> Config:
    return validate_config({"train": {"models": MODELS, "values": VALUES}, "evaluate": {"n_boot": 200}})


def _label(model: str, value: str | None) -> str:
    return f"base--{model}" if value is None else f"{model}--{value}--{RUN}"


def _answers(model: str, value: str | None, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Planted answers: an induced model expresses its value more, refuses a little more, and talks about itself."""
    lift = 0.0 if value is None else (0.6 if "instruct" in model else 0.3)
    rows: dict[str, list[dict[str, Any]]] = {"value_elicitation": [], "unsafe": [], "safe_sensitive": []}
    for i in range(N_PROMPTS):
        target = VOCAB[i % len(VOCAB)]
        expressed = [v for v in VOCAB if rng.random() < (0.2 + (lift if v == value else 0.0) + (0.2 if v == target else 0.0))]
        text = f"{model} answer {i} to a {target} prompt"
        if value == "empathy" and model == MODELS[1] and target == "empathy":
            text = HOSTILE
        rows["value_elicitation"].append({"prompt_id": f"ve-{i:02d}", "target": target, "text": text, "values": expressed,
                                          "anthropomorphic": rng.random() < 0.1 + lift / 2, "validating": rng.random() < 0.2})
    for suite, base_rate in (("unsafe", 0.5), ("safe_sensitive", 0.1)):
        for i in range(N_PROMPTS):
            rows[suite].append({"prompt_id": f"{suite}-{i:02d}", "target": None, "text": f"{model} reply to {suite} {i}",
                                "refusal": rng.random() < base_rate + lift / 3})
    return rows


def _write_answers(ws: Workspace, label: str, system: str | None, rows: dict[str, list[dict[str, Any]]]) -> None:
    samples = []
    for suite, suite_rows in rows.items():
        gen = []
        for r in suite_rows:
            prompt = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": f"Prompt {r['prompt_id']} <i>about {r['target'] or suite}</i>"}]
            extra = {"target_value": r["target"], "source": "valind"} if suite == "value_elicitation" else {
                "label": "unsafe" if suite == "unsafe" else "safe", "category": "x", "source": "valind"}
            gen.append({"prompt_id": r["prompt_id"], "prompt": prompt, "sample": 0, "seed": None, "text": r["text"],
                        "status": "ok", "error": None, "finish_reason": "stop", "tokens": 9, **extra})
            samples.append({"suite": suite, "prompt_id": r["prompt_id"], "sample": 0, "text": r["text"], "status": "ok",
                            "values": r.get("values"), "refusal": r.get("refusal"),
                            "anthropomorphic": r.get("anthropomorphic"), "validating": r.get("validating")})
        path = ws.generate_file(label, suite)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(gen), path)
    samples_path = ws.evaluate_file(label, "metrics").with_name("samples.parquet")
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(samples), samples_path)


def _rate(rows: list[dict[str, Any]], field: str) -> dict[str, Any]:
    return {**wilson(sum(bool(r[field]) for r in rows), len(rows))._asdict(), "missing": 0}


def _expression(rows: list[dict[str, Any]]) -> ExpressionMatrix:
    return ExpressionMatrix.from_responses([r["prompt_id"] for r in rows], [r["values"] for r in rows], VOCAB)


def _flag(rows: list[dict[str, Any]], field: str) -> ExpressionMatrix:
    return ExpressionMatrix.from_responses([r["prompt_id"] for r in rows], [{field} if r[field] else set() for r in rows], [field])


def _write_training(ws: Workspace, model: str, value: str, rng: random.Random) -> None:
    cell = Cell(model, value, Method.DPO_SYSTEM, 0, 0.1, f"You value {value}.")
    paths = cell_paths(ws, cell)
    paths.root.mkdir(parents=True, exist_ok=True)
    log = [{"step": s, "loss": 0.693 - 0.02 * s + rng.random() * 0.01, "rewards/margins": 0.03 * s,
            "rewards/accuracies": min(1.0, 0.5 + 0.05 * s), "learning_rate": 5e-5} for s in range(1, 11)]
    paths.train_log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in log))
    atomic_write_json(paths.run_config, {"data": {"pairs": 40}, "timing": {"seconds": 12.5}, "train": {"logging_steps": 1},
                                        "result": {"summary": {"step": 10, "train_loss": 0.6}}, "system_prompt": cell.system_prompt})
    atomic_write_json(paths.done, {"key": "k", "outputs": {}})


def make_workspace(root: Path, *, frontier: bool = True, validation: bool = True, qa: bool = True) -> Workspace:
    """A finished study at test size, in the stages' own formats."""
    ws = Workspace(root)
    rng = random.Random(7)
    config = _config()
    cells: dict[str, Any] = {}
    answers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for model in MODELS:
        for value in [None, *VALUES]:
            label = _label(model, value)
            answers[label] = _answers(model, value, rng)
            system = f"You value {value}." if value else None
            _write_answers(ws, label, system, answers[label])
            rows = answers[label]
            cells[label] = {
                "cell": {"label": label, "kind": "base" if value is None else "adapter", "base": model, "path": None,
                         "system_prompt": system, "value": value, "method": None if value is None else "dpo+system",
                         "train_id": None if value is None else f"{model}/{value}/{RUN}", "beta": None if value is None else 0.1,
                         "steps": None if value is None else 10},
                "value_expression": {v: wilson(sum(v in r["values"] for r in rows["value_elicitation"]), N_PROMPTS)._asdict() for v in VOCAB},
                "value_answers_missing": 0,
                "refusal": _rate(rows["unsafe"], "refusal"), "over_refusal": _rate(rows["safe_sensitive"], "refusal"),
                "anthropomorphic": _rate(rows["value_elicitation"], "anthropomorphic"),
                "validating": _rate(rows["value_elicitation"], "validating"),
            }
            if value is not None:
                _write_training(ws, model, value, rng)
    matrices, judged = {}, {}
    for model in MODELS:
        base = answers[_label(model, None)]
        matrices[f"{model} | {RUN}"] = crosstalk(_expression(base["value_elicitation"]),
                                                 {v: _expression(answers[_label(model, v)]["value_elicitation"]) for v in VALUES},
                                                 n_boot=200).to_json()
        for metric, suite, field in (("refusal", "unsafe", "refusal"), ("over_refusal", "safe_sensitive", "refusal"),
                                     ("anthropomorphic", "value_elicitation", "anthropomorphic"),
                                     ("validating", "value_elicitation", "validating")):
            judged[f"{metric} | {model}"] = crosstalk(_flag(base[suite], field),
                                                      {_label(model, v): _flag(answers[_label(model, v)][suite], field) for v in VALUES},
                                                      n_boot=200).to_json()
    qa_results = {label: {"lm_eval_version": "0.4.13", "results": [
        {"task": "truthfulqa_local_mc", "metric": "acc", "value": 0.25 + 0.01 * i, "stderr": 0.05, "n": 100, "n_available": 817,
         "config_hash": "abc", "data_files": {"test": {"path": "/x/TruthfulQA.csv", "sha256": "f" * 64}}}]}
        for i, label in enumerate(cells)} if qa else {"skipped": "no local QA data (evaluate.qa_data) for the local tasks"}
    atomic_write_json(ws.root / "evaluate" / "summary.json", {
        "cells": cells, "crosstalk": matrices, "judged_changes": judged, "qa": qa_results,
        "extractor": {"backend": "embedded", "model": "7ac0", "threshold": 0.67},
        "judges": {"refusal": {"backend": "rules", "label": "refusal", "version": 1}},
        "method": {"rates": "share of answers; 95% Wilson interval over prompts"},
    })
    stats = ["value,valence,category,chosen_side,rejected_side,total,heldout,status,reason,source:demo",
             "empathy,positive,Social,11,5,16,0,selected,,16", "humor,positive,Personal,8,4,12,0,selected,,12",
             "privacy,positive,Protective,11,4,15,0,selected,,15", "honesty,positive,Epistemic,3,1,4,0,dropped,too_few_pairs,4"]
    ws.subsets_stats.parent.mkdir(parents=True, exist_ok=True)
    ws.subsets_stats.write_text("\n".join(stats) + "\n")
    plan_cells = [{"model": m, "value": v, "method": "dpo+system", "seed": 0, "beta": 0.1, "system_prompt": f"You value {v}.", "key": "k"}
                  for m in MODELS for v in VALUES]
    atomic_write_json(ws.root / "train" / "plan.json", {"cells": plan_cells, "train": {}})
    if frontier:
        pq.write_table(pa.Table.from_pylist(_frontier_rows(rng)), ws.frontier_file)
    if validation:
        atomic_write_json(ws.validate_dir / "scores.json", _validation_scores())
    manifest_config = config.model_dump(mode="json")
    manifest_config["extract"]["hf_token"] = "hf_SECRET_VALUE"  # a secret-looking field must not reach the page
    ws.update_manifest(manifest_config, {"ingest.demo": "blake2b:1234"}, "evaluate")
    return ws


def _frontier_rows(rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for model in MODELS:
        for value in VALUES:
            for beta in (0.05, 0.1, 0.5):
                for steps in (10, 20, 40):
                    gain = 0.1 + beta * 0.4 + steps / 200 + rng.random() * 0.05
                    rows.append({"model": model, "value": value, "method": "dpo+system", "beta": beta, "steps": steps,
                                 "cell": f"{model}--{value}--{steps}", "n": N_PROMPTS, "target_gain": gain,
                                 "target_gain_lo": gain - 0.1, "target_gain_hi": gain + 0.1, "target_significant": gain > 0.3,
                                 "off_target_mean_abs": gain / 3 + rng.random() * 0.05, "off_target_significant": 0,
                                 "refusal_change": rng.uniform(-0.2, 0.2), "anthro_change": None if steps == 10 else rng.uniform(0, 0.2),
                                 "pareto": False, "pareto_refusal": False, "pareto_anthro": False})
    for model in MODELS:  # the front of each (model, value), as valind.metrics.frontier flags it
        for value in VALUES:
            mine = sorted((r for r in rows if r["model"] == model and r["value"] == value), key=lambda r: r["off_target_mean_abs"])
            best = -1.0
            for r in mine:
                if r["target_gain"] > best:
                    r["pareto"], best = True, r["target_gain"]
            mine[0]["pareto_refusal"] = mine[-1]["pareto_anthro"] = True
    return rows


def _validation_scores() -> dict[str, Any]:
    def p(k: int, n: int) -> dict[str, Any]:
        w = wilson(k, n)
        return {"k": k, "n": n, "rate": w.rate, "lo": w.low, "hi": w.high}

    annotators = {name: {"kind": kind, "overall": p(k * 3, 60), "per_value": {v: p(k - i, 20) for i, v in enumerate(VALUES)}}
                  for name, kind, k in (("smollm2", "llm", 15), ("qwen-7b", "llm", 16), ("alice", "human", 17))}
    return {"method": "1-of-4 precision", "random_baseline": 0.25, "n_options": 4, "annotators": annotators,
            "agreement": {"n_items": 60, "fleiss_kappa": 0.41, "union": p(55, 60), "intersection": p(40, 60)}}


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Any]:
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    return ws, build_report(_config(), ws)


def test_writes_figures_tables_and_page(report: tuple[Workspace, Any]) -> None:
    ws, result = report
    assert not result.skipped and result.index == ws.report_index and ws.report_index.is_file()
    names = {p.name for p in result.figures}
    assert {"target_effect.png", "refusal.png", "anthropomorphism.png", "qa.png", "models_side_by_side.png",
            "extractor_validation.png"} <= names
    assert {f"crosstalk_{m}_{RUN}.png" for m in MODELS} | {f"frontier_{m}.png" for m in MODELS} | {f"training_{m}.png" for m in MODELS} <= names
    for p in result.figures:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = {p.name for p in result.tables}
    assert {"subsets.csv", "crosstalk.csv", "value_expression.csv", "refusal.csv", "anthropomorphism.csv", "qa.csv",
            "training.csv", "frontier.csv", "extractor_validation.csv", "provenance.csv"} <= tables
    assert result.missing == {}
    crosstalk_csv = (ws.report_tables / "crosstalk.csv").read_text().splitlines()
    assert len(crosstalk_csv) == 1 + len(MODELS) * len(VALUES) * len(VOCAB)
    assert crosstalk_csv[0].startswith("group,model,run,")


def test_page_content(report: tuple[Workspace, Any]) -> None:
    ws, _ = report
    html = ws.report_index.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') >= 10
    for section in ("subsets", "crosstalk", "refusal", "language", "qa", "models", "frontier", "training", "examples",
                    "validation", "provenance", "methods"):
        assert f'<section id="{section}">' in html
    assert "rejected side (flipped)" in html and "too_few_pairs" in html
    # rates with intervals and counts; changes with intervals
    refusal = read_json(ws.root / "evaluate" / "summary.json")["cells"][f"base--{MODELS[0]}"]["refusal"]
    assert f"{refusal['rate']:.3f} [{refusal['low']:.3f}, {refusal['high']:.3f}] ({refusal['k']}/{refusal['n']})" in html
    assert "Fleiss" in html and "0.410" in html
    git = read_json(ws.manifest)["git"]
    if git:
        assert git["sha"] in html
    assert "blake2b:1234" in html and "Warning" not in html
    assert "hf_SECRET_VALUE" not in html and "[redacted]" in html


def test_model_text_is_escaped(report: tuple[Workspace, Any]) -> None:
    ws, _ = report
    html = ws.report_index.read_text()
    assert HOSTILE not in html and "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<i>about" not in html and "&lt;i&gt;about" in html


def test_rerun_skips_and_input_change_rebuilds(tmp_path: Path, report: tuple[Workspace, Any]) -> None:
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(report[0].root, ws.root)
    again = build_report(_config(), ws)
    assert again.skipped and {p.name for p in again.figures} == {p.name for p in report[1].figures}
    stats = ws.subsets_stats.read_text()
    ws.subsets_stats.write_text(stats.replace("humor,positive,Personal,8,4,12", "humor,positive,Personal,9,4,13"))
    rebuilt = build_report(_config(), ws)
    assert not rebuilt.skipped and "<td>13</td>" in ws.report_index.read_text()
    (ws.frontier_file).unlink()
    third = build_report(_config(), ws)
    assert not third.skipped and "frontier" in third.missing
    assert not any(p.name.startswith("frontier") for p in ws.report_figures.iterdir())  # stale figures removed


def test_missing_sections_say_so(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.subsets_stats.parent.mkdir(parents=True)
    ws.subsets_stats.write_text("value,valence,category,chosen_side,rejected_side,total,heldout,status,reason\n"
                                "empathy,positive,Social,11,5,16,0,selected,\n")
    result = build_report(_config(), ws)
    html = ws.report_index.read_text()
    assert "subsets" not in result.missing
    assert result.missing["crosstalk"] == "no crosstalk: evaluate/summary.json absent (run `valind evaluate`)"
    for section in ("refusal", "language", "qa", "models", "frontier", "training", "examples", "validation", "provenance"):
        assert section in result.missing
        assert str(escape(result.missing[section])) in html
    assert "no extractor validation: validate/scores.json absent" in html
    assert {p.name for p in result.tables} == {"subsets.csv"} and result.figures == []


def test_qa_skipped_single_model_config_and_edited_manifest(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", frontier=False, validation=False, qa=False)
    ws.manifest.write_text(ws.manifest.read_text().replace("blake2b:1234", "blake2b:9999"))
    result = build_report(validate_config({"train": {"models": MODELS[:1]}}), ws)
    assert result.missing["qa"].startswith("no QA scores: no local QA data (evaluate.qa_data) for the local tasks")
    assert "../shared/data/truthfulqa/TruthfulQA.csv" in result.missing["qa"]
    assert "frontier" in result.missing and "validation" in result.missing
    assert "models" not in result.missing  # two models evaluated, whatever the config lists
    html = ws.report_index.read_text()
    assert "Warning:" in html and "was changed since valind wrote it" in html and "blake2b:9999" in html


def test_page_in_a_browser(report: tuple[Workspace, Any], tmp_path: Path) -> None:
    from browser import chromium_page

    ws, _ = report
    with chromium_page(tmp_path / "profile") as (page, log):
        page.goto(ws.report_index.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, done: i.complete}))")
        assert images and all(i["done"] and i["w"] > 0 for i in images), images
        assert any(i["alt"].startswith("Crosstalk heatmap") for i in images)
        assert page.locator("#crosstalk img").count() >= len(MODELS)
        assert page.locator("table").count() >= 10
        assert page.locator("#subsets table tbody tr").count() == 4
        assert "alert(1)" in page.locator("#examples").inner_text()  # shown as text, not run
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert log.problems == []
    assert shot.stat().st_size > 10_000
    artefacts = os.environ.get("VALIND_TEST_ARTEFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artefacts) / "report.png")


def test_command_prints_where_the_report_is(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from valind.cli import app

    ws = Workspace(tmp_path / "ws")
    ws.subsets_stats.parent.mkdir(parents=True)
    ws.subsets_stats.write_text("value,valence,category,chosen_side,rejected_side,total,heldout,status,reason\n"
                                "empathy,positive,Social,11,5,16,0,selected,\n")
    runner = CliRunner()
    first = runner.invoke(app, ["report", "-w", str(ws.root)])
    assert first.exit_code == 0, first.output
    assert f"report: {ws.report_index}" in first.output.replace("\n", "")
    assert "no crosstalk: evaluate/summary.json absent" in first.output
    again = runner.invoke(app, ["report", "-w", str(ws.root), "--set", "evaluate.alpha=0.05"])
    assert again.exit_code == 0 and "up to date" in again.output
    missing = runner.invoke(app, ["report", "-w", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no workspace" in missing.output
