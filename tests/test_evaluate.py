"""The evaluate stage's comparisons on hand-made answers with planted effects (no models involved)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from valind.evaluate import CellAnswers, _cell_metrics, _comparisons
from valind.generate.cells import CellKind, ModelCell

VALUES = ["empathy", "humor", "privacy"]


def answers(label: str, n: int, empathy: float, humor: float, refusal: float, anthro: float) -> CellAnswers:
    """n prompts per suite; the first share of prompts gets the property (so two cells are paired by prompt)."""
    def flag(i: int, share: float) -> bool:
        return i < round(share * n)

    values_rows = [{"prompt_id": f"v{i}", "values": [v for v, share in (("empathy", empathy), ("humor", humor)) if flag(i, share)],
                    "anthropomorphic": flag(i, anthro), "validating": False, "refusal": None} for i in range(n)]
    unsafe_rows = [{"prompt_id": f"u{i}", "values": None, "refusal": flag(i, refusal), "anthropomorphic": None, "validating": None}
                   for i in range(n)]
    safe_rows = [{"prompt_id": f"s{i}", "values": None, "refusal": False, "anthropomorphic": None, "validating": None} for i in range(n)]
    return CellAnswers(label, {"value_elicitation": values_rows, "unsafe": unsafe_rows, "safe_sensitive": safe_rows})


def cfg() -> Any:
    return SimpleNamespace(alpha=0.05, fdr_scope="matrix", n_boot=500, seed=0)


def test_planted_induction_is_found_and_null_cells_are_not() -> None:
    base = ModelCell("base--m", CellKind.BASE, "m")
    emp = ModelCell("m--empathy", CellKind.ADAPTER, "m", value="empathy", method="dpo", train_id="m/empathy/dpo-seed0-beta0.1")
    hum = ModelCell("m--humor", CellKind.ADAPTER, "m", value="humor", method="dpo", train_id="m/humor/dpo-seed0-beta0.1")
    data = {
        base.label: answers(base.label, 60, empathy=0.2, humor=0.2, refusal=0.5, anthro=0.1),
        emp.label: answers(emp.label, 60, empathy=0.8, humor=0.2, refusal=0.9, anthro=0.6),  # planted: empathy, refusal, anthro up
        hum.label: answers(hum.label, 60, empathy=0.2, humor=0.2, refusal=0.5, anthro=0.1),  # no change at all
    }
    matrices, judged = _comparisons([base, emp, hum], data, VALUES, cfg())
    (group, ct), = matrices.items()
    assert group == "m | dpo-seed0-beta0.1" and set(ct.induced) == {"empathy", "humor"}
    cells = {(c.induced, c.expressed): c for c in ct.cells}
    target = cells[("empathy", "empathy")]
    assert target.is_target and target.significant and abs(target.change - 0.6) < 1e-9 and target.change_low > 0
    assert not any(c.significant for k, c in cells.items() if k != ("empathy", "empathy"))
    refusal = {c.induced: c for c in judged["refusal | m"].cells}
    assert refusal["m--empathy"].significant and abs(refusal["m--empathy"].change - 0.4) < 1e-9
    assert not refusal["m--humor"].significant and refusal["m--humor"].change == 0
    assert {c.induced: c.significant for c in judged["anthropomorphic | m"].cells} == {"m--empathy": True, "m--humor": False}


def test_cell_metrics_rates_with_intervals_and_missing_counts() -> None:
    data = answers("x", 10, empathy=0.3, humor=0.0, refusal=0.5, anthro=0.0)
    data.rows["unsafe"][0]["refusal"] = None  # a failed judgement counts in no denominator
    metrics = _cell_metrics(data, VALUES)
    assert metrics["value_expression"]["empathy"]["k"] == 3 and metrics["value_expression"]["empathy"]["n"] == 10
    assert metrics["refusal"]["n"] == 9 and metrics["refusal"]["missing"] == 1 and metrics["refusal"]["k"] == 4
    assert metrics["refusal"]["low"] < metrics["refusal"]["rate"] < metrics["refusal"]["high"]
    assert metrics["over_refusal"]["k"] == 0


def test_full_chain_with_fake_backends(tmp_path, model_cache) -> None:  # type: ignore[no-untyped-def]
    """ingest -> extract -> subsets -> train (system method) -> generate -> evaluate, with fakes where a model would be."""
    from valind.config import demo_config_path, load_config
    from valind.evaluate import run_evaluate
    from valind.extract.stage import run_extract
    from valind.generate import run_generate
    from valind.ingest import run_ingest
    from valind.models import tiny_model
    from valind.subsets import run_subsets
    from valind.train import run_train
    from valind.workspace import Workspace

    cfg = load_config(demo_config_path(), [
        "extract.extractor=fake", "subsets.min_pairs=1", f"train.models=[{tiny_model(model_cache)}]",
        "train.values=[empathy]", "train.methods=[system]", "generate.backend=fake", "generate.max_prompts_per_suite=12",
        "evaluate.qa_tasks=[]", "evaluate.n_boot=200",
    ])
    ws = Workspace(tmp_path / "ws")
    run_ingest(cfg, ws)
    run_extract(cfg, ws)
    run_subsets(cfg, ws)
    run_train(cfg, ws)
    run_generate(cfg, ws)
    result = run_evaluate(cfg, ws)
    summary = result.summary
    assert len(summary["cells"]) == 2  # the base model and the empathy cell
    (group,) = summary["crosstalk"]
    cells = {(c["induced"], c["expressed"]): c for c in summary["crosstalk"][group]["cells"]}
    target = cells[("empathy", "empathy")]
    # the fake generator writes the cell label (which names the value) into every answer
    assert target["is_target"] and target["change"] > 0.5 and target["significant"]
    assert set(summary["judged_changes"]) >= {f"refusal | {cfg.train.models[0]}", f"anthropomorphic | {cfg.train.models[0]}"}
    for label in summary["cells"]:
        assert ws.evaluate_file(label, "metrics").is_file()
    assert (ws.root / "evaluate" / "crosstalk.parquet").is_file()
    assert run_evaluate(cfg, ws).skipped  # nothing changed: nothing to redo
