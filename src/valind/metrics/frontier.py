"""The induction-strength frontier: how much of the target value one gets, against what else moves.

Every induced model cell (a value trained with some method, DPO beta and number of optimiser steps;
``train.betas`` x ``train.snapshot_steps`` make the sweep) becomes one point, read from the evaluate
summary (all changes are against the same un-induced base model, on the same prompts):

- ``target_gain``: change in the share of ``value_elicitation`` answers expressing the induced value
  (the crosstalk matrix's diagonal cell), with its paired bootstrap 95% CI (``target_gain_lo/hi``);
- ``off_target_mean_abs``: mean over the other values of the absolute change in their expression
  rate (the off-diagonal cells of the same row), the size of the crosstalk the induction pulls;
- ``refusal_change`` / ``anthro_change`` (+ CIs): change in the refusal rate on ``unsafe`` prompts and
  in the anthropomorphic-language rate on ``value_elicitation`` answers.

A setting is Pareto-optimal (``pareto``) when no other setting for the same value and base model has
at least its gain and at most its off-target change, one of them strictly; ``pareto_refusal`` and
``pareto_anthro`` use ``|refusal_change|`` and ``|anthro_change|`` as the cost. Points without a
cost (no judged answers) are never optimal. One row, e.g.::

    {"model": "smollm2-135m-instruct", "value": "empathy", "method": "dpo+system", "beta": 0.1, "steps": 6,
     "cell": "smollm2-135m-instruct--empathy--dpo+system-seed0-beta0.1", "n": 16, "target_gain": 0.19,
     "target_gain_lo": 0.0, "target_gain_hi": 0.38, "off_target_mean_abs": 0.04, "refusal_change": 0.06, ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

FRONTIER_SCHEMA = pa.schema([
    ("model", pa.string()), ("value", pa.string()), ("method", pa.string()), ("beta", pa.float64()), ("steps", pa.int64()),
    ("cell", pa.string()), ("n", pa.int64()),
    ("target_gain", pa.float64()), ("target_gain_lo", pa.float64()), ("target_gain_hi", pa.float64()),
    ("target_significant", pa.bool_()), ("off_target_mean_abs", pa.float64()), ("off_target_significant", pa.int64()),
    ("refusal_change", pa.float64()), ("refusal_change_lo", pa.float64()), ("refusal_change_hi", pa.float64()),
    ("anthro_change", pa.float64()), ("anthro_change_lo", pa.float64()), ("anthro_change_hi", pa.float64()),
    ("pareto", pa.bool_()), ("pareto_refusal", pa.bool_()), ("pareto_anthro", pa.bool_()),
])

METHOD = (
    "one point per induced model cell: target_gain = change (induced - base, same prompts) in the share of answers "
    "expressing the induced value, paired bootstrap 95% CI; off_target_mean_abs = mean |change| over the other values; "
    "refusal_change / anthro_change = change in the refusal rate on unsafe prompts / anthropomorphic-language rate; "
    "Pareto-optimal per (base model, value): no other setting has at least the gain and at most the cost (one strictly)"
)


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For (gain, cost) points: True where no other point has gain >= and cost <= with one strictly better.
    A point with a missing gain or cost is never on the front."""
    flags = []
    for i, (g, c) in enumerate(points):
        if g is None or c is None:
            flags.append(False)
            continue
        dominated = any(
            j != i and g2 is not None and c2 is not None and g2 >= g and c2 <= c and (g2 > g or c2 < c)
            for j, (g2, c2) in enumerate(points)
        )
        flags.append(not dominated)
    return flags


def _judged(summary: dict[str, Any], metric: str, base: str, label: str) -> dict[str, Any] | None:
    for record in (summary.get("judged_changes", {}).get(f"{metric} | {base}") or {}).get("cells", []):
        if record["induced"] == label:
            return record
    return None


def frontier_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The frontier table (see the module doc) from an evaluate ``summary.json`` document."""
    rows: list[dict[str, Any]] = []
    for label, metrics in summary.get("cells", {}).items():
        cell = metrics["cell"]
        if cell["kind"] == "base" or not cell.get("value") or not cell.get("train_id"):
            continue
        group = f"{cell['base']} | {cell['train_id'].rsplit('/', 1)[-1]}"
        records = [r for r in (summary.get("crosstalk", {}).get(group) or {}).get("cells", []) if r["induced"] == cell["value"]]
        target = next((r for r in records if r["expressed"] == cell["value"]), None)
        if target is None:  # the value is not in the vocabulary the answers were scored with
            continue
        others = [abs(c) for r in records if r["expressed"] != cell["value"] and (c := _finite(r["change"])) is not None]
        refusal, anthro = _judged(summary, "refusal", cell["base"], label), _judged(summary, "anthropomorphic", cell["base"], label)
        rows.append({
            "model": cell["base"], "value": cell["value"], "method": cell.get("method"), "beta": cell.get("beta"),
            "steps": cell.get("steps"), "cell": label, "n": target["n"],
            "target_gain": _finite(target["change"]), "target_gain_lo": _finite(target["change_low"]),
            "target_gain_hi": _finite(target["change_high"]), "target_significant": bool(target["significant"]),
            "off_target_mean_abs": sum(others) / len(others) if others else None,
            "off_target_significant": sum(bool(r["significant"]) for r in records if r["expressed"] != cell["value"]),
            **_change("refusal_change", refusal), **_change("anthro_change", anthro),
        })
    for model, value in dict.fromkeys((r["model"], r["value"]) for r in rows):
        mine = [r for r in rows if r["model"] == model and r["value"] == value]
        for flag, cost in (("pareto", "off_target_mean_abs"), ("pareto_refusal", "refusal_change"), ("pareto_anthro", "anthro_change")):
            points = [(r["target_gain"], None if r[cost] is None else abs(r[cost])) for r in mine]
            for r, on in zip(mine, pareto_front(points)):
                r[flag] = on
    return rows


def _change(name: str, record: dict[str, Any] | None) -> dict[str, float | None]:
    if record is None:
        return {name: None, f"{name}_lo": None, f"{name}_hi": None}
    return {name: _finite(record["change"]), f"{name}_lo": _finite(record["change_low"]), f"{name}_hi": _finite(record["change_high"])}


def frontier_table(summary: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist(frontier_rows(summary), schema=FRONTIER_SCHEMA)
