"""The generate stage: every model cell answers every prompt suite.

``run_generate(config, ws)`` lists the cells (``valind.generate.cells.model_cells``: base models
and finished training cells) and the suites (``valind.generate.suites.load_suite``), then for
each cell, suite by suite:

1. builds the requests: each suite prompt with the cell's system prompt first
   (``valind.train.data.with_system_prompt``, as in training), ``n_samples`` times (sample k with
   its own seed when sampling, see ``valind.generate.base``);
2. looks every request up in the model-call cache (namespace ``generate``); only misses go to the
   model, which is loaded only if there is one. Misses are sent in batches of ``batch_size``
   (longest prompts last, for less padding) and each batch's answers are stored before the next
   starts, so a killed run loses at most one batch and a re-run makes no repeated calls. Failed
   requests are never cached;
3. writes ``generate/<cell label>/<suite>.parquet`` atomically, one row per (prompt, sample):

   ``prompt_id``, ``prompt`` (the messages as sent, system prompt included), ``sample`` (0-based),
   ``seed`` (null when greedy), ``text`` (null when failed), ``status`` (``ok`` / ``error``),
   ``error``, ``finish_reason`` (``stop`` / ``length``), ``tokens`` (new tokens), then the suite's
   fields (value_elicitation: ``target_value``, ``source``; unsafe and safe_sensitive: ``label``,
   ``category``, ``source``). The file's Parquet metadata ``valind.generate`` holds the cell
   (label, kind, base model, value, method, system prompt, train cell id), the generator identity,
   the suite name and fingerprint, and the settings;
4. records it as done (``.valind/stages/generate/<label>/<suite>.json``, keyed by the version, the
   generator identity, the suite's content and the sampling settings), so a re-run skips it
   without loading anything.

A file where more than ``max_failure_fraction`` of the answers failed is still written (the
failures are rows with their error), but the stage stops there with StageFailed and the file is
not recorded as done: a re-run retries exactly the failed requests. At the end the stage records
``generate`` with every output and updates the manifest.

Example row (value_elicitation, a ``dpo+system`` cell)::

    {"prompt_id": "ve-humor-01",
     "prompt": [{"role": "system", "content": "You value humor: ..."}, {"role": "user", "content": "Tell me a joke about programmers."}],
     "sample": 0, "seed": None, "text": "Why do programmers prefer dark mode? ...", "status": "ok", "error": None,
     "finish_reason": "stop", "tokens": 23, "target_value": "humor", "source": "valind"}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from valind.cache import Cache
from valind.errors import StageFailed
from valind.extract.base import Status
from valind.extract.llm import CallFailed
from valind.generate.base import (
    GENERATE_VERSION,
    NAMESPACE,
    Backend,
    Completion,
    GenerationRequest,
    Generator,
    make_backend,
    request_seed,
)
from valind.generate.cells import (
    ModelCell,
    NotFinished,
    artifact_fingerprint,
    train_cells,
)
from valind.generate.config import GenerateConfig
from valind.generate.suites import (
    SUITE_FIELDS,
    SuitePrompt,
    load_suite,
    suite_fingerprint,
)
from valind.schema import PROMPT_TYPE
from valind.train.data import with_system_prompt
from valind.workspace import Workspace, atomic_path, hash_json

if TYPE_CHECKING:
    from valind.config import Config

STAGE = "generate"
CACHE_FILE = "calls.sqlite"  # the model-call cache every stage shares, in the cache folder
METADATA_KEY = b"valind.generate"
BASE_COLUMNS = [
    ("prompt_id", pa.string()), ("prompt", PROMPT_TYPE), ("sample", pa.int32()), ("seed", pa.int64()),
    ("text", pa.string()), ("status", pa.string()), ("error", pa.string()), ("finish_reason", pa.string()),
    ("tokens", pa.int32()),
]
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3}

Progress = Callable[[str, int | None], Callable[[int], None]]  # (description, total) -> update(position)


@dataclass
class FileReport:
    """What the stage did for one (cell, suite). ``reused``: answers from the cache; ``generated``:
    answers the model produced now (model calls); ``failed``: requests that failed now."""

    label: str
    suite: str
    path: Path
    rows: int = 0
    reused: int = 0
    generated: int = 0
    failed: int = 0
    skipped: bool = False  # already done with the same key: nothing read, nothing loaded
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


@dataclass
class GenerateResult:
    files: list[FileReport]
    cells: list[ModelCell]
    not_finished: list[NotFinished] = field(default_factory=list)  # training cells left out
    skipped: bool = False  # the whole stage was done already

    @property
    def model_calls(self) -> int:
        return sum(f.generated + f.failed for f in self.files)

    @property
    def reused(self) -> int:
        return sum(f.reused for f in self.files)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.files)

    def summary(self) -> dict[str, Any]:
        return {"cells": len(self.cells), "files": len(self.files), "rows": sum(f.rows for f in self.files),
                "model_calls": self.model_calls, "reused_from_cache": self.reused, "failed": self.failed,
                "not_finished_train_cells": [n.__dict__ for n in self.not_finished]}


@dataclass
class _Job:
    """One (cell, suite) to write: its requests in output order and their cache keys."""

    cell: ModelCell
    suite: str
    prompts: list[SuitePrompt]
    path: Path
    key: str
    identity: dict[str, Any]
    requests: list[GenerationRequest]
    prompt_index: list[int]  # the suite prompt of each request
    cache_keys: list[str]
    sampling: bool  # requests carry their seed


def run_generate(config: Config, ws: Workspace, progress: Progress | None = None, *, backend: Backend | None = None) -> GenerateResult:
    """Answer every suite with every cell (see the module doc). ``backend``: use this one instead of the configured one."""
    cfg: GenerateConfig = config.generate
    cells, not_finished = train_cells(config, ws)
    suites = {name: load_suite(name, cfg, ws) for name in cfg.suites}
    backend = backend or make_backend(cfg, config.resolved_cache_dir(), cells)
    try:
        identities = {c.label: {**backend.identity(c), "version": GENERATE_VERSION} for c in cells}
        fingerprints = {name: suite_fingerprint(prompts) for name, prompts in suites.items()}
        file_keys = {(c.label, s): _file_key(cfg, identities[c.label], c, fingerprints[s]) for c in cells for s in suites}
        stage_key = hash_json(sorted([*k, v] for k, v in file_keys.items()))
        reports = [FileReport(c.label, s, ws.generate_file(c.label, s)) for c in cells for s in suites]
        if ws.stage_done(STAGE, stage_key):
            for r in reports:
                r.skipped, r.rows = True, pq.ParquetFile(r.path).metadata.num_rows
            return GenerateResult(reports, cells, not_finished, skipped=True)
        ws.clear_stage(STAGE)  # until this run finishes, nothing downstream may trust the old set of outputs

        by_cell = {c.label: [r for r in reports if r.label == c.label] for c in cells}
        with Cache(config.resolved_cache_dir() / CACHE_FILE) as cache:
            for cell in cells:
                jobs = [_job(cfg, cell, name, suites[name], ws, file_keys[(cell.label, name)], identities[cell.label])
                        for name in suites]
                _run_cell(cfg, cell, jobs, by_cell[cell.label], backend, cache, ws, progress)
    finally:
        backend.close()

    result = GenerateResult(reports, cells, not_finished)
    ws.record_stage(STAGE, stage_key, [r.path for r in reports], result.summary())
    inputs = {f"generate.suite.{name}": fp for name, fp in fingerprints.items()}
    inputs.update({f"generate.cell.{c.label}": artifact_fingerprint(c) or c.base for c in cells})
    ws.update_manifest(config.model_dump(mode="json"), inputs, STAGE)
    return result


def _file_key(cfg: GenerateConfig, identity: dict[str, Any], cell: ModelCell, suite_fp: str) -> str:
    sampling = {"n_samples": cfg.n_samples, "seed": cfg.seed} if cfg.sampling else None
    return hash_json({"identity": identity, "system_prompt": cell.system_prompt, "suite": suite_fp, "sampling": sampling})


def _job(cfg: GenerateConfig, cell: ModelCell, suite: str, prompts: list[SuitePrompt], ws: Workspace, key: str,
         identity: dict[str, Any]) -> _Job:
    requests, index, keys = [], [], []
    for i, prompt in enumerate(prompts):
        messages = with_system_prompt(prompt.messages, cell.system_prompt)
        for sample in range(cfg.n_samples):
            seed = request_seed(cfg.seed, prompt.messages, sample) if cfg.sampling else 0
            requests.append(GenerationRequest(messages, sample, seed))
            index.append(i)
            keys.append(Cache.key(identity, {"messages": messages, "seed": seed} if cfg.sampling else {"messages": messages}))
    return _Job(cell, suite, prompts, ws.generate_file(cell.label, suite), key, identity, requests, index, keys, cfg.sampling)


def _run_cell(cfg: GenerateConfig, cell: ModelCell, jobs: list[_Job], reports: list[FileReport], backend: Backend,
              cache: Cache, ws: Workspace, progress: Progress | None) -> None:
    """Every suite of one cell; the model is opened at the first cache miss, not before."""
    todo = []
    for job, report in zip(jobs, reports, strict=True):
        if ws.stage_done(_file_stage(job), job.key):
            report.skipped, report.rows = True, pq.ParquetFile(job.path).metadata.num_rows
        else:
            todo.append((job, report))
    if not todo:
        return
    update = progress(f"generate {cell.label}", sum(len(job.requests) for job, _ in todo)) if progress else None
    position = 0
    generator: Generator | None = None
    for job, report in todo:
        started = time.perf_counter()
        answers: dict[str, Completion] = {k: Completion.from_json(v) for k, v in cache.get_many(NAMESPACE, job.cache_keys).items()}
        report.reused = len(answers)
        errors: dict[str, str] = {}
        missing = list({k: i for i, k in enumerate(job.cache_keys) if k not in answers}.values())  # one request per key
        missing.sort(key=lambda i: len(orjson.dumps(job.requests[i].messages)))
        position += len(job.requests) - len(missing)
        if update:
            update(position)
        for start in range(0, len(missing), cfg.resolved_batch_size):
            batch = missing[start:start + cfg.resolved_batch_size]
            generator = generator or backend.open(cell)
            outputs = generator.generate([job.requests[i] for i in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"{backend.name} returned {len(outputs)} answers for {len(batch)} requests")
            good = {}
            for i, out in zip(batch, outputs, strict=True):
                key = job.cache_keys[i]
                if isinstance(out, CallFailed):
                    errors[key] = str(out)
                else:
                    answers[key] = out
                    good[key] = out.to_json()
            cache.put_many(NAMESPACE, good)
            report.generated += len(good)
            report.failed += len(batch) - len(good)
            position += len(batch)
            if update:
                update(position)
        report.rows = len(job.requests)
        _write(job, answers, errors)
        report.seconds = time.perf_counter() - started
        failed_rows = sum(1 for k in job.cache_keys if k in errors)
        if failed_rows > cfg.max_failure_fraction * len(job.requests):
            first = next(iter(errors.values()))
            raise StageFailed(
                f"generate: {failed_rows:,} of {len(job.requests):,} answers of {cell.label} on {job.suite} failed "
                f"(max {cfg.max_failure_fraction:.1%}); first error: {first}. The rows are in {job.path} "
                f"(status column); a re-run retries only these."
            )
        ws.record_stage(_file_stage(job), job.key, [job.path], {k: v for k, v in report.as_dict().items() if k != "path"})


def _file_stage(job: _Job) -> str:
    return f"{STAGE}/{job.cell.label}/{job.suite}"


def _write(job: _Job, answers: dict[str, Completion], errors: dict[str, str]) -> None:
    names = SUITE_FIELDS[job.suite]
    schema = pa.schema([*BASE_COLUMNS, *((n, pa.string()) for n in names)])
    cols: dict[str, list[Any]] = {n: [] for n in schema.names}
    for req, i, key in zip(job.requests, job.prompt_index, job.cache_keys, strict=True):
        prompt = job.prompts[i]
        answer = answers.get(key)
        cols["prompt_id"].append(prompt.id)
        cols["prompt"].append(req.messages)
        cols["sample"].append(req.sample)
        cols["seed"].append(req.seed if job.sampling else None)
        cols["text"].append(answer.text if answer else None)
        cols["status"].append(Status.OK.value if answer else Status.ERROR.value)
        cols["error"].append(None if answer else errors.get(key, "not generated"))
        cols["finish_reason"].append(answer.finish_reason if answer else None)
        cols["tokens"].append(answer.tokens if answer else None)
        for n in names:
            cols[n].append(prompt.fields.get(n))
    meta = {"cell": job.cell.as_dict(), "identity": job.identity, "suite": job.suite, "key": job.key,
            "suite_prompts": len(job.prompts), "version": GENERATE_VERSION}
    table = pa.table(cols, schema=schema).replace_schema_metadata({METADATA_KEY: orjson.dumps(meta)})
    with atomic_path(job.path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)


def read_generate_metadata(path: Path) -> dict[str, Any]:
    """The ``valind.generate`` metadata of a generate file (cell, identity, suite, key)."""
    meta = pq.read_schema(path).metadata or {}
    return orjson.loads(meta[METADATA_KEY])
