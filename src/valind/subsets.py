"""The subsets stage: one DPO training set per value, cut from the extracted value sets.

The rule (the study's). For a pair with V+ (the values of the chosen response) and V- (the
values of the rejected response), the pair belongs to the subset S_v of value v when v is in
exactly one of V+ and V- (XOR). When v is only in V-, chosen and rejected are swapped, so the
response that expresses v is always the preferred one, and ``flipped`` records it::

    V+ = {empathy, honesty}, V- = {honesty, humor}
    -> S_empathy: as it is (flipped false); S_humor: swapped (flipped true); honesty: neither.

A pair whose chosen or rejected extraction failed (status other than ``ok``, or no row for the
response at all) is in no subset and is counted in the report: a failure is never read as
"no values".

Selection (``config.subsets``). Every value of the vocabulary is a candidate; it is selected
unless one of these reasons applies (all that apply are reported, in this order):
``excluded`` (in ``exclude``), ``not_included`` (``include`` is set and lacks it), ``valence``
(not in ``valences``), ``category`` (not in ``categories``), ``too_few_pairs`` (total pairs
< ``min_pairs``). An ``include`` / ``exclude`` name outside the vocabulary is a ConfigError.

Outputs in ``subsets/`` (paths from ``Workspace``):

- ``<value>.parquet``: the training pairs of each selected value, sorted by ``pair_id``, in
  TRL's conversational preference form (loads with ``datasets.load_dataset("parquet", ...)``
  and goes straight into ``trl.DPOTrainer``)::

      {"prompt": [{"role": "user", "content": "My cat died."}],
       "chosen": [{"role": "assistant", "content": "I'm so sorry ..."}],
       "rejected": [{"role": "assistant", "content": "Cats die."}],
       "pair_id": "3f2a...", "source": "hh-rlhf", "flipped": false}

- ``<value>.heldout.parquet`` (only when ``heldout_fraction`` > 0): the held-out pairs, same
  columns. The split is by prompt: a prompt is held out when
  ``xxh3_64(key, seed=seed mod 2**64) < heldout_fraction * 2**64``, where ``key`` joins the
  prompt's messages as ``role + "\\x1f" + content`` with ``"\\x1e"`` between messages. So no
  prompt is in both files, the split does not depend on row order, and a prompt held out for
  one value is held out for every value.
- ``stats.csv``: one row per vocabulary value: value, valence, category, chosen_side (v only in
  V+), rejected_side (v only in V-: flipped), total, heldout, status (selected / dropped),
  reason (the reasons, ``;``-separated), then ``source:<name>`` pair counts per source.
- ``overlap.csv``: value_a, value_b, shared: how many pairs two selected subsets share.
- ``subsets_report.json``: pairs read, pairs excluded for failed extraction (by side and by
  status), per-value counts, statuses and files, the criteria used, the input fingerprints.

Same inputs and settings give byte-identical files. The stage is skipped when its settings
and the fingerprints of its input files are unchanged.

Public API (the CLI ``valind subsets`` calls these three):

- ``run_subsets(config: Config, ws: Workspace, progress: Progress | None = None) -> SubsetsResult``
- ``suggest(config: Config, ws: Workspace) -> list[Candidate]``: every vocabulary value with its
  counts and whether it meets the criteria (ignoring include / exclude), grouped by valence.
- ``format_table(rows: Sequence[Candidate], title: str | None = None) -> rich.table.Table``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from rich.table import Table

from valind.config import Config, SubsetsConfig
from valind.errors import ConfigError, UnknownNameError, ValindError
from valind.extract.stage import extractor_id, ingest_outputs, vocabulary
from valind.schema import MESSAGE_TYPE, PROMPT_TYPE
from valind.values import CATEGORIES, Valence, Vocabulary
from valind.workspace import Workspace, atomic_path, atomic_write_json, atomic_write_text, hash_file, hash_json, read_json

STAGE = "subsets"
SUBSETS_VERSION = 1  # bump when a change here changes the output for the same inputs and settings
OK = "ok"
MISSING = "missing"  # a pair's response has no row in values.parquet: counted as a failure
SUBSET_SCHEMA = pa.schema([
    ("prompt", PROMPT_TYPE), ("chosen", PROMPT_TYPE), ("rejected", PROMPT_TYPE),
    ("pair_id", pa.string()), ("source", pa.string()), ("flipped", pa.bool_()),
])
# Fixed writer settings, so the same rows give the same bytes. Dictionary-encode only the
# columns that repeat; zstd level 1 compresses text about as well as level 3, faster.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1, "row_group_size": 65_536,
    "use_dictionary": ["source", "prompt.list.element.role", "chosen.list.element.role", "rejected.list.element.role"],
}
_WRITER_OPTIONS = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
WRITERS = 2  # subset files written at once (Arrow encodes and compresses without the GIL)

Progress = Callable[[str, int | None], Callable[[int], None]]  # (description, total) -> update(position)


class Reason(StrEnum):
    """Why a value gets no subset, in the order they are checked and reported."""

    EXCLUDED = "excluded"
    NOT_INCLUDED = "not_included"
    VALENCE = "valence"
    CATEGORY = "category"
    TOO_FEW_PAIRS = "too_few_pairs"


@dataclass(frozen=True)
class Candidate:
    """One vocabulary value, the size of its subset, and whether it is selected.

    ``chosen_side``: pairs where the value is only in V+ (kept as they are); ``rejected_side``:
    pairs where it is only in V- (swapped, ``flipped``); ``heldout``: pairs of the total whose
    prompt is held out (0 without a held-out split); ``per_source``: total pairs per source.
    """

    value: str
    valence: str
    category: str
    chosen_side: int
    rejected_side: int
    heldout: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()

    @property
    def total(self) -> int:
        return self.chosen_side + self.rejected_side

    @property
    def selected(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        return "selected" if self.selected else "dropped"

    def as_dict(self) -> dict[str, Any]:
        return {"valence": self.valence, "category": self.category, "chosen_side": self.chosen_side,
                "rejected_side": self.rejected_side, "total": self.total, "heldout": self.heldout,
                "status": self.status, "reasons": [str(r) for r in self.reasons], "per_source": self.per_source}


@dataclass
class SubsetsResult:
    """What ``run_subsets`` did. ``train`` / ``heldout``: value -> file, selected values only."""

    skipped: bool
    stats: list[Candidate]
    train: dict[str, Path]
    heldout: dict[str, Path]
    stats_path: Path
    overlap_path: Path
    report_path: Path
    report: dict[str, Any]

    @property
    def selected(self) -> list[str]:
        return [c.value for c in self.stats if c.selected]


# ---------------------------------------------------------------- reading the inputs


@dataclass
class _Inputs:
    ext_id: str
    values_path: Path
    pairs_path: Path
    ingest: list[Path]
    fingerprints: dict[str, str]  # relative path -> content hash, of every file read


def _locate(config: Config, ws: Workspace) -> _Inputs:
    """The extract and ingest files this stage reads, checked to be finished and of the same pairs."""
    ingest = ingest_outputs(ws)  # says to run `valind ingest` when nothing is ingested yet
    ext_id = extractor_id(config.extract)
    stage = f"extract/{ext_id}"
    values_path, pairs_path = ws.values_file(ext_id), ws.extract_dir(ext_id) / "pairs.parquet"
    report_path = ws.extract_dir(ext_id) / "extract_report.json"
    run_it = f"run `valind extract -w {ws.root}` with the same extract settings first"
    record = ws.stage_record(stage)
    finished = record is not None and not ws.output_problems(record)  # sizes and checksums as written
    if not (finished and values_path.is_file() and pairs_path.is_file() and report_path.is_file()):
        raise ValindError(f"{ws.root}: no finished extraction for extractor {ext_id} (its {stage} record or files are "
                          f"missing or changed since); {run_it}")
    ingest_fps = {str(p.relative_to(ws.root)): hash_file(p) for p in ingest}
    if read_json(report_path).get("inputs") != ingest_fps:
        raise ValindError(f"{ws.extract_dir(ext_id)} was made from other ingested pairs than those now in {ws.ingest_dir}; {run_it}")
    fingerprints = {**ingest_fps, **{str(p.relative_to(ws.root)): hash_file(p) for p in (values_path, pairs_path)}}
    return _Inputs(ext_id, values_path, pairs_path, sorted(ingest), fingerprints)


@dataclass
class _Content:
    """The ingested pairs in file order (a pair's position is its ``row``), one Arrow array per
    column. Text columns use 64-bit offsets (large types): more than 2 GB of text fits."""

    pair_id: pa.Array
    source: pa.Array
    prompt: pa.Array
    chosen: pa.Array
    rejected: pa.Array

    def sources(self) -> list[str]:
        return sorted(pc.unique(self.source).to_pylist())


_LARGE_PROMPT = pa.large_list(pa.struct([("role", pa.large_string()), ("content", pa.large_string())]))
_CONTENT_TYPES = {"pair_id": pa.large_string(), "source": pa.large_string(), "prompt": _LARGE_PROMPT,
                  "chosen": pa.large_string(), "rejected": pa.large_string()}
_PAIR_ID = r"^[0-9a-f]{32}$"  # valind.schema.pair_id: XXH3-128 as 32 lower-case hex digits


def _read_content(inputs: _Inputs, text: bool) -> _Content:
    """The ingested pairs; the text columns (prompt, chosen, rejected) are empty unless ``text``."""
    names = list(_CONTENT_TYPES) if text else ["pair_id", "source"]
    # Polars reads these files several times faster than pq.read_table; one chunk per column
    # lets Arrow's ``take`` gather rows without searching chunks.
    table = pl.read_parquet(inputs.ingest, columns=names).rechunk().to_arrow()
    columns = {name: _one_array(table.column(name).cast(kind)) if name in names else pa.array([], kind)
               for name, kind in _CONTENT_TYPES.items()}
    return _Content(**columns)


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _read_pairs(inputs: _Inputs, content: _Content) -> pl.DataFrame:
    """One row per pair: pair_id, source, row (in ``content``), v_plus, v_minus, status_chosen, status_rejected."""
    values = pl.read_parquet(inputs.values_path, columns=["response_id", "values", "status"])
    pairs = pl.read_parquet(inputs.pairs_path, columns=["pair_id", "chosen_id", "rejected_id"])
    index = pl.DataFrame({"pair_id": content.pair_id, "source": content.source}).with_row_index("row")
    if pairs.get_column("pair_id").equals(index.get_column("pair_id")):  # the order extract writes: no join needed
        pairs = pairs.with_columns(index.get_column("source"), index.get_column("row"))
    else:
        pairs = pairs.join(index, on="pair_id", how="left")
    lost = pairs.get_column("row").null_count()
    if lost:
        raise ValindError(f"{inputs.pairs_path}: {lost:,} pairs are not in the ingested tables; re-run `valind extract`")
    if not pairs.get_column("pair_id").str.contains(_PAIR_ID).all():
        raise ValindError(f"{inputs.pairs_path}: pair ids must be 32 lower-case hex digits (valind.schema.pair_id); re-run `valind ingest`")

    def side(name: str, sign: str) -> pl.DataFrame:
        return values.rename({"response_id": f"{name}_id", "values": f"v_{sign}", "status": f"status_{name}"})

    joined = (
        pairs.join(side("chosen", "plus"), on="chosen_id", how="left")
        .join(side("rejected", "minus"), on="rejected_id", how="left")
        .drop("chosen_id", "rejected_id")
        .with_columns(pl.col("status_chosen", "status_rejected").fill_null(MISSING))
    )
    if joined.height != pairs.height:  # a response id on two rows would count its pairs twice
        raise ValindError(f"{inputs.values_path}: response ids are not unique; re-run `valind extract`")
    return joined


# ---------------------------------------------------------------- the rule


@dataclass
class _Members:
    """One row per (pair, value) the XOR rule keeps: pair_id, source, row, value, flipped; sorted
    by value (vocabulary order) and pair_id."""

    table: pl.DataFrame
    pairs_read: int
    failures: dict[str, Any]
    unknown_values: dict[str, int]


def _members(pairs: pl.DataFrame, names: Sequence[str]) -> _Members:
    """The XOR rule, per pair at once: V+ minus V- gives the values kept as they are, V- minus V+
    the values kept swapped (``flipped``); a value in both or in neither gives nothing. Pairs with
    a failed extraction are counted and left out; names outside the vocabulary are counted."""
    ok_c, ok_r = pl.col("status_chosen") == OK, pl.col("status_rejected") == OK
    counts = pairs.select(
        chosen_only=(~ok_c & ok_r).sum(), rejected_only=(ok_c & ~ok_r).sum(), both=(~ok_c & ~ok_r).sum()
    ).row(0, named=True)
    statuses = (
        pl.concat([pairs.select(status="status_chosen"), pairs.select(status="status_rejected")])
        .filter(pl.col("status") != OK).group_by("status").len().sort("status")
    )
    # Two 64-bit halves of the hex pair id sort exactly like the strings, several times faster.
    ok = pairs.filter(ok_c & ok_r).with_columns(
        id_hi=pl.col("pair_id").str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64),
        id_lo=pl.col("pair_id").str.slice(16, 16).str.to_integer(base=16, dtype=pl.UInt64),
    )

    def only(mine: str, other: str, flipped: bool) -> pl.DataFrame:
        return ok.select(
            "pair_id", "source", "row", "id_hi", "id_lo",
            value=pl.col(mine).list.set_difference(pl.col(other)), flipped=pl.lit(flipped),
        ).explode("value")

    kept = pl.concat([only("v_plus", "v_minus", False), only("v_minus", "v_plus", True)]).drop_nulls("value")
    known = pl.col("value").is_in(list(names))
    unknown = kept.filter(~known).group_by("value").len().sort("value")
    table = (kept.filter(known).with_columns(pl.col("value").cast(pl.Enum(list(names))))
             .sort("value", "id_hi", "id_lo").drop("id_hi", "id_lo"))
    failed = counts["chosen_only"] + counts["rejected_only"] + counts["both"]
    return _Members(
        table=table,
        pairs_read=pairs.height,
        failures={"pairs": failed, "chosen_failed_only": counts["chosen_only"], "rejected_failed_only": counts["rejected_only"],
                  "both_failed": counts["both"], "responses_by_status": dict(statuses.iter_rows())},
        unknown_values=dict(unknown.iter_rows()),
    )


def _prompt_keys(prompts: pl.Series) -> pl.Series:
    """Each prompt as one string: ``role \\x1f content`` per message, ``\\x1e`` between messages."""
    message = pl.concat_str([pl.element().struct.field("role"), pl.element().struct.field("content")], separator="\x1f")
    return prompts.list.eval(message).list.join("\x1e")


def _heldout_mask(content: _Content, cfg: SubsetsConfig) -> pl.Series:
    """Per row of ``content``: whether its prompt is held out (the rule is in the module docstring)."""
    if cfg.heldout_fraction == 0:
        return pl.Series("heldout", np.zeros(len(content.pair_id), dtype=bool))
    keys = _prompt_keys(pl.Series(content.prompt)).cast(pl.Binary).to_list()
    seed, digest = cfg.seed & 0xFFFF_FFFF_FFFF_FFFF, xxhash.xxh3_64_intdigest
    hashes = np.fromiter((digest(k, seed) for k in keys), dtype=np.uint64, count=len(keys))
    return pl.Series("heldout", hashes < np.uint64(int(cfg.heldout_fraction * 2**64)))


# ---------------------------------------------------------------- selection


def _check_criteria(cfg: SubsetsConfig, vocab: Vocabulary) -> None:
    for setting in ("include", "exclude"):
        for name in getattr(cfg, setting):
            if name not in vocab.by_name:
                raise UnknownNameError(f"value in subsets.{setting} (vocabulary {vocab.name!r})", name, vocab.names)
    bad = [c for c in cfg.categories if c not in CATEGORIES]
    if bad:
        raise ConfigError(f"subsets.categories: unknown category {bad[0]!r}; valid: {', '.join(CATEGORIES)}")


def _reasons(name: str, valence: str, category: str, total: int, cfg: SubsetsConfig, lists: bool) -> tuple[Reason, ...]:
    checks = [
        (Reason.EXCLUDED, lists and name in cfg.exclude),
        (Reason.NOT_INCLUDED, lists and bool(cfg.include) and name not in cfg.include),
        (Reason.VALENCE, valence not in cfg.valences),
        (Reason.CATEGORY, category not in cfg.categories),
        (Reason.TOO_FEW_PAIRS, total < cfg.min_pairs),
    ]
    return tuple(reason for reason, applies in checks if applies)


def _candidates(members: pl.DataFrame, vocab: Vocabulary, sources: list[str], cfg: SubsetsConfig, lists: bool) -> list[Candidate]:
    """Counts of every vocabulary value (zeros included), with its selection reasons."""
    sides = {v: (c, r, h) for v, c, r, h in members.group_by("value").agg(
        chosen=(~pl.col("flipped")).sum(), rejected=pl.col("flipped").sum(), heldout=pl.col("heldout").sum()
    ).iter_rows()}
    per_source: dict[str, dict[str, int]] = {}
    for v, s, n in members.group_by("value", "source").len().iter_rows():
        per_source.setdefault(v, {})[s] = n
    out = []
    for value in vocab.values:
        chosen, rejected, heldout = sides.get(value.name, (0, 0, 0))
        out.append(Candidate(
            value=value.name, valence=str(value.valence), category=value.category, chosen_side=chosen,
            rejected_side=rejected, heldout=heldout, per_source={s: per_source.get(value.name, {}).get(s, 0) for s in sources},
            reasons=_reasons(value.name, str(value.valence), value.category, chosen + rejected, cfg, lists),
        ))
    return out


_VALENCE_ORDER = {Valence.POSITIVE: 0, Valence.NEGATIVE: 1, Valence.NEUTRAL: 2}


def _suggestion_order(c: Candidate) -> tuple[Any, ...]:
    return (_VALENCE_ORDER[Valence(c.valence)], not c.selected, -c.total, c.value)


# ---------------------------------------------------------------- the public API


def suggest(config: Config, ws: Workspace) -> list[Candidate]:
    """Every vocabulary value with its subset counts and whether it meets min_pairs, valences and
    categories (include / exclude are ignored, so ``selected`` here means "would be selected"),
    grouped positive, negative, neutral so a balanced set is easy to pick; within a group, the
    values that meet the criteria come first, largest first. Reads the same inputs as
    ``run_subsets`` (no text) and writes nothing."""
    vocab = vocabulary(config.extract)
    _check_criteria(config.subsets, vocab)
    inputs = _locate(config, ws)
    content = _read_content(inputs, text=False)
    members = _members(_read_pairs(inputs, content), vocab.names).table.with_columns(heldout=pl.lit(False))
    rows = _candidates(members, vocab, content.sources(), config.subsets, lists=False)
    return sorted(rows, key=_suggestion_order)


def run_subsets(config: Config, ws: Workspace, progress: Progress | None = None) -> SubsetsResult:
    """Cut, select and write the value subsets; skipped when inputs and settings are unchanged."""
    cfg = config.subsets
    vocab = vocabulary(config.extract)
    _check_criteria(cfg, vocab)
    inputs = _locate(config, ws)
    key = hash_json({"version": SUBSETS_VERSION, "settings": cfg.model_dump(mode="json"), "extractor": inputs.ext_id,
                     "vocabulary": vocab.fingerprint, "inputs": inputs.fingerprints})
    report_path, stats_path, overlap_path = ws.subsets_report, ws.subsets_stats, ws.subsets_overlap
    if ws.stage_done(STAGE, key):
        return _result_from_report(ws, vocab, read_json(report_path), stats_path, overlap_path, report_path)

    ws.clear_stage(STAGE)
    content = _read_content(inputs, text=True)
    found = _members(_read_pairs(inputs, content), vocab.names)
    members = found.table.with_columns(heldout=_heldout_mask(content, cfg).gather(found.table.get_column("row")))
    sources = content.sources()
    stats = _candidates(members, vocab, sources, cfg, lists=True)
    selected = [c.value for c in stats if c.selected]

    train, heldout = _write_subsets(ws, content, members, selected, cfg.heldout_fraction > 0, progress)
    atomic_write_text(stats_path, _stats_csv(stats, sources))
    atomic_write_text(overlap_path, _overlap_csv(members, selected))
    report = {
        "subsets_version": SUBSETS_VERSION, "extractor_id": inputs.ext_id, "vocabulary": vocab.name,
        "pairs_read": found.pairs_read, "pairs_used": found.pairs_read - found.failures["pairs"],
        "excluded_failed_extraction": found.failures["pairs"], "failed_extraction": found.failures,
        "unknown_values": found.unknown_values, "pairs_in_a_selected_subset": _pairs_in(members, selected),
        "criteria": cfg.model_dump(mode="json"), "selected": selected,
        "per_value": {c.value: c.as_dict() for c in stats},
        "files": {v: {"train": _rel(ws, train[v]), **({"heldout": _rel(ws, heldout[v])} if v in heldout else {})} for v in selected},
        "sources": sources, "inputs": inputs.fingerprints,
    }
    atomic_write_json(report_path, report)
    _remove_stale(ws, [*train.values(), *heldout.values()])
    outputs = [*train.values(), *heldout.values(), stats_path, overlap_path, report_path]
    ws.record_stage(STAGE, key, outputs, {"selected": len(selected), "pairs_used": report["pairs_used"],
                                           "excluded_failed_extraction": report["excluded_failed_extraction"]})
    ws.update_manifest(config.model_dump(mode="json"), {f"subsets.{k}": v for k, v in inputs.fingerprints.items()}, STAGE)
    return SubsetsResult(False, stats, train, heldout, stats_path, overlap_path, report_path, report)


def format_table(rows: Sequence[Candidate], title: str | None = None) -> Table:
    """The study's table: value, chosen-side pairs, rejected-side pairs (flipped), total, status."""
    show_heldout = any(c.heldout for c in rows)
    table = Table(title=title)
    table.add_column("value")
    table.add_column("valence")
    table.add_column("category")
    table.add_column("chosen side", justify="right")
    table.add_column("rejected side (flipped)", justify="right")
    table.add_column("total", justify="right")
    if show_heldout:
        table.add_column("held out", justify="right")
    table.add_column("status")
    for c in rows:
        status = "[green]selected[/]" if c.selected else f"[dim]dropped: {', '.join(c.reasons)}[/]"
        cells = [c.value, c.valence, c.category, f"{c.chosen_side:,}", f"{c.rejected_side:,}", f"{c.total:,}"]
        table.add_row(*cells, *([f"{c.heldout:,}"] if show_heldout else []), status)
    return table


# ---------------------------------------------------------------- writing


def _rel(ws: Workspace, path: Path) -> str:
    return str(path.relative_to(ws.root))


def _assistant(texts: pa.Array) -> pa.Array:
    """Each text as a one-message conversation: ``[{"role": "assistant", "content": text}]``."""
    n = len(texts)
    message = pa.StructArray.from_arrays([pa.repeat("assistant", n), texts.cast(pa.string())], fields=list(MESSAGE_TYPE))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), message, type=PROMPT_TYPE)


