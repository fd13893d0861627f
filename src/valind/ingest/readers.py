"""Read records from a local file, a local dataset folder or a Hugging Face Hub dataset.

Files by extension (optionally ``.gz``): ``.jsonl`` / ``.ndjson`` (one JSON object a line),
``.json`` (an array of objects, or an object holding one such array), ``.csv`` (header row),
``.parquet``. A folder, or a name that is not a local path, goes through
``datasets.load_dataset`` (a Hub name needs network, or the local Hub cache with
``HF_HUB_OFFLINE=1``).

A reader yields a ``Row`` for each record and passes a ``Reject`` for each line that cannot be
a record (malformed JSON, invalid UTF-8, not an object) to a callback, so nothing is lost
without a count.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from valind.errors import InputError
from valind.ingest.adapters.base import Reason, Reject, Row
from valind.workspace import hash_file, hash_tree

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SURROGATE = re.compile("[\udc80-\udcff]")
_BATCH = 4096
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # a .gz cut short, with a bad header, or with a damaged deflate stream
_CSV_FIELD_LIMIT = 1 << 30  # characters; the csv module's default of 131,072 would stop the file at one long text


OnReject = Callable[[Reject], None]


@dataclass
class RecordStream:
    """Records of one input, with what a progress bar and an error message need.

    ``rows`` yields only parsed records; a line that cannot be a record goes to the
    ``on_reject`` callback given to ``open_records`` (and so is counted, never lost).
    ``counts`` holds [records seen, blank lines], filled while ``rows`` is consumed.
    """

    rows: Iterator[Row]
    label: str  # how a record is located in messages: "line", "row" or "item"
    total: int | None  # for progress: bytes of the file, or number of rows
    position: Callable[[], int]  # progress so far, in the unit of ``total``
    counts: list[int] = field(default_factory=lambda: [0, 0])

    @property
    def records_read(self) -> int:
        return self.counts[0]

    @property
    def blank_lines(self) -> int:
        return self.counts[1]


@dataclass(frozen=True)
class InputSpec:
    """Where a source's records come from (the reader-relevant part of its config)."""

    path: str
    split: str = "train"
    subset: str | None = None
    data_dir: str | None = None
    revision: str | None = None


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    kinds = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    if ext not in kinds:
        raise InputError(
            f"unsupported file type {ext or '(none)'!r}; use .jsonl, .json, .csv or .parquet (optionally .gz)", file=str(path)
        )
    return kinds[ext]


def locate(spec: InputSpec) -> tuple[str, Path | None]:
    """('file' | 'folder' | 'hub', local path or None); a missing local path is an error."""
    path = Path(spec.path).expanduser()
    if path.is_file():
        return "file", path
    if path.is_dir():
        return "folder", path
    looks_local = spec.path.startswith((".", "/", "~")) or path.suffix.lower() in {".jsonl", ".json", ".csv", ".parquet", ".gz", ".ndjson"}
    if looks_local or not _HUB_NAME.match(spec.path):
        raise InputError("no such file or folder (and not a Hub dataset name)", file=spec.path)
    return "hub", None


def fingerprint(spec: InputSpec) -> str:
    """Content fingerprint of a local input; for a Hub dataset, its name, revision and selection."""
    kind, path = locate(spec)
    if kind == "file":
        return hash_file(path)
    if kind == "folder":
        return hash_tree(path)
    pin = spec.revision or "unpinned"
    return f"hub:{spec.path}@{pin}:{spec.subset or '-'}:{spec.data_dir or '-'}:{spec.split}"


def open_records(spec: InputSpec, on_reject: OnReject, limit: int | None = None) -> RecordStream:
    """Open an input; read at most ``limit`` records (lines, for line-based files)."""
    kind, path = locate(spec)
    if kind == "file":
        return {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}[_kind(path)](path, on_reject, limit)
    return _dataset(spec, on_reject, limit)


