"""Judges: yes/no judgements about responses (refusal; anthropomorphic and validating language).

``make_judge(label, name)`` builds one by name (rules: offline default; llm; wildguard; fake);
``score_refusal_file`` / ``score_anthro_file`` apply judges to a JSONL file;
``validate_refusal`` / ``validate_anthro`` measure them against human labels
(``python -m valind.judges.validate``). See docs/judges.md.
"""

from __future__ import annotations

from valind.judges.base import BACKENDS, FakeJudge, Judge, Judgement, Label, make_judge
from valind.judges.score import run_judge, score_anthro_file, score_refusal_file

__all__ = ["BACKENDS", "FakeJudge", "Judge", "Judgement", "Label", "make_judge", "run_judge", "score_anthro_file",
           "score_refusal_file"]