def _subset_table(content: _Content, rows: pa.Array, flipped: pa.Array) -> pa.Table:
    """The DPO rows of the given pairs, swapped where ``flipped``."""
    chosen, rejected = content.chosen.take(rows), content.rejected.take(rows)
    return pa.Table.from_arrays(
        [content.prompt.take(rows).cast(PROMPT_TYPE), _assistant(pc.if_else(flipped, rejected, chosen)),
         _assistant(pc.if_else(flipped, chosen, rejected)), content.pair_id.take(rows).cast(pa.string()),
         content.source.take(rows).cast(pa.string()), flipped],
        schema=SUBSET_SCHEMA,
    )


def _write_subset(path: Path, content: _Content, part: pl.DataFrame) -> None:
    """One subset file (``part``: row, flipped, in pair_id order), built and written one row group at a time."""
    rows, flipped = part.get_column("row").to_arrow(), part.get_column("flipped").to_arrow()
    size = PARQUET_OPTIONS["row_group_size"]
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, SUBSET_SCHEMA, **_WRITER_OPTIONS) as writer:
        for start in range(0, max(len(rows), 1), size):  # an empty subset still gets its schema
            writer.write_table(_subset_table(content, rows.slice(start, size), flipped.slice(start, size)), row_group_size=size)


def _write_subsets(
    ws: Workspace, content: _Content, members: pl.DataFrame, selected: list[str], split: bool, progress: Progress | None
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write each selected value's training file (and held-out file); value -> path of each."""
    train: dict[str, Path] = {}
    heldout: dict[str, Path] = {}
    jobs: list[tuple[Path, pl.DataFrame]] = []
    for value in selected:
        part = members.filter(pl.col("value") == value)
        train[value] = ws.subset_file(value)
        jobs.append((train[value], part.filter(~pl.col("heldout")) if split else part))
        if split:
            heldout[value] = ws.heldout_file(value)
            jobs.append((heldout[value], part.filter(pl.col("heldout"))))
    update = progress("subsets", len(jobs)) if progress else None
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="subset-writer") as pool:
        futures = [pool.submit(_write_subset, path, content, part) for path, part in jobs]
        for done, future in enumerate(futures, 1):
            future.result()  # re-raises a write error here
            if update:
                update(done)
    return train, heldout


