"""``valind score values``: the extractor over any JSONL of responses, outside a workspace.

Input line: ``{"response": str, "prompt": str | [{"role", "content"}, ...] (optional), ...}``.
Output line: the input object plus ``values`` (sorted names) and ``value_scores`` (object, when the
backend has scores). Lines keep their order. A line that is not a JSON object, lacks
``response`` or has a wrong type stops the run with its line number (default), or with
``lenient`` gets an ``error`` field instead; so does a response whose extraction failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from valind.cache import Cache
from valind.config import Config
from valind.errors import InputError
from valind.extract import make_extractor
from valind.extract.base import Item
from valind.extract.runner import run_extraction
from valind.extract.stage import vocabulary
from valind.ingest.adapters.base import RowRejected, as_messages
from valind.schema import Message, user
from valind.workspace import atomic_path

Progress = Callable[[str, int | None], Callable[[int], None]]


def parse_line(number: int, line: bytes) -> tuple[dict[str, Any], Item]:
    """The record and its Item, or InputError naming the line and field."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err}", location=f"line {number}", reason="malformed_json") from None
    if not isinstance(record, dict):
        raise InputError("expected a JSON object", location=f"line {number}", reason="not_an_object")
    response = record.get("response")
    if not isinstance(response, str):
        reason = "missing_field" if response is None else "wrong_type"
        raise InputError("expected a string", location=f"line {number}", field="response", reason=reason)
    raw_prompt = record.get("prompt")
    prompt: list[Message]
    if raw_prompt is None:
        prompt = []
    elif isinstance(raw_prompt, str):
        prompt = [user(raw_prompt)]
    else:
        try:
            prompt = as_messages(raw_prompt, "prompt")
        except RowRejected as r:
            raise InputError(r.detail, location=f"line {number}", field=r.field, reason=r.reason.value) from None
    return record, Item(prompt, response)


@dataclass
class ResponseLines:
    """A response JSONL file read for scoring: every line's record (a bad line in lenient mode becomes
    ``{"line": N, "error": ...}``), and for each record the index of its Item (None for a bad line)."""

    records: list[dict[str, Any]]
    slots: list[int | None]
    items: list[Item]
    numbers: list[int]  # the line number of each item


def read_response_lines(path: Path, lenient: bool) -> ResponseLines:
    if not path.is_file():
        raise InputError("no such file", file=str(path))
    lines = ResponseLines([], [], [], [])
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record, item = parse_line(number, line)
        except InputError as err:
            if not lenient:
                raise err.in_file(str(path)) from None
            lines.records.append({"line": number, "error": str(err)})
            lines.slots.append(None)
            continue
        lines.records.append(record)
        lines.slots.append(len(lines.items))
        lines.items.append(item)
        lines.numbers.append(number)
    return lines


def score_values_file(config: Config, input_path: Path, output_path: Path, *, lenient: bool,
                      progress: Progress | None = None) -> dict[str, int]:
    lines = read_response_lines(input_path, lenient)
    records, slots, items = lines.records, lines.slots, lines.items
    cfg = config.extract
    extractor = make_extractor(cfg, vocabulary(cfg), config.resolved_cache_dir())
    bar: list[Callable[[int], None]] = []

    def on_progress(done: int, total: int) -> None:
        if progress is not None:
            if not bar:
                bar.append(progress("score values", total))
            bar[0](done)

    with Cache(config.resolved_cache_dir() / "calls.sqlite") as cache:
        results, ids, stats = run_extraction(extractor, items, cache, cfg.batch_size, on_progress)
    errors = 0
    with atomic_path(output_path) as tmp, open(tmp, "wb") as f:
        for record, slot in zip(records, slots):
            if slot is not None:
                res = results[ids[slot]]
                if res.ok:
                    record["values"] = list(res.values)
                    if res.scores is not None:
                        record["value_scores"] = res.scores
                elif lenient:
                    record["error"] = f"extraction failed ({res.status.value}): {res.error}"
                else:
                    raise InputError(f"extraction failed ({res.status.value}): {res.error}", file=str(input_path),
                                     location=f"line {lines.numbers[slot]}", field="response")
            errors += "error" in record
            f.write(orjson.dumps(record) + b"\n")
    return {"lines": len(records), "reused": stats.reused, "errors": errors}
