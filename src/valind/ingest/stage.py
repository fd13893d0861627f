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
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from valind import faults
from valind.config import Config, IngestConfig, SourceConfig
from valind.errors import ConfigError, InputError, StageFailed
from valind.ingest.adapters import AUTO, adapter_class, adapter_for_hub_name, detect_adapter, make_adapter, source_name
from valind.ingest.adapters.base import Adapter, Reason, Reject, Row
from valind.ingest.readers import InputSpec, RecordStream, fingerprint, open_records
from valind.schema import MESSAGE_TYPE, PAIR_SCHEMA, PROMPT_TYPE, Message, pair_id
from valind.workspace import Workspace, atomic_path, atomic_write_json, hash_json, read_json

STAGE = "ingest"
INGEST_VERSION = 1  # bump when a change to adapters or checks changes the output for the same input
EXAMPLES_PER_REASON = 5
_PROGRESS_EVERY = 4096
# Dictionary-encode only the columns that repeat (the source name, message roles); zstd level 1
# compresses text about as well as the default level at a fraction of the time.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1, "use_dictionary": ["source", "prompt.list.element.role"],
}

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


def check_pair(prompt: list[Message], chosen: str, rejected: str, max_chars: int) -> tuple[Reason, str, str] | None:
    """The checks every source shares; (reason, field, detail) of the first failure, or None."""
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
    if len(chosen) > max_chars:
        return Reason.TEXT_TOO_LONG, "chosen", f"{len(chosen):,} characters (max {max_chars:,})"
    if len(rejected) > max_chars:
        return Reason.TEXT_TOO_LONG, "rejected", f"{len(rejected):,} characters (max {max_chars:,})"
    if (len(prompt[0]["content"]) if len(prompt) == 1 else sum(len(m["content"]) for m in prompt)) > max_chars:
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


def _resolve_adapter(src: SourceConfig, stream: RecordStream) -> tuple[type[Adapter], Iterator[Row]]:
    """The adapter class for a source; with ``auto``, from its Hub name or its first record."""
    if src.adapter != AUTO:
        return adapter_class(src.adapter), stream.rows
    known = adapter_for_hub_name(src.path)
    if known is not None:
        return known, stream.rows
    first = next(stream.rows, None)
    if first is None:  # no valid record at all: the rejects are still counted
        return adapter_class("generic"), iter(())
    cls = detect_adapter(first.record, f"{src.path}: {stream.label} {first.number}")
    return cls, itertools.chain([first], stream.rows)