def _stats_csv(stats: list[Candidate], sources: list[str]) -> str:
    frame = pl.DataFrame(
        [{"value": c.value, "valence": c.valence, "category": c.category, "chosen_side": c.chosen_side,
          "rejected_side": c.rejected_side, "total": c.total, "heldout": c.heldout, "status": c.status,
          "reason": ";".join(c.reasons), **{f"source:{s}": c.per_source.get(s, 0) for s in sources}} for c in stats],
        schema={"value": pl.String, "valence": pl.String, "category": pl.String, "chosen_side": pl.Int64,
                "rejected_side": pl.Int64, "total": pl.Int64, "heldout": pl.Int64, "status": pl.String, "reason": pl.String,
                **{f"source:{s}": pl.Int64 for s in sources}},
    )
    return frame.sort(["total", "value"], descending=[True, False]).write_csv()


def _overlap_csv(members: pl.DataFrame, selected: list[str]) -> str:
    """Shared pairs of every two selected values (value_a < value_b alphabetically), zeros included."""
    chosen = members.filter(pl.col("value").is_in(selected)).select("row", value=pl.col("value").cast(pl.String))
    shared = (
        chosen.join(chosen, on="row", suffix="_b").filter(pl.col("value") < pl.col("value_b"))
        .group_by("value", "value_b").len()
        .rename({"value": "value_a", "len": "shared"})
    )
    names = sorted(selected)
    grid = pl.DataFrame([{"value_a": a, "value_b": b} for i, a in enumerate(names) for b in names[i + 1:]],
                        schema={"value_a": pl.String, "value_b": pl.String})
    return (grid.join(shared, on=["value_a", "value_b"], how="left")
            .with_columns(pl.col("shared").fill_null(0).cast(pl.Int64)).sort("value_a", "value_b").write_csv())


