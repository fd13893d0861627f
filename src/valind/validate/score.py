"""Scores of extractor validation: precision per annotator and value, agreement between annotators.

Rules (``score_validation``):

- An annotator's answers: the latest line per task of ``validate/answers/<name>.jsonl``, for the
  tasks of the current ``validate/tasks.jsonl`` (answers to tasks no longer there are ignored and
  counted as ``stale``). A valid answer has status ``ok``; failed ones (``parse_error``,
  ``error``) are left out of n and counted as ``failed`` in ``scores.csv``.
- Precision: k = valid answers that pick the task's target value, n = valid answers; rate k / n
  with the 95% Wilson score interval (``valind.stats.wilson``); overall and per target value.
- Agreement, over the tasks every annotator answered validly (``n_items``), with two or more
  annotators (else ``fleiss_kappa``, ``union`` and ``intersection`` are null and n_items 0):
  Fleiss' kappa with the picked value as the category (``fleiss_kappa``); ``union``: tasks where
  at least one annotator picked the target; ``intersection``: tasks where all did (the study's
  union / intersection precision), each with its Wilson interval.
- Random baseline: 1/4 (one of four options picked at random).

``validate/scores.json`` (read by the report; keep the shape)::

    {"method": "...", "random_baseline": 0.25, "n_options": 4,
     "annotators": {"alice": {"kind": "human",
                              "overall": {"k": 31, "n": 40, "rate": 0.775, "lo": 0.625, "hi": 0.877},
                              "per_value": {"empathy": {"k": 4, "n": 5, "rate": 0.8, "lo": 0.376, "hi": 0.964}, ...}}},
     "agreement": {"n_items": 40, "fleiss_kappa": 0.61, "union": {...}, "intersection": {...}}}

``validate/scores.csv``: one row per annotator and scope (``overall`` or a value), plus the
``union`` and ``intersection`` rows (kind ``agreement``): annotator, kind, value, k, n, rate, lo,
hi, failed, unanswered, stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from valind.errors import ValindError
from valind.stats import wilson
from valind.validate.answers import AnswerFile, answer_files, read_answers
from valind.validate.tasks import LETTERS, N_OPTIONS, read_tasks
from valind.workspace import Workspace, atomic_write_json, atomic_write_text

RANDOM_BASELINE = 1 / N_OPTIONS
METHOD = (
    "1-of-4 extractor validation: each task shows a response from value v's subset and four values (v + 3 seeded "
    "distractors); precision = share of an annotator's valid answers (latest per task, status ok) that pick v, with "
    "95% Wilson score intervals; failed answers are left out of n (counted in scores.csv). Agreement over tasks every "
    "annotator answered validly: Fleiss' kappa with the picked value as category; union = at least one annotator "
    "picked v, intersection = all did. Random baseline 1/4."
)


def proportion(k: int, n: int) -> dict[str, Any]:
    """``{"k", "n", "rate", "lo", "hi"}``: k of n with the 95% Wilson interval (rate, lo, hi null when n = 0)."""
    p = wilson(k, n)
    return {"k": k, "n": n, "rate": p.rate, "lo": p.low, "hi": p.high}


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of an items x categories matrix of rating counts (every row sums to the same m >= 2).

    ``P_i = (sum_j n_ij^2 - m) / (m (m - 1))``, ``P = mean_i P_i``, ``p_j = sum_i n_ij / (N m)``,
    ``P_e = sum_j p_j^2``, ``kappa = (P - P_e) / (1 - P_e)``; None without items or when
    ``P_e = 1`` (every rating in one category: chance agreement is total). Example: two raters,
    rows ``[2, 0], [0, 2], [1, 1]``: P = 2/3, P_e = 1/2, kappa = 1/3.
    """
    rows = [list(r) for r in counts]
    if not rows:
        return None
    m = sum(rows[0])
    if m < 2 or any(sum(r) != m for r in rows):
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n_items = len(rows)
    p_bar = sum((sum(c * c for c in r) - m) / (m * (m - 1)) for r in rows) / n_items
    totals = [sum(col) for col in zip(*rows)]
    p_e = sum((t / (n_items * m)) ** 2 for t in totals)
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1 - p_e)


@dataclass
class ScoreResult:
    scores: dict[str, Any]  # what scores.json holds
    counts: dict[str, dict[str, int]]  # per annotator: answered, failed, unanswered, stale
    letters: dict[str, dict[str, int]]  # per annotator: how often each shown letter A-D was picked (position bias)
    tasks: int