def _ingest_source(
    src: SourceConfig,
    fp: str,
    cfg: IngestConfig,
    workspace: Workspace,
    seen: dict[str, str],
    progress: Progress | None,
) -> SourceReport:
    name = source_name(src)
    report = SourceReport(name=name, path=src.path, adapter="", fingerprint=fp)
    out_path = workspace.ingest_file(name)
    report.output = str(out_path.relative_to(workspace.root))
    label = ["line"]

    def reject(r: Reject) -> None:
        if cfg.strict:
            raise InputError(r.detail, file=src.path, location=f"{label[0]} {r.number}", field=r.field, reason=str(r.reason))
        reason = r.reason.value
        report.rejected[reason] += r.rows
        examples = report.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append({label[0]: r.number, "field": r.field, "detail": r.detail})

    stream = open_records(_spec(src), reject, src.limit)
    label[0] = stream.label
    cls, rows = _resolve_adapter(src, stream)
    report.adapter = cls.name
    adapter = make_adapter(cls, src.options, name)
    update = progress(f"{name} ({cls.name})", stream.total) if progress else None
    max_chars, row_group_size, dumps = cfg.max_text_chars, cfg.row_group_size, orjson.dumps
    batch = _Batch(name)

    try:
        with atomic_path(out_path) as tmp, _BackgroundWriter(tmp) as writer:
            for n_out, out in enumerate(adapter.convert(rows), 1):
                if update and n_out % _PROGRESS_EVERY == 0:
                    update(stream.position())
                if type(out) is Reject:
                    reject(out)
                    continue
                number, (prompt, chosen, rejected, meta) = out
                chosen, rejected = chosen.strip(), rejected.strip()
                problem = check_pair(prompt, chosen, rejected, max_chars)
                if problem is not None:
                    reject(Reject(number, *problem))
                    continue
                report.pairs_built += 1
                pid = pair_id(prompt, chosen, rejected)
                first = seen.get(pid)
                if first is not None:
                    if first == name:
                        report.duplicates_within_source += 1
                    else:
                        report.duplicates_across_sources += 1
                    continue
                seen[pid] = name
                meta["row"] = number
                batch.add(pid, prompt, chosen, rejected, dumps(meta))
                if len(batch.ids) >= row_group_size:
                    writer.write(batch.take())
                    faults.point("ingest", name)  # the output is half written here
            writer.write(batch.take())
            if update:
                update(stream.total or stream.position())
            report.rows_read = stream.records_read
            report.blank_lines = stream.blank_lines
            report.pairs_kept = report.pairs_built - report.duplicates_within_source - report.duplicates_across_sources
            if report.rows_read == 0 or report.rejected_fraction > cfg.max_reject_fraction:
                report.status = "failed"
                raise _Discard
    except _Discard:
        pass  # the report says why; the output file is not put in place
    return report


class _BackgroundWriter:
    """A Parquet writer that compresses and writes each row group on a second thread.

    Arrow releases the GIL while it encodes and compresses, so the next batch is parsed
    meanwhile. At most one row group waits, which bounds memory to two row groups.
    """

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, PAIR_SCHEMA, **PARQUET_OPTIONS)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: Future[None] | None = None

    def write(self, table: pa.Table | None) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a write error here, in the stage's thread
        self._pending = self._pool.submit(self._writer.write_table, table) if table is not None else None

    def __enter__(self) -> _BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pending is not None:
                self._pending.result()
        finally:
            self._pool.shutdown(wait=True)
            self._writer.close()


class _Discard(Exception):
    """Leaves the atomic write without renaming the output into place."""


class _Batch:
    """Kept pairs waiting to be written as one Parquet row group, held as flat columns.

    The prompt column is built from flat role / content lists and list offsets, which Arrow turns
    into ``list<struct<role, content>>`` without converting a Python dict per message.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: list[str] = []
        self.offsets: list[int] = [0]
        self.roles: list[str] = []
        self.contents: list[str] = []
        self.chosen: list[str] = []
        self.rejected: list[str] = []
        self.meta: list[bytes] = []  # UTF-8 JSON; Arrow checks it while building the string column

    def add(self, pid: str, prompt: list[dict[str, str]], chosen: str, rejected: str, meta: bytes) -> None:
        self.ids.append(pid)
        for m in prompt:
            self.roles.append(m["role"])
            self.contents.append(m["content"])
        self.offsets.append(len(self.roles))
        self.chosen.append(chosen)
        self.rejected.append(rejected)
        self.meta.append(meta)

    def take(self) -> pa.Table | None:
        """The waiting pairs as an Arrow table (None when there are none), and start afresh."""
        n = len(self.ids)
        if not n:
            return None
        messages = pa.StructArray.from_arrays(
            [pa.array(self.roles, pa.string()), pa.array(self.contents, pa.string())], fields=list(MESSAGE_TYPE)
        )
        prompt = pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), messages, type=PROMPT_TYPE)
        columns = [pa.array(self.ids, pa.string()), pa.array([self.source] * n, pa.string()), prompt,
                   pa.array(self.chosen, pa.string()), pa.array(self.rejected, pa.string()), pa.array(self.meta, pa.string())]
        self.__init__(self.source)  # type: ignore[misc]
        return pa.Table.from_arrays(columns, schema=PAIR_SCHEMA)
