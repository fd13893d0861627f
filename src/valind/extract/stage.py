"""The extract stage: the values of every chosen and rejected response of the ingested pairs.

Outputs in ``extract/<extractor-id>/`` (the id is the backend name and a hash of the settings
that change its output, so two extractors' results sit side by side):

- ``values.parquet``: one row per unique response (unit): ``response_id``, ``values``
  (sorted list), ``scores`` (JSON object or null), ``raw``, ``status`` (ok / parse_error /
  error), ``error``, ``unmapped`` (open mode: names that matched no value);
- ``pairs.parquet``: ``pair_id``, ``source``, ``chosen_id``, ``rejected_id``;
- ``extract_report.json``: counts (responses, unique, reused from cache, computed, failed by
  status), per-value counts, the most frequent unmapped names, and the extractor identity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from valind.cache import Cache
from valind.config import Config, ExtractConfig
from valind.errors import StageFailed, ValindError
from valind.extract import make_extractor
from valind.extract.base import Item
from valind.extract.runner import run_extraction
from valind.values import Vocabulary, load_vocabulary
from valind.workspace import Workspace, atomic_path, atomic_write_json, hash_file, hash_json, read_json

STAGE = "extract"
VALUES_SCHEMA = pa.schema([
    ("response_id", pa.string()), ("values", pa.list_(pa.string())), ("scores", pa.string()), ("raw", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("unmapped", pa.list_(pa.string())),
])
PAIRS_SCHEMA = pa.schema([("pair_id", pa.string()), ("source", pa.string()), ("chosen_id", pa.string()), ("rejected_id", pa.string())])
# settings that do not change the output, so they stay out of the extractor id
_NOT_KEY = {"batch_size", "max_failure_fraction", "concurrency", "timeout_s", "request_retries", "max_retries",
            "api_key_env", "tensor_parallel_size", "gpu_memory_utilization"}

Progress = Callable[[str, int | None], Callable[[int], None]]


def extractor_id(cfg: ExtractConfig) -> str:
    """e.g. ``embedded-3fa2c1d0``: the backend and a hash of the settings that change its output."""
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_KEY}
    for key in ("vocabulary", "labels"):  # a file's content, not its path, decides the output
        if settings.get(key) and Path(settings[key]).is_file():
            settings[key] = hash_file(Path(settings[key]))
    return f"{cfg.extractor}-{hash_json(settings)[:8]}"


def vocabulary(cfg: ExtractConfig) -> Vocabulary:
    return load_vocabulary(cfg.vocabulary, cfg.taxonomy_level)


def ingest_outputs(ws: Workspace) -> list[Path]:
    record = ws.stage_record("ingest")
    if record is None:
        raise ValindError(f"{ws.root}: no ingested pairs yet; run `valind ingest` (or `valind run`) first")
    record = ws.require_stage("ingest", "run `valind ingest` (or `valind run`) again")  # a damaged file is never read
    return [ws.root / rel for rel in record.outputs if rel.endswith(".parquet")]


@dataclass
class ExtractResult:
    skipped: bool
    report: dict[str, Any]
    report_path: Path


def run_extract(config: Config, ws: Workspace, progress: Progress | None = None) -> ExtractResult:
    cfg = config.extract
    ext_id = extractor_id(cfg)
    out_dir = ws.extract_dir(ext_id)
    report_path = out_dir / "extract_report.json"
    inputs = {str(p.relative_to(ws.root)): hash_file(p) for p in ingest_outputs(ws)}
    key = hash_json({"extractor": ext_id, "inputs": inputs})
    stage = f"{STAGE}/{ext_id}"
    if ws.stage_done(stage, key):
        return ExtractResult(True, read_json(report_path), report_path)
    ws.clear_stage(stage)  # until this run finishes, nothing downstream may trust the old outputs

    vocab = vocabulary(cfg)
    items, pair_rows = _collect(ws, inputs)
    extractor = make_extractor(cfg, vocab, config.resolved_cache_dir())
    bar: list[Callable[[int], None]] = []

    def on_progress(done: int, total: int) -> None:
        if progress is not None:
            if not bar:
                bar.append(progress(f"extract ({ext_id})", total))
            bar[0](done)

    with Cache(config.resolved_cache_dir() / "calls.sqlite") as cache:
        results, ids, stats = run_extraction(extractor, items, cache, cfg.batch_size, on_progress)

    per_value: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    rows: dict[str, list[Any]] = {n: [] for n in VALUES_SCHEMA.names}
    for uid, res in results.items():
        per_value.update(res.values)
        unmapped.update(res.unmapped)
        for name, value in zip(VALUES_SCHEMA.names, (uid, list(res.values), orjson.dumps(res.scores).decode() if res.scores else None,
                                                        res.raw, res.status.value, res.error, list(res.unmapped))):
            rows[name].append(value)
    failed = sum(stats.failed.values())
    report = {
        "extractor_id": ext_id, "identity": extractor.identity(), "vocabulary": vocab.name, "responses": stats.items,
        "unique_responses": stats.unique, "reused_from_cache": stats.reused, "model_calls": stats.computed,
        "failed": stats.failed, "failed_fraction": round(failed / max(stats.unique, 1), 6),
        "per_value": dict(sorted(per_value.items(), key=lambda kv: -kv[1])),
        "unmapped_total": sum(unmapped.values()), "unmapped_top": dict(unmapped.most_common(20)),
        "inputs": inputs,
    }
    values_path, pairs_path = out_dir / "values.parquet", out_dir / "pairs.parquet"
    _write(values_path, pa.table(rows, schema=VALUES_SCHEMA))
    pair_rows["chosen_id"] = ids[0::2]
    pair_rows["rejected_id"] = ids[1::2]
    _write(pairs_path, pa.table(pair_rows, schema=PAIRS_SCHEMA))
    atomic_write_json(report_path, report)
    if failed / max(stats.unique, 1) > cfg.max_failure_fraction:
        raise StageFailed(
            f"extract: {failed:,} of {stats.unique:,} responses failed ({', '.join(f'{k} {v}' for k, v in stats.failed.items())}; "
            f"max {cfg.max_failure_fraction:.1%}). Raw outputs are in {values_path} (status column); a re-run retries only these."
        )
    ws.record_stage(stage, key, [values_path, pairs_path, report_path], {"unique": stats.unique, "failed": failed})
    ws.update_manifest(config.model_dump(mode="json"), {f"extract.{ext_id}.vocabulary": vocab.fingerprint}, stage)
    return ExtractResult(False, report, report_path)


def _collect(ws: Workspace, inputs: dict[str, str]) -> tuple[list[Item], dict[str, list[str]]]:
    """Items in pair order (chosen, rejected, chosen, rejected, ...) and the pair columns."""
    items: list[Item] = []
    pairs: dict[str, list[str]] = {"pair_id": [], "source": []}
    for rel in sorted(inputs):
        table = pq.read_table(ws.root / rel, columns=["pair_id", "source", "prompt", "chosen", "rejected"])
        cols = table.to_pydict()
        pairs["pair_id"].extend(cols["pair_id"])
        pairs["source"].extend(cols["source"])
        for prompt, chosen, rejected in zip(cols["prompt"], cols["chosen"], cols["rejected"]):
            items.append(Item(prompt, chosen))
            items.append(Item(prompt, rejected))
    return items, pairs


def _write(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
