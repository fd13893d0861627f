"""Precision and recall of an extractor against labelled responses.

Labelled file: JSONL with ``response``, optional ``prompt``, and ``values`` (the vocabulary
values a careful reader says the response actively expresses). For each value: precision =
correct / predicted, recall = correct / labelled, with 95% Wilson intervals; micro averages
pool the counts over all values. Reproduce the shipped figure with
``valind score quality`` (embedded extractor, ``data/labels/values_eval.jsonl``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from valind.cache import Cache
from valind.config import Config
from valind.errors import InputError
from valind.extract import make_extractor
from valind.extract.runner import run_extraction
from valind.extract.score import read_response_lines
from valind.extract.stage import vocabulary
from valind.stats import wilson

DEFAULT_EVAL = Path(__file__).resolve().parents[1] / "data" / "labels" / "values_eval.jsonl"


def evaluate_extractor(config: Config, labels_path: Path | None = None) -> dict[str, Any]:
    path = labels_path or DEFAULT_EVAL
    cfg = config.extract
    vocab = vocabulary(cfg)
    lines = read_response_lines(path, lenient=False)
    items, truth = lines.items, []
    for record, number in zip(lines.records, lines.numbers):
        labels = record.get("values")
        if not isinstance(labels, list) or not all(isinstance(v, str) and v in vocab.by_name for v in labels):
            raise InputError(f"must be a list of vocabulary values ({', '.join(vocab.names)})", file=str(path),
                             location=f"line {number}", field="values", reason="invalid_value")
        truth.append(set(labels))
    extractor = make_extractor(cfg, vocab, config.resolved_cache_dir())
    with Cache(config.resolved_cache_dir() / "calls.sqlite") as cache:
        results, ids, stats = run_extraction(extractor, items, cache, cfg.batch_size)
    predicted = [set(results[i].values) if results[i].ok else set() for i in ids]
    failed = sum(not results[i].ok for i in ids)
    per_value = {}
    totals = {"tp": 0, "pred": 0, "true": 0}
    for name in vocab.names:
        tp = sum(name in p and name in t for p, t in zip(predicted, truth))
        n_pred = sum(name in p for p in predicted)
        n_true = sum(name in t for t in truth)
        totals["tp"] += tp
        totals["pred"] += n_pred
        totals["true"] += n_true
        per_value[name] = {"precision": wilson(tp, n_pred)._asdict(), "recall": wilson(tp, n_true)._asdict()}
    return {
        "labels": str(path), "extractor": extractor.identity(), "responses": len(items), "failed": failed,
        "micro": {"precision": wilson(totals["tp"], totals["pred"])._asdict(), "recall": wilson(totals["tp"], totals["true"])._asdict()},
        "per_value": per_value,
        "method": "precision = correct / predicted, recall = correct / labelled, per value and pooled (micro); 95% Wilson intervals",
    }
