"""Extractor validation, the study's 1-of-4 protocol (docs/validation.md).

An annotator sees a response from value v's subset and four values (v and three distractors)
and picks the one it expresses; the extractor's precision is how often the pick is v.

- ``build_tasks(config, ws, per_value, seed, exclude_found=True)``: draw the tasks
  (``validate/tasks.jsonl``; the seeded rule is in ``valind.validate.tasks``);
- ``run_annotator(ws, annotator, name)`` with an ``LLMAnnotator`` (any generation backend) or a
  ``FakeAnnotator``: answers in ``validate/answers/<name>.jsonl``;
- ``AnnotationServer(ws, name)``: the local page for human annotators (``valind validate serve``);
- ``score_validation(ws)``: precision per annotator and value with Wilson intervals, Fleiss'
  kappa, union / intersection precision (``validate/scores.json``, ``scores.csv``).
"""

from valind.validate.annotate import (
    AnnotateResult,
    FakeAnnotator,
    LLMAnnotator,
    parse_choice,
    run_annotator,
)
from valind.validate.score import ScoreResult, fleiss_kappa, score_validation
from valind.validate.tasks import BuildResult, Task, TaskSet, build_tasks, read_tasks

__all__ = [
    "AnnotateResult", "BuildResult", "FakeAnnotator", "LLMAnnotator", "ScoreResult", "Task", "TaskSet", "build_tasks",
    "fleiss_kappa", "parse_choice", "read_tasks", "run_annotator", "score_validation",
]
