"""Judges over any JSONL of responses, outside a workspace: the ``valind score values`` contract.

Input line: ``{"response": str, "prompt": str | [{"role", "content"}, ...] (optional), ...}``.
Output line: the input object plus, per judgement ``<label>`` (``refusal``; or
``anthropomorphic`` and ``validating``), ``<label>`` (bool) and ``<label>_score`` (float in
[0, 1]). Lines keep their order; blank lines are skipped. A line that is not a JSON object,
lacks ``response`` or has a wrong type stops the run with an InputError naming the file, the
line and the field (default), or with ``lenient=True`` is written as
``{"line": N, "error": "..."}``; a response whose judgement failed stops the run the same way,
or with ``lenient`` keeps its fields and gets an ``error`` field instead of the judgement.

Example: ``{"prompt": "How do I pick a lock?", "response": "Sorry, I can't help with that."}``
-> ``{..., "refusal": true, "refusal_score": 0.7311}``.

With a ``cache``, each judge's successful judgements are stored under the judge's ``identity()``
and the item's content (namespace ``judge``), so a rerun only calls the judge for new or failed
items. The rule judges are fast enough not to need one; LLM judges do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from valind.batch import run_cached
from valind.cache import Cache
from valind.errors import InputError
from valind.extract.base import Item
from valind.extract.score import read_response_lines
from valind.judges.base import Judge, Judgement, Label
from valind.workspace import atomic_path

NAMESPACE = "judge"
Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class JudgeRun:
    """Judgements in item order, and what it took."""

    judgements: list[Judgement]
    reused: int  # unique items answered from the cache
    judged: int  # unique items sent to the judge


def run_judge(judge: Judge, items: Sequence[Item], cache: Cache | None = None, batch_size: int = 64,
              progress: Callable[[int], None] | None = None) -> JudgeRun:
    """Judge every item once per unique content, reusing and filling ``cache`` when given (valind.batch)."""
    run = run_cached(
        judge.judge, items, identity=judge.identity(), uses_prompt=judge.uses_prompt, namespace=NAMESPACE,
        cache=cache, batch_size=batch_size, encode=Judgement.to_json, decode=Judgement.from_json,
        ok=lambda j: j.ok, name=f"{judge.name} judge",
        progress=(lambda done, total: progress(done)) if progress is not None else None,
    )
    return JudgeRun(run.in_order(), run.reused, run.computed)


def score_refusal_file(judge: Judge, in_path: Path, out_path: Path, lenient: bool = False, *,
                       cache: Cache | None = None, batch_size: int = 64, progress: Progress | None = None) -> dict[str, int]:
    """Add ``refusal`` and ``refusal_score`` to each line of ``in_path``; write ``out_path`` atomically.

    Returns ``{"lines", "errors", "reused", "judged"}`` (``errors``: lines written with an error field).
    """
    return score_file({Label.REFUSAL: judge}, in_path, out_path, lenient, cache=cache, batch_size=batch_size, progress=progress)


def score_anthro_file(anthropomorphic: Judge, validating: Judge, in_path: Path, out_path: Path, lenient: bool = False, *,
                      cache: Cache | None = None, batch_size: int = 64, progress: Progress | None = None) -> dict[str, int]:
    """Add ``anthropomorphic``, ``validating``, ``anthropomorphic_score`` and ``validating_score``
    to each line of ``in_path``; write ``out_path`` atomically. Returns as score_refusal_file."""
    judges = {Label.ANTHROPOMORPHIC: anthropomorphic, Label.VALIDATING: validating}
    return score_file(judges, in_path, out_path, lenient, cache=cache, batch_size=batch_size, progress=progress)


def score_file(judges: Mapping[Label, Judge], in_path: Path, out_path: Path, lenient: bool = False, *,
               cache: Cache | None = None, batch_size: int = 64, progress: Progress | None = None) -> dict[str, int]:
    """The shared body: one output field pair per (label, judge); see the module docstring."""
    for label, judge in judges.items():
        if judge.label is not label:
            raise ValueError(f"the {label.value!r} field needs a {label.value} judge, got one for {judge.label.value!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    read = read_response_lines(in_path, lenient)
    records, slots, items, lines = read.records, read.slots, read.items, read.numbers

    runs: dict[Label, JudgeRun] = {}
    for label, judge in judges.items():
        tick = progress(f"score {label.value}", len(items)) if progress is not None else None
        runs[label] = run_judge(judge, items, cache, batch_size, tick)

    errors = 0
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        for record, slot in zip(records, slots):
            if slot is not None:
                failures = []
                for label, run in runs.items():
                    res = run.judgements[slot]
                    if res.ok:
                        record[label.value] = res.decision
                        record[f"{label.value}_score"] = res.score
                    else:
                        failures.append(f"{label.value} judge failed ({res.status.value}): {res.error}")
                if failures and not lenient:
                    raise InputError("; ".join(failures), file=str(in_path), location=f"line {lines[slot]}", field="response")
                if failures:
                    record["error"] = "; ".join(failures)
            errors += "error" in record
            f.write(orjson.dumps(record) + b"\n")
    return {"lines": len(records), "errors": errors, "reused": sum(r.reused for r in runs.values()),
            "judged": sum(r.judged for r in runs.values())}
