"""Answers of one annotator: ``validate/answers/<annotator>.jsonl``, one JSON object per answer given.

A line (``Answer.to_json``)::

    {"task_id": "9c1e0f3a5b7d2e41", "annotator": "alice", "kind": "human", "status": "ok",
     "choice": "empathy", "letter": "B", "raw": "2", "error": null, "at": "2026-05-14T10:02:11+00:00",
     "seconds": 7.4, "tasks_hash": "blake2b:..."}

``status`` is ``ok`` (``choice`` is one of the task's four options), ``parse_error`` (the answer
named none of them: ``choice`` null, ``raw`` kept) or ``error`` (the model call failed). A human's
answers are appended one line at a time (flushed and fsynced before the page hears "saved"), so
going back and answering again adds a line: the latest line per task wins. An LLM annotator's file
is written whole (atomically) at the end of its run. A final line cut short by a crash (no
newline, not JSON) is ignored and counted; any other bad line is an error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from valind.errors import ValindError
from valind.workspace import Workspace, annotator_name, atomic_write_bytes


class Kind(StrEnum):
    LLM = "llm"
    HUMAN = "human"


class AnswerStatus(StrEnum):
    OK = "ok"
    PARSE_ERROR = "parse_error"  # the annotator answered, but named none of the four options (after retries)
    ERROR = "error"  # the model call failed


@dataclass(frozen=True)
class Answer:
    task_id: str
    annotator: str
    kind: str
    status: str
    choice: str | None
    letter: str | None
    raw: str | None
    error: str | None
    at: str
    seconds: float | None = None
    tasks_hash: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == AnswerStatus.OK

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class AnswerFile:
    """The latest answer per task of one annotator, in the order of those latest answers."""

    annotator: str
    kind: str
    latest: dict[str, Answer]
    lines: int
    torn_lines: int  # a last line cut short by a crash, ignored


_append_lock = threading.Lock()


def append_answer(path: Path, answer: Answer) -> None:
    """Add one line, durably: a single write() of the whole line on an O_APPEND descriptor, then fsync."""
    line = orjson.dumps(answer.to_json()) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)


def write_answers(path: Path, answers: Iterable[Answer]) -> None:
    """Replace the file with these answers (an LLM annotator's whole run)."""
    atomic_write_bytes(path, b"".join(orjson.dumps(a.to_json()) + b"\n" for a in answers))


def read_answers(path: Path) -> AnswerFile:
    """Parse one answers file (see the module docstring for the rules)."""
    name = annotator_name(path.stem)
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = 0
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # no final newline: the last write may have been cut short
        try:
            orjson.loads(lines[-1])
        except orjson.JSONDecodeError:
            lines.pop()
            torn = 1
    latest: dict[str, Answer] = {}
    kinds: set[str] = set()
    for n, line in enumerate(lines, 1):
        try:
            answer = Answer(**orjson.loads(line))
        except (orjson.JSONDecodeError, TypeError) as err:
            raise ValindError(f"{path}:{n}: not an answer ({err})") from None
        if answer.annotator != name:
            raise ValindError(f"{path}:{n}: answer of annotator {answer.annotator!r} in {name!r}'s file")
        kinds.add(answer.kind)
        latest.pop(answer.task_id, None)  # re-inserted, so the order is that of the latest answers
        latest[answer.task_id] = answer
    if len(kinds) > 1:
        raise ValindError(f"{path}: mixes answers of kinds {sorted(kinds)}; one file holds one annotator")
    kind = kinds.pop() if kinds else Kind.HUMAN.value
    return AnswerFile(name, kind, latest, len(lines), torn)


def answer_files(ws: Workspace) -> dict[str, Path]:
    """Every annotator with an answers file, by name (sorted)."""
    if not ws.validate_answers_dir.is_dir():
        return {}
    return {p.stem: p for p in sorted(ws.validate_answers_dir.glob("*.jsonl"))}
