"""The ingest stage: every configured source -> ``ingest/<source>.parquet`` + ``ingest_report.json``.

Per source: read records, convert them with the source's adapter, apply the checks every
source shares, hash each pair, drop repeats (within the source and across earlier sources,
counted), and write the kept pairs in Parquet row groups. Lenient mode (default) counts each
rejected record by reason, with the first few examples (line or row, field, detail) in the
report; strict mode stops at the first one. A source whose rejected fraction exceeds
``ingest.max_reject_fraction`` fails the stage.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from valind.config import Config, IngestConfig, SourceConfig
from valind.errors import ConfigError, InputError, StageFailed
from valind.ingest.adapters import AUTO, adapter_class, adapter_for_hub_name, detect_adapter, make_adapter, source_name
from valind.ingest.adapters.base import Adapter, Built, Reason, Reject, Row
from valind.ingest.readers import InputSpec, RecordStream, fingerprint, open_records
from valind.schema import PAIR_SCHEMA, Pair, pair_id
from valind.workspace import Workspace, atomic_path, atomic_write_json, hash_json, read_json

STAGE = "ingest"
INGEST_VERSION = 1  # bump when a change to adapters or checks changes the output for the same input
EXAMPLES_PER_REASON = 5
_PROGRESS_EVERY = 4096

Progress = Callable[[str, int | None], Callable[[int], None]]  # (description, total) -> update(position)


@dataclass
class SourceReport:
    """What ingest did with one source; serialised into ingest_report.json."""

    name: str
    path: str
    adapter: str
    fingerprint: str
    output: str = ""
    rows_read: int = 0
    blank_lines: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pairs_built: int = 0
    duplicates_within_source: int = 0
    duplicates_across_sources: int = 0
    pairs_kept: int = 0
    status: str = "ok"

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def rejected_fraction(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["rejected"] = dict(sorted(self.rejected.items()))
        d["rows_rejected"] = self.rows_rejected
        d["rejected_fraction"] = round(self.rejected_fraction, 6)
        return d


@dataclass
class IngestResult:
    skipped: bool
    sources: list[dict[str, Any]]
    report_path: Path


def check_pair(pair: Pair, max_chars: int) -> tuple[Reason, str, str] | None:
    """The checks every source shares; (reason, field, detail) of the first failure, or None."""
    prompt, chosen, rejected, _ = pair
    if not prompt:
        return Reason.EMPTY_PROMPT, "prompt", "no prompt messages"
    if prompt[-1]["role"] != "user":
        return Reason.INVALID_VALUE, "prompt", "the last prompt message must be a user turn"
    if not chosen:
        return Reason.EMPTY_RESPONSE, "chosen", "empty response"
    if not rejected:
        return Reason.EMPTY_RESPONSE, "rejected", "empty response"
    if chosen == rejected:
        return Reason.IDENTICAL_RESPONSES, "rejected", "chosen and rejected are the same text"
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if len(text) > max_chars:
            return Reason.TEXT_TOO_LONG, name, f"{len(text):,} characters (max {max_chars:,})"
    if sum(len(m["content"]) for m in prompt) > max_chars:
        return Reason.TEXT_TOO_LONG, "prompt", f"prompt longer than {max_chars:,} characters"
    return None


def _spec(src: SourceConfig) -> InputSpec:
    return InputSpec(src.path, src.split, src.subset, src.data_dir, src.revision)


def stage_key(cfg: IngestConfig, fingerprints: dict[str, str]) -> str:
    return hash_json({"version": INGEST_VERSION, "config": cfg.model_dump(mode="json"), "inputs": fingerprints})


def run_ingest(config: Config, workspace: Workspace, progress: Progress | None = None) -> IngestResult:
    """Ingest every source of ``config.ingest``; skip when inputs and settings are unchanged."""
    cfg = config.ingest
    if not cfg.sources:
        raise ConfigError("ingest.sources is empty: give a source on the command line or in the config")
    fingerprints = {source_name(s): fingerprint(_spec(s)) for s in cfg.sources}
    key = stage_key(cfg, fingerprints)
    if workspace.stage_done(STAGE, key):
        return IngestResult(True, read_json(workspace.ingest_report)["sources"], workspace.ingest_report)

    workspace.clear_stage(STAGE)
    seen: dict[str, str] = {}  # pair_id -> the source that kept it
    reports: list[SourceReport] = []
    outputs: list[Path] = []
    try:
        for src in cfg.sources:
            report = _ingest_source(src, fingerprints[source_name(src)], cfg, workspace, seen, progress)
            reports.append(report)
            outputs.append(workspace.ingest_file(report.name))
            if report.status != "ok":
                raise StageFailed(_failure_message(report, cfg, workspace))
    finally:
        _write_report(workspace, reports)

    _remove_stale(workspace, outputs)
    summary = {"pairs_kept": sum(r.pairs_kept for r in reports), "rows_read": sum(r.rows_read for r in reports)}
    workspace.record_stage(STAGE, key, [*outputs, workspace.ingest_report], summary)
    workspace.update_manifest(config.model_dump(mode="json"), {f"ingest.{k}": v for k, v in fingerprints.items()}, STAGE)
    return IngestResult(False, [r.as_dict() for r in reports], workspace.ingest_report)


def _write_report(workspace: Workspace, reports: list[SourceReport]) -> None:
    atomic_write_json(workspace.ingest_report, {"ingest_version": INGEST_VERSION, "sources": [r.as_dict() for r in reports]})


def _remove_stale(workspace: Workspace, outputs: list[Path]) -> None:
    """Drop Parquet files of sources that are no longer configured, so later stages never read them."""
    for old in workspace.ingest_dir.glob("*.parquet"):
        if old not in outputs:
            old.unlink()


def _failure_message(report: SourceReport, cfg: IngestConfig, workspace: Workspace) -> str:
    if report.rows_read == 0:
        return f"source {report.name!r} ({report.path}): no records read"
    reasons = ", ".join(f"{k} {v}" for k, v in report.rejected.most_common())
    return (
        f"source {report.name!r} ({report.path}): {report.rows_rejected:,} of {report.rows_read:,} records rejected "
        f"({report.rejected_fraction:.1%}, max {cfg.max_reject_fraction:.1%}): {reasons}. "
        f"Examples in {workspace.ingest_report}; run with ingest.strict=true to stop at the first bad record, "
        "or raise ingest.max_reject_fraction."
    )


def _resolve_adapter(src: SourceConfig, stream: RecordStream, on_reject: Callable[[Reject], None]) -> tuple[type[Adapter], Iterator[Row | Reject]]:
    """The adapter class for a source; with ``auto``, from its Hub name or its first record."""
    rows: Iterator[Row | Reject] = stream.rows
    if src.adapter != AUTO:
        return adapter_class(src.adapter), rows
    known = adapter_for_hub_name(src.path)
    if known is not None:
        return known, rows
    head: list[Row | Reject] = []
    for item in rows:
        head.append(item)
        if type(item) is Row:
            return detect_adapter(item.record, f"{src.path}: {stream.label} {item.number}"), itertools.chain(head, rows)
    return adapter_class("generic"), iter(head)  # no valid record at all: rejects are still counted


def _ingest_source(
    src: SourceConfig,
    fp: str,
    cfg: IngestConfig,
    workspace: Workspace,
    seen: dict[str, str],
    progress: Progress | None,
) -> SourceReport:
    name = source_name(src)
    stream = open_records(_spec(src))
    where = src.path
    report = SourceReport(name=name, path=src.path, adapter="", fingerprint=fp)
    out_path = workspace.ingest_file(name)
    report.output = str(out_path.relative_to(workspace.root))

    def reject(r: Reject) -> None:
        if cfg.strict:
            raise InputError(r.detail, file=where, location=f"{stream.label} {r.number}", field=r.field, reason=str(r.reason))
        reason = r.reason.value
        report.rejected[reason] += r.rows
        examples = report.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append({stream.label: r.number, "field": r.field, "detail": r.detail})

    cls, rows = _resolve_adapter(src, stream, reject)
    report.adapter = cls.name
    adapter = make_adapter(cls, src.options, name)
    if src.limit:
        rows = itertools.islice(rows, src.limit)
    update = progress(f"{name} ({cls.name})", stream.total) if progress else None

    def records() -> Iterator[Row]:
        read = 0
        for item in rows:
            read += 1
            if update and read % _PROGRESS_EVERY == 0:
                update(stream.position())
            if type(item) is Reject:
                reject(item)
            else:
                yield item
        report.rows_read = read

    columns: dict[str, list[Any]] = {n: [] for n in PAIR_SCHEMA.names}
    id_col, prompt_col, chosen_col, rejected_col, meta_col = (
        columns["pair_id"], columns["prompt"], columns["chosen"], columns["rejected"], columns["meta"]
    )
    max_chars = cfg.max_text_chars
    dumps = orjson.dumps

    try:
        with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, PAIR_SCHEMA, compression="zstd") as writer:
            for out in adapter.convert(records()):
                if type(out) is Reject:
                    reject(out)
                    continue
                number, (prompt, chosen, rejected, meta) = out
                pair = Pair(prompt, chosen.strip(), rejected.strip(), meta)
                problem = check_pair(pair, max_chars)
                if problem is not None:
                    reject(Reject(number, *problem))
                    continue
                report.pairs_built += 1
                pid = pair_id(pair.prompt, pair.chosen, pair.rejected)
                first = seen.get(pid)
                if first is not None:
                    if first == name:
                        report.duplicates_within_source += 1
                    else:
                        report.duplicates_across_sources += 1
                    continue
                seen[pid] = name
                id_col.append(pid)
                prompt_col.append(pair.prompt)
                chosen_col.append(pair.chosen)
                rejected_col.append(pair.rejected)
                meta["row"] = number
                meta_col.append(dumps(meta).decode())
                if len(id_col) >= cfg.row_group_size:
                    _flush(writer, columns, name)
            _flush(writer, columns, name)
            if update:
                update(stream.total or stream.position())
            report.blank_lines = stream.blank_lines[0]
            report.pairs_kept = report.pairs_built - report.duplicates_within_source - report.duplicates_across_sources
            if report.rows_read == 0 or report.rejected_fraction > cfg.max_reject_fraction:
                report.status = "failed"
                raise _Discard
    except _Discard:
        pass  # the report says why; the output file is not put in place
    return report


class _Discard(Exception):
    """Leaves the atomic write without renaming the output into place."""


def _flush(writer: pq.ParquetWriter, columns: dict[str, list[Any]], source: str) -> None:
    n = len(columns["pair_id"])
    if not n:
        return
    columns["source"] = [source] * n
    writer.write_table(pa.table(columns, schema=PAIR_SCHEMA))
    for col in columns.values():
        col.clear()
