"""``valind validate export``: every annotator's latest answer per task, joined with its task.

One row per (annotator, task answered): annotator, kind, task_id, target, options (``|``-joined
in CSV), choice, letter, correct (choice == target; null for a failed answer), status, raw,
error, at, seconds. Answers to tasks no longer in ``validate/tasks.jsonl`` are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl

from valind.errors import ValindError
from valind.validate.answers import answer_files, read_answers
from valind.validate.tasks import read_tasks
from valind.workspace import Workspace, annotator_name, atomic_write_bytes

_SCHEMA = {"annotator": pl.String, "kind": pl.String, "task_id": pl.String, "target": pl.String, "options": pl.String,
           "choice": pl.String, "letter": pl.String, "correct": pl.Boolean, "status": pl.String, "raw": pl.String,
           "error": pl.String, "at": pl.String, "seconds": pl.Float64}


def export_rows(ws: Workspace, annotator: str | None = None) -> list[dict[str, Any]]:
    tasks = read_tasks(ws).by_id
    files = answer_files(ws)
    if annotator is not None:
        path = ws.validate_answers(annotator_name(annotator))
        if not path.is_file():
            raise ValindError(f"{path}: no answers of annotator {annotator!r}; annotators: {', '.join(files) or 'none'}")
        files = {annotator: path}
    rows = []
    for path in files.values():
        af = read_answers(path)
        for a in af.latest.values():
            task = tasks.get(a.task_id)
            if task is None:
                continue
            rows.append({"annotator": a.annotator, "kind": a.kind, "task_id": a.task_id, "target": task.target,
                         "options": task.options, "choice": a.choice, "letter": a.letter,
                         "correct": (a.choice == task.target) if a.ok else None, "status": a.status, "raw": a.raw,
                         "error": a.error, "at": a.at, "seconds": a.seconds})
    return rows


def export_answers(ws: Workspace, output: Path, annotator: str | None = None) -> int:
    """Write the rows to ``output`` (.csv or .jsonl, atomically); the number of rows."""
    rows = export_rows(ws, annotator)
    suffix = output.suffix.lower()
    if suffix == ".jsonl":
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    elif suffix == ".csv":
        flat = [{**r, "options": "|".join(r["options"])} for r in rows]
        data = pl.DataFrame(flat, schema=_SCHEMA).write_csv().encode("utf-8")
    else:
        raise ValindError(f"{output}: export writes .csv or .jsonl")
    atomic_write_bytes(output, data)
    return len(rows)