def _open_binary(path: Path) -> tuple[io.BufferedIOBase, Any]:
    """(the stream to read, the raw file whose position tracks progress through the bytes on disk)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the generator that reads it
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=raw), raw
    return raw, raw


def _jsonl(path: Path, on_reject: OnReject, limit: int | None) -> RecordStream:
    stream, raw = _open_binary(path)
    counts = [0, 0]

    def rows() -> Iterator[Row]:
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        number = 0
        with stream, raw:
            try:
                for number, line in enumerate(islice(stream, limit), 1):
                    try:
                        record = loads(line)
                    except decode_error as err:
                        if not line.strip():
                            counts[1] += 1
                            continue
                        on_reject(_bad_line(number, line, err))
                        continue
                    if type(record) is dict:
                        yield Row(number, record)
                    else:
                        on_reject(Reject(number, Reason.NOT_AN_OBJECT, None, f"expected a JSON object, got {type(record).__name__}"))
            except _GZIP_ERRORS as err:  # truncated or corrupt .gz
                raise InputError(f"cannot read the file: {err}", file=str(path)) from None
            finally:
                counts[0] = number - counts[1]

    return RecordStream(rows(), "line", path.stat().st_size, raw.tell, counts)


def _bad_line(number: int, line: bytes, err: Exception) -> Reject:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as u:
        return Reject(number, Reason.INVALID_UTF8, None, f"invalid UTF-8 at byte {u.start}")
    return Reject(number, Reason.MALFORMED_JSON, None, f"not valid JSON: {err}")


def _json(path: Path, on_reject: OnReject, limit: int | None) -> RecordStream:
    stream, _ = _open_binary(path)
    with stream:
        try:
            data = stream.read()
        except _GZIP_ERRORS as err:  # truncated or corrupt .gz
            raise InputError(f"cannot read the file: {err}", file=str(path)) from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err}", file=str(path)) from None
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError("expected an array of records, or an object holding exactly one array", file=str(path))
        doc = lists[0]
    if not isinstance(doc, list):
        raise InputError(f"expected an array of records, got {type(doc).__name__}", file=str(path))
    counts = [0, 0]

    def rows() -> Iterator[Row]:
        for number, record in enumerate(islice(doc, limit), 1):
            counts[0] = number
            if type(record) is dict:
                yield Row(number, record)
            else:
                on_reject(Reject(number, Reason.NOT_AN_OBJECT, None, f"expected a JSON object, got {type(record).__name__}"))

    return RecordStream(rows(), "item", len(doc), lambda: counts[0], counts)


def _csv(path: Path, on_reject: OnReject, limit: int | None) -> RecordStream:
    stream, raw = _open_binary(path)
    # surrogateescape keeps invalid bytes as lone surrogates, so one bad row is rejected, not the file
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")

    counts = [0, 0]

    def rows() -> Iterator[Row]:
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))  # long texts are checked by max_text_chars
        with text, raw:
            reader = csv.DictReader(text)
            try:
                yield from _csv_rows(reader, limit, counts, on_reject)
            except csv.Error as err:  # e.g. a field past the limit; the row number is where the reader stopped
                raise InputError(f"not readable as CSV: {err}", file=str(path), location=f"row {counts[0] + 1}") from None
            except _GZIP_ERRORS as err:  # truncated or corrupt .gz
                raise InputError(f"cannot read the file: {err}", file=str(path)) from None

    return RecordStream(rows(), "row", path.stat().st_size, raw.tell, counts)


def _csv_rows(reader: csv.DictReader[str], limit: int | None, counts: list[int], on_reject: OnReject) -> Iterator[Row]:
    for number, record in enumerate(islice(reader, limit), 1):
        counts[0] = number
        if None in record or None in record.values():
            width = len(reader.fieldnames or [])
            on_reject(Reject(number, Reason.MALFORMED_CSV, None, f"row does not have the header's {width} fields"))
            continue
        bad = next((k for k, v in record.items() if _SURROGATE.search(v)), None)
        if bad is not None:
            on_reject(Reject(number, Reason.INVALID_UTF8, bad, "invalid UTF-8 in this field"))
            continue
        yield Row(number, record)


def _parquet(path: Path, on_reject: OnReject, limit: int | None) -> RecordStream:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise InputError(f"not a readable Parquet file: {err}", file=str(path)) from None
    return _batched(_checked_batches(file, path), file.metadata.num_rows, limit)


def _checked_batches(file: Any, path: Path) -> Iterator[Any]:
    """The file's record batches; a damaged page (the footer was fine) is an InputError, not a pyarrow error."""
    batches = file.iter_batches(batch_size=_BATCH)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ... for a damaged page
            raise InputError(f"not a readable Parquet file (damaged data page): {type(err).__name__}: {err}", file=str(path)) from None
        yield batch


def _dataset(spec: InputSpec, on_reject: OnReject, limit: int | None) -> RecordStream:
    import datasets

    try:
        ds = datasets.load_dataset(
            spec.path, name=spec.subset, split=spec.split, data_dir=spec.data_dir, revision=spec.revision
        )
    except Exception as err:  # datasets raises many types (network, missing split, bad files)
        raise InputError(
            f"cannot load dataset (split {spec.split!r}): {type(err).__name__}: {err}. "
            "Without network, download it once or point 'path' at a local file.",
            file=spec.path,
        ) from err
    return _batched(ds.with_format("arrow").iter(batch_size=_BATCH), ds.num_rows, limit)


def _batched(batches: Any, total: int, limit: int | None) -> RecordStream:
    """Rows of Arrow record batches (Parquet, datasets); these always hold objects, so nothing is rejected here."""
    counts = [0, 0]

    def rows() -> Iterator[Row]:
        number = 0
        for batch in batches:
            for record in batch.to_pylist():
                number += 1
                if limit is not None and number > limit:
                    return
                counts[0] = number
                yield Row(number, record)

    return RecordStream(rows(), "row", total if limit is None else min(total, limit), lambda: counts[0], counts)