def score_validation(ws: Workspace) -> ScoreResult:
    """Score every annotator's answers (rules in the module docstring); write scores.json and scores.csv."""
    taskset = read_tasks(ws)
    tasks = taskset.by_id
    files = answer_files(ws)
    if not files:
        raise ValindError(f"{ws.validate_answers_dir}: no answers yet; run `valind validate annotate` or `valind validate serve`")
    read: dict[str, AnswerFile] = {name: read_answers(path) for name, path in files.items()}
    annotators: dict[str, Any] = {}
    counts: dict[str, dict[str, int]] = {}
    valid: dict[str, dict[str, str]] = {}  # annotator -> task id -> picked value
    letters: dict[str, dict[str, int]] = {}  # annotator -> letter -> valid answers picking it (position bias)
    csv_rows: list[dict[str, Any]] = []
    for name, af in read.items():
        current = {tid: a for tid, a in af.latest.items() if tid in tasks}
        picks = {tid: a.choice for tid, a in current.items() if a.ok and a.choice is not None}
        bad = [tid for tid, v in picks.items() if v not in tasks[tid].options]
        if bad:
            raise ValindError(f"{files[name]}: answer to task {bad[0]} is not one of its options")
        valid[name] = picks
        failed = len(current) - len(picks)
        counts[name] = {"answered": len(picks), "failed": failed, "unanswered": len(tasks) - len(current),
                        "stale": len(af.latest) - len(current)}
        letters[name] = {letter: sum(1 for tid, v in picks.items() if tasks[tid].letter(v) == letter) for letter in LETTERS}
        hits: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        for tid, pick in picks.items():
            target = tasks[tid].target
            seen[target] += 1
            hits[target] += pick == target
        failed_by_value = Counter(tasks[tid].target for tid, a in current.items() if tid not in picks)
        per_value = {v: proportion(hits[v], seen[v]) for v in taskset.report["values"] if seen[v] or failed_by_value[v]}
        overall = proportion(sum(hits.values()), sum(seen.values()))
        annotators[name] = {"kind": af.kind, "overall": overall, "per_value": per_value}
        csv_rows.append({"annotator": name, "kind": af.kind, "value": "overall", **overall, **_extra(counts[name])})
        for v, p in per_value.items():
            csv_rows.append({"annotator": name, "kind": af.kind, "value": v, **p, "failed": failed_by_value[v],
                             "unanswered": None, "stale": None})

    agreement = _agreement(valid, tasks)
    for scope in ("union", "intersection"):
        if agreement[scope] is not None:
            csv_rows.append({"annotator": scope, "kind": "agreement", "value": "overall", **agreement[scope],
                             "failed": None, "unanswered": None, "stale": None})
    scores = {"method": METHOD, "random_baseline": RANDOM_BASELINE, "n_options": N_OPTIONS,
              "annotators": annotators, "agreement": agreement}
    atomic_write_json(ws.validate_scores, scores)
    atomic_write_text(ws.validate_scores_csv, _csv(csv_rows))
    return ScoreResult(scores, counts, letters, len(tasks))


def _extra(c: dict[str, int]) -> dict[str, int]:
    return {"failed": c["failed"], "unanswered": c["unanswered"], "stale": c["stale"]}


def _agreement(valid: dict[str, dict[str, str]], tasks: dict[str, Any]) -> dict[str, Any]:
    if len(valid) < 2:
        return {"n_items": 0, "fleiss_kappa": None, "union": None, "intersection": None}
    common = sorted(set.intersection(*(set(p) for p in valid.values())))
    categories = sorted({p[tid] for p in valid.values() for tid in common})
    matrix = [[sum(p[tid] == c for p in valid.values()) for c in categories] for tid in common]
    union = sum(any(p[tid] == tasks[tid].target for p in valid.values()) for tid in common)
    inter = sum(all(p[tid] == tasks[tid].target for p in valid.values()) for tid in common)
    return {"n_items": len(common), "fleiss_kappa": fleiss_kappa(matrix),
            "union": proportion(union, len(common)), "intersection": proportion(inter, len(common))}


_CSV_SCHEMA = {"annotator": pl.String, "kind": pl.String, "value": pl.String, "k": pl.Int64, "n": pl.Int64,
               "rate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "failed": pl.Int64, "unanswered": pl.Int64,
               "stale": pl.Int64}


def _csv(rows: list[dict[str, Any]]) -> str:
    return pl.DataFrame(rows, schema=_CSV_SCHEMA).write_csv()
