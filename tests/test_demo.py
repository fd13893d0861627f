"""The bundled demo data and the demo command (the README's first set-up command)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from valind.cli import app
from valind.config import load_config, demo_config_path
from valind.ingest import run_ingest
from valind.pipeline import workspace_status
from valind.workspace import Workspace, read_json


def test_demo_config_loads_with_packaged_data() -> None:
    cfg = load_config(demo_config_path())
    assert Path(cfg.ingest.sources[0].path).is_file()
    assert cfg.ingest.strict is True


def test_demo_data_is_clean_and_covers_values_on_one_side(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    result = run_ingest(load_config(demo_config_path()), ws)  # strict: any bad row raises
    rep = result.sources[0]
    assert 150 <= rep["pairs_kept"] <= 300 and rep["rows_rejected"] == 0 and rep["duplicates_within_source"] == 0
    metas = [orjson.loads(m) for m in pq.read_table(ws.ingest_file("demo"))["meta"].to_pylist()]
    per_value = Counter(m["value"] for m in metas)
    assert len(per_value) == 15 and min(per_value.values()) >= 10
    sides = Counter((m["value"], m["side"]) for m in metas)
    assert sides[("violence", "rejected")] > sides[("violence", "chosen")]  # harm is mostly dispreferred
    assert sides[("empathy", "chosen")] > sides[("empathy", "rejected")]


# The demo's real chain (embedded extractor, SmolLM2 training, generation, judges, QA) at a size a
# test can afford; bench-style timing of the full demo is a separate concern.
SMALL = ["--set", "train.max_steps=2", "--set", "train.snapshot_steps=[1]", "--set", "train.betas=[0.1]", "--set", "generate.max_prompts_per_suite=3", "--set", "generate.max_new_tokens=8",
         "--set", "evaluate.qa_limit=2", "--set", "evaluate.n_boot=100"]


@pytest.mark.slow
def test_demo_command_runs_and_reruns(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["demo", "-w", str(tmp_path / "demo"), *SMALL])
    assert first.exit_code == 0, first.output
    assert "workspace:" in first.output
    manifest = read_json(tmp_path / "demo" / "manifest.json")
    assert manifest["config"]["ingest"]["sources"][0]["name"] == "demo"
    assert set(manifest["stages"]) >= {"ingest", "subsets", "evaluate"} and any(s.startswith("extract/embedded-") for s in manifest["stages"])
    summary = read_json(tmp_path / "demo" / "evaluate" / "summary.json")
    assert len(summary["cells"]) == 5 and len(summary["crosstalk"]) == 2  # base + (empathy, humor) x (snapshot, final)
    for metrics in summary["cells"].values():  # the four axes, per model
        assert metrics["value_expression"]["empathy"]["n"] > 0
        assert metrics["refusal"]["n"] > 0 and metrics["over_refusal"]["n"] > 0
        assert metrics["anthropomorphic"]["n"] > 0 and metrics["validating"]["n"] > 0
    if (Path(__file__).resolve().parents[2] / "shared" / "data" / "truthfulqa").is_dir():
        assert set(summary["qa"]) == {label for label, m in summary["cells"].items() if not m["cell"]["snapshot"]}
    stats = (tmp_path / "demo" / "subsets" / "stats.csv").read_text()
    assert stats.count("selected") >= 2  # the demo has value subsets to train on
    # the frontier sweep: beta 0.1 x (the snapshot after 1 step, the final adapter after 2) per value
    frontier = pq.read_table(tmp_path / "demo" / "evaluate" / "frontier.parquet").to_pylist()
    assert sorted((r["value"], r["steps"]) for r in frontier) == [("empathy", 1), ("empathy", 2), ("humor", 1), ("humor", 2)]
    assert all(r["target_gain"] is not None and r["off_target_mean_abs"] is not None for r in frontier)
    assert any(r["pareto"] for r in frontier if r["value"] == "empathy")
    report = tmp_path / "demo" / "report" / "index.html"
    assert f"report: {report}" in first.output.replace("\n", "") and report.is_file()
    assert "frontier" in report.read_text().lower()

    second = runner.invoke(app, ["demo", "-w", str(tmp_path / "demo"), *SMALL]).output
    assert second.count("up to date") >= 5  # ingest, extract, subsets, generate, evaluate skipped; train cells done
    status = runner.invoke(app, ["status", "-w", str(tmp_path / "demo")])
    assert status.exit_code == 0 and "training cells: 2 done" in status.output
    assert {s.stage.value: s.state for s in workspace_status(Workspace(tmp_path / "demo")).stages} == {
        "ingest": "done", "extract": "done", "subsets": "done", "train": "done", "generate": "done", "evaluate": "done", "report": "done"}

    exported = runner.invoke(app, ["export", "-w", str(tmp_path / "demo")])
    assert exported.exit_code == 0, exported.output
    adapters = sorted(p.name for p in (tmp_path / "demo" / "export" / "adapters").iterdir())
    assert len(adapters) == 4 and any(a.endswith("-step1") for a in adapters)  # 2 values x (snapshot, final)
    card = (tmp_path / "demo" / "export" / "adapters" / adapters[0] / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "## Measured side effects" in card
    assert "expression:" in card and "refusal rate:" in card and not (tmp_path / "demo" / "export" / "adapters" / adapters[0] / "training_args.bin").exists()
