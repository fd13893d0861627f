"""The 1-of-4 tasks of extractor validation: one response of a value's subset, four values to choose from.

The study's check of its value extractor: an annotator sees a response from value v's subset and
picks which of four values (v and three distractors) it expresses; the extractor's precision is
how often the pick is v. ``build_tasks`` draws the tasks; the rule, exactly (``h(x)`` is
``xxh3_64`` of the UTF-8 string ``x``, and ``|`` stands for the separator ``"\\x1f"``):

1. Values: the selected values of the subsets stage (``subsets/subsets_report.json``,
   ``selected``), at least four.
2. Responses: in value v's subset (``subsets/<v>.parquet``) the ``chosen`` response is always the
   one that expresses v (the stage swaps pairs where v is on the rejected side). The pairs are
   ranked by ``h(seed | "response" | v | pair_id)`` and the first ``per_value`` are taken (all of
   them when the subset is smaller). The draw does not depend on row order, and a larger
   ``per_value`` keeps the smaller sample.
3. Distractors: the candidates are the selected values other than v; with ``exclude_found``
   (default) also minus every value the extractor found in that response
   (``extract/<extractor-id>/values.parquet``), so no distractor is a second right answer by the
   extractor's own account. Candidates are ranked by ``h(seed | "distractor" | v | pair_id | c)``
   and the first three taken. A response with fewer than three candidates left gets no task and
   is counted (``dropped_too_few_distractors``).
4. Options: v and the three distractors, ordered by ``h(seed | "option" | v | pair_id | o)``;
   they are shown as A-D (1-4) in that order.
5. Presentation order: all tasks, every value mixed, ordered by ``h(seed | "order" | task_id)``,
   so an annotator cannot guess the target from the tasks around it.

A task's id is ``hash_json([v, pair_id, options])[:16]``: it changes when what the annotator sees
changes, so an answer is always to the options it was given. Example line of ``validate/tasks.jsonl``::

    {"task_id": "9c1e0f3a5b7d2e41", "target": "empathy", "pair_id": "14fc6a27...", "source": "demo",
     "prompt": [{"role": "user", "content": "I can't sleep before exams."}],
     "response": "That sounds exhausting. ...", "options": ["humor", "empathy", "privacy", "fairness"],
     "found": ["empathy", "engagement"]}

``found`` (the extractor's values for the response) is kept for analysis; annotators never see it,
nor ``target``. ``validate/tasks_report.json`` records the seed, the settings, the rule, the
fingerprints of every file read and the hash of the task file; answers carry that hash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import xxhash

from valind.config import Config
from valind.errors import ValindError
from valind.extract.stage import vocabulary
from valind.workspace import (
    Workspace,
    atomic_write_bytes,
    atomic_write_json,
    hash_file,
    hash_json,
    read_json,
)

TASKS_VERSION = 1  # bump when a change here changes the tasks drawn for the same inputs and settings
N_OPTIONS = 4
LETTERS = "ABCD"
SEP = "\x1f"


@dataclass(frozen=True)
class Task:
    """One 1-of-4 question: which of ``options`` does ``response`` express? The answer that counts is ``target``."""

    task_id: str
    target: str
    pair_id: str
    source: str
    prompt: list[dict[str, str]]
    response: str
    options: list[str]
    found: list[str] = field(default_factory=list)

    def letter(self, value: str) -> str:
        return LETTERS[self.options.index(value)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskSet:
    """The tasks in presentation order, the value definitions shown with the options, and the build record."""

    tasks: list[Task]
    definitions: dict[str, str]
    report: dict[str, Any]

    @property
    def tasks_hash(self) -> str:
        return str(self.report["tasks_hash"])

    @property
    def by_id(self) -> dict[str, Task]:
        return {t.task_id: t for t in self.tasks}


@dataclass(frozen=True)
class BuildResult:
    skipped: bool
    tasks: TaskSet
    path: Path


def _h(*parts: str) -> int:
    return xxhash.xxh3_64_intdigest(SEP.join(parts).encode("utf-8"))


def draw_responses(pair_ids: Sequence[str], value: str, seed: int, n: int) -> list[str]:
    """Rule 2: the ``n`` pair ids with the smallest ``h(seed | "response" | value | pair_id)``."""
    return sorted(pair_ids, key=lambda p: (_h(str(seed), "response", value, p), p))[:n]


def draw_distractors(candidates: Sequence[str], value: str, pair_id: str, seed: int) -> list[str] | None:
    """Rule 3: three of ``candidates`` (already without v and, if asked, the found values); None if fewer than three."""
    if len(candidates) < N_OPTIONS - 1:
        return None
    ranked = sorted(candidates, key=lambda c: (_h(str(seed), "distractor", value, pair_id, c), c))
    return ranked[:N_OPTIONS - 1]


def order_options(options: Sequence[str], value: str, pair_id: str, seed: int) -> list[str]:
    """Rule 4: the four options in their shown order."""
    return sorted(options, key=lambda o: (_h(str(seed), "option", value, pair_id, o), o))


def task_id(value: str, pair_id: str, options: Sequence[str]) -> str:
    return hash_json([value, pair_id, list(options)])[:16]


# ---------------------------------------------------------------- inputs


@dataclass
class _Inputs:
    selected: list[str]
    extractor_id: str
    subset_files: dict[str, Path]
    values_path: Path
    pairs_path: Path
    fingerprints: dict[str, str]


def _locate(ws: Workspace) -> _Inputs:
    """The finished subsets stage's files and the extraction they were cut from."""
    record = ws.stage_record("subsets")
    intact = record is not None and all(
        (ws.root / rel).is_file() and (ws.root / rel).stat().st_size == size for rel, size in record.outputs.items()
    )
    if not (intact and ws.subsets_report.is_file()):
        raise ValindError(f"{ws.root}: no finished subsets stage (its record or files are missing or changed); "
                          f"run `valind subsets -w {ws.root}` first")
    report = read_json(ws.subsets_report)
    selected = list(report["selected"])
    if len(selected) < N_OPTIONS:
        raise ValindError(f"{ws.subsets_report}: {len(selected)} selected values; the 1-of-{N_OPTIONS} protocol needs at "
                          f"least {N_OPTIONS} (lower subsets.min_pairs or include more values)")
    ext_id = report["extractor_id"]
    files = {v: ws.root / report["files"][v]["train"] for v in selected}
    values_path, pairs_path = ws.values_file(ext_id), ws.extract_dir(ext_id) / "pairs.parquet"
    for path in (*files.values(), values_path, pairs_path):
        if not path.is_file():
            raise ValindError(f"{path} is missing; re-run `valind extract` and `valind subsets -w {ws.root}`")
    read = [*files.values(), values_path, pairs_path]
    return _Inputs(selected, ext_id, files, values_path, pairs_path,
                   {str(p.relative_to(ws.root)): hash_file(p) for p in read})