def _pairs_in(members: pl.DataFrame, selected: list[str]) -> int:
    return members.filter(pl.col("value").is_in(selected)).get_column("row").n_unique()


def _remove_stale(ws: Workspace, keep: list[Path]) -> None:
    """Drop subset files of values no longer selected (and held-out files no longer asked for)."""
    for old in ws.subsets_dir.glob("*.parquet"):
        if old not in keep:
            old.unlink()


def _result_from_report(
    ws: Workspace, vocab: Vocabulary, report: dict[str, Any], stats_path: Path, overlap_path: Path, report_path: Path
) -> SubsetsResult:
    """The result of the run that the report describes (values in vocabulary order, as when it ran)."""
    stats = []
    for value in vocab.names:
        d = report["per_value"][value]
        stats.append(Candidate(value=value, valence=d["valence"], category=d["category"], chosen_side=d["chosen_side"],
                               rejected_side=d["rejected_side"], heldout=d["heldout"], per_source=d["per_source"],
                               reasons=tuple(Reason(r) for r in d["reasons"])))
    train = {v: ws.root / f["train"] for v, f in report["files"].items()}
    heldout = {v: ws.root / f["heldout"] for v, f in report["files"].items() if "heldout" in f}
    return SubsetsResult(True, stats, train, heldout, stats_path, overlap_path, report_path, report)
