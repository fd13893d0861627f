"""The induction-strength frontier: Pareto flags and the table read from an evaluate summary; snapshot settings."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from valind.metrics.frontier import frontier_rows, frontier_table, pareto_front
from valind.train.config import TrainConfig


def test_pareto_front() -> None:
    # (gain, cost): higher gain and lower cost are better
    points = [(0.5, 0.2), (0.4, 0.1), (0.3, 0.3), (0.5, 0.25), (None, 0.0), (0.6, None), (0.1, 0.1)]
    assert pareto_front(points) == [True, True, False, False, False, False, False]
    assert pareto_front([(0.2, 0.1), (0.2, 0.1)]) == [True, True]  # ties dominate nothing
    assert pareto_front([]) == []


def _cell(label: str, value: str | None, beta: float | None, steps: int | None, kind: str = "adapter") -> dict[str, Any]:
    run = f"dpo+system-seed0-beta{beta}" + ("" if steps in (None, 6) else f"-step{steps}")
    return {"cell": {"kind": kind, "base": "m", "value": value, "method": "dpo+system", "beta": beta, "steps": steps,
                     "label": label, "train_id": None if kind == "base" else f"m/{value}/{run}"}}


def _record(induced: str, expressed: str, change: float, significant: bool = False) -> dict[str, Any]:
    return {"induced": induced, "expressed": expressed, "change": change, "change_low": change - 0.1,
            "change_high": change + 0.1, "n": 16, "q": 0.5, "significant": significant}


def _summary() -> dict[str, Any]:
    cells = {"base--m": _cell("base--m", None, None, None, kind="base")}
    crosstalk: dict[str, Any] = {}
    refusal = []
    # empathy at two betas and two step counts: (gain, off-target changes, refusal change)
    settings = {(0.1, 3): (0.10, [0.0, 0.02], 0.00), (0.1, 6): (0.30, [0.10, -0.10], 0.05),
                (0.5, 3): (0.05, [0.05, 0.05], 0.01), (0.5, 6): (0.20, [0.02, 0.02], 0.10)}
    for (beta, steps), (gain, others, ref) in settings.items():
        label = f"m--empathy--b{beta}-s{steps}"
        cells[label] = _cell(label, "empathy", beta, steps)
        group = f"m | {cells[label]['cell']['train_id'].rsplit('/', 1)[-1]}"
        crosstalk[group] = {"cells": [_record("empathy", "empathy", gain, significant=gain > 0.25),
                                      _record("empathy", "humor", others[0], significant=abs(others[0]) > 0.05),
                                      _record("empathy", "honesty", others[1])]}
        refusal.append(_record(label, "refusal", ref))
    return {"cells": cells, "crosstalk": crosstalk, "judged_changes": {"refusal | m": {"cells": refusal}}}


def test_frontier_rows_from_a_summary() -> None:
    rows = {(r["beta"], r["steps"]): r for r in frontier_rows(_summary())}
    assert len(rows) == 4
    top = rows[(0.1, 6)]
    assert top["target_gain"] == pytest.approx(0.30) and top["target_gain_lo"] == pytest.approx(0.20)
    assert top["off_target_mean_abs"] == pytest.approx(0.10) and top["off_target_significant"] == 1
    assert top["target_significant"] and top["refusal_change"] == pytest.approx(0.05)
    assert top["anthro_change"] is None and not top["pareto_anthro"]  # no anthropomorphism judged: never optimal
    # gain vs off-target: (0.1,3) cheapest, (0.5,6) better gain at small cost, (0.1,6) most gain; (0.5,3) dominated
    assert {k: r["pareto"] for k, r in rows.items()} == {(0.1, 3): True, (0.1, 6): True, (0.5, 3): False, (0.5, 6): True}
    # gain vs |refusal change|: (0.5,6) has less gain than (0.1,6) and more refusal change
    assert {k: r["pareto_refusal"] for k, r in rows.items()} == {(0.1, 3): True, (0.1, 6): True, (0.5, 3): False, (0.5, 6): False}
    table = frontier_table(_summary())
    assert table.num_rows == 4 and table.schema.field("pareto").type == "bool"


def test_frontier_is_empty_without_induced_cells() -> None:
    assert frontier_rows({"cells": {"base--m": _cell("base--m", None, None, None, kind="base")}}) == []
    assert frontier_table({}).num_rows == 0


def test_snapshot_steps_are_checked() -> None:
    assert TrainConfig(max_steps=6, snapshot_steps=[2, 4]).key_settings()["snapshot_steps"] == [2, 4]
    assert "snapshot_steps" not in TrainConfig(max_steps=6).key_settings()  # older cells keep their keys
    for bad in ({"max_steps": 6, "snapshot_steps": [6]}, {"max_steps": 6, "snapshot_steps": [2, 2]},
                {"max_steps": None, "snapshot_steps": [2]}, {"max_steps": 6, "lora": False, "snapshot_steps": [2]}):
        with pytest.raises(ValidationError, match="snapshot_steps"):
            TrainConfig(**bad)