def _found_values(inputs: _Inputs) -> pl.DataFrame:
    """pair_id, found_chosen, found_rejected: the extractor's values of both responses of every pair."""
    values = pl.read_parquet(inputs.values_path, columns=["response_id", "values", "status"])
    pairs = pl.read_parquet(inputs.pairs_path, columns=["pair_id", "chosen_id", "rejected_id"])

    def side(name: str) -> pl.DataFrame:
        return values.select(pl.col("response_id").alias(f"{name}_id"), pl.col("values").alias(f"found_{name}"),
                             pl.col("status").alias(f"status_{name}"))

    return pairs.join(side("chosen"), on="chosen_id", how="left").join(side("rejected"), on="rejected_id", how="left")


# ---------------------------------------------------------------- building


def build_tasks(config: Config, ws: Workspace, per_value: int, seed: int, exclude_found: bool = True,
                force: bool = False) -> BuildResult:
    """Draw ``per_value`` tasks per selected value (the rule is in the module docstring) and write
    ``validate/tasks.jsonl`` + ``tasks_report.json``. Skipped when the same settings and inputs gave
    the file already. Replacing a different task set while answers exist would orphan those answers:
    that needs ``force``. ``config`` supplies the value vocabulary (definitions shown with the options)."""
    if per_value < 1:
        raise ValindError(f"per_value must be at least 1, got {per_value}")
    inputs = _locate(ws)
    vocab = vocabulary(config.extract)
    definitions = {v: vocab.by_name[v].definition if v in vocab.by_name else "" for v in inputs.selected}
    settings = {"per_value": per_value, "seed": seed, "exclude_found": exclude_found}
    key = hash_json({"version": TASKS_VERSION, "settings": settings, "inputs": inputs.fingerprints, "definitions": definitions})
    if ws.validate_tasks.is_file() and ws.validate_tasks_report.is_file():
        old = read_json(ws.validate_tasks_report)
        if old.get("key") == key and old.get("tasks_hash") == hash_file(ws.validate_tasks):
            return BuildResult(True, read_tasks(ws), ws.validate_tasks)
        answered = sorted(p.stem for p in ws.validate_answers_dir.glob("*.jsonl")) if ws.validate_answers_dir.is_dir() else []
        if answered and not force:
            raise ValindError(f"{ws.validate_dir} holds answers ({', '.join(answered)}) to tasks drawn with other settings or "
                              f"inputs; new tasks would orphan them. Move them away, or pass --force to draw anyway")

    found = _found_values(inputs)
    tasks: list[Task] = []
    drops: Counter[str] = Counter()
    available: dict[str, int] = {}
    for value in inputs.selected:
        subset = pl.read_parquet(inputs.subset_files[value], columns=["pair_id", "source", "prompt", "chosen", "flipped"])
        available[value] = subset.height
        picked = set(draw_responses(subset.get_column("pair_id").to_list(), value, seed, per_value))
        rows = subset.filter(pl.col("pair_id").is_in(picked)).join(found, on="pair_id", how="left")
        for row in rows.iter_rows(named=True):
            side = "rejected" if row["flipped"] else "chosen"  # the response expressing v, as it was extracted
            if row[f"status_{side}"] != "ok":
                raise ValindError(f"{inputs.values_path}: no successful extraction for a response of pair {row['pair_id']} "
                                  f"in subset {value!r}; re-run `valind extract` and `valind subsets`")
            extracted = list(row[f"found_{side}"] or [])
            skip = {value, *(extracted if exclude_found else [])}
            distractors = draw_distractors([c for c in inputs.selected if c not in skip], value, row["pair_id"], seed)
            if distractors is None:
                drops["too_few_distractors"] += 1
                continue
            options = order_options([value, *distractors], value, row["pair_id"], seed)
            tasks.append(Task(
                task_id=task_id(value, row["pair_id"], options), target=value, pair_id=row["pair_id"], source=row["source"],
                prompt=[{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
                response=row["chosen"][-1]["content"], options=options, found=sorted(extracted),
            ))
    tasks.sort(key=lambda t: (_h(str(seed), "order", t.task_id), t.task_id))

    data = b"".join(orjson.dumps(t.to_json()) + b"\n" for t in tasks)
    atomic_write_bytes(ws.validate_tasks, data)
    per_target = Counter(t.target for t in tasks)
    report = {
        "tasks_version": TASKS_VERSION, "key": key, "settings": settings, "n_options": N_OPTIONS,
        "rule": "valind.validate.tasks (module docstring): xxh3_64 ranks of seed|response|v|pair_id, "
                "seed|distractor|v|pair_id|c, seed|option|v|pair_id|o, seed|order|task_id",
        "extractor_id": inputs.extractor_id, "values": inputs.selected, "definitions": definitions,
        "tasks": len(tasks), "per_value": {v: per_target.get(v, 0) for v in inputs.selected},
        "available": available, "dropped": {f"dropped_{k}": n for k, n in sorted(drops.items())},
        "inputs": inputs.fingerprints, "tasks_hash": hash_file(ws.validate_tasks),
    }
    atomic_write_json(ws.validate_tasks_report, report)
    return BuildResult(False, TaskSet(tasks, definitions, report), ws.validate_tasks)


def read_tasks(ws: Workspace) -> TaskSet:
    """The workspace's tasks, checked against the hash their report recorded."""
    if not (ws.validate_tasks.is_file() and ws.validate_tasks_report.is_file()):
        raise ValindError(f"{ws.validate_dir}: no validation tasks yet; run `valind validate build -w {ws.root}` first")
    report = read_json(ws.validate_tasks_report)
    if report.get("tasks_hash") != hash_file(ws.validate_tasks):
        raise ValindError(f"{ws.validate_tasks} changed since it was built; run `valind validate build -w {ws.root}` again")
    tasks = []
    for n, line in enumerate(ws.validate_tasks.read_bytes().splitlines(), 1):
        try:
            tasks.append(Task(**orjson.loads(line)))
        except (orjson.JSONDecodeError, TypeError) as err:
            raise ValindError(f"{ws.validate_tasks}:{n}: not a task ({err}); rebuild with `valind validate build`") from None
    return TaskSet(tasks, dict(report["definitions"]), report)
