"""The on-disk layout of a workspace, atomic writes, stage records and the manifest.

This is the only module that builds workspace paths. Layout::

    <workspace>/
      manifest.json                     resolved config, versions, git SHA, input fingerprints
      ingest/<source>.parquet           canonical pairs (see valind.schema)
      ingest/ingest_report.json         rows read / kept / rejected by reason, per source
      extract/<extractor-id>/values.parquet
      subsets/<value>.parquet (+ <value>.heldout.parquet), stats.csv, overlap.csv, subsets_report.json
      train/<model>/<value>/
      generate/<model>/<suite>.parquet
      evaluate/<model>/<metric>.json
      report/index.html, report/figures/, report/tables/
      validate/                         extractor validation: tasks, answers per annotator, scores
      export/                           Hub-ready datasets and adapters with model cards
      .valind/stages/<stage>.json       what each finished stage did, keyed by its inputs and settings

A stage is done when its record exists, its key (a hash of its settings and input
fingerprints) is unchanged, and every output it listed still exists with the recorded size and
checksum (XXH3-128 of the bytes, taken at write time; several GB/s, so checked on every use).
An output that is missing, cut short or changed makes the stage run again, with a warning naming
the file; a later stage that reads it refuses with the same message (``require_stage``).

The manifest carries a checksum of its own content; one edited by hand is reported, never trusted
as the config of the workspace (``read_manifest``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson
import xxhash

from valind import faults
from valind.errors import ValindError

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
TRACKED_PACKAGES = (
    "valind", "pyarrow", "polars", "pydantic", "datasets", "orjson", "torch", "transformers",
    "trl", "peft", "accelerate", "vllm", "lm_eval", "sentence-transformers",
)


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary file is ``.<name>.<host>-<pid>.<random>.tmp``: nothing reads it, and the next write of
    the same file on the same machine removes those that a killed process (one no longer running) left
    behind; another machine's (a shared file system) are left alone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        faults.point("write", str(path))
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


_HOST = xxhash.xxh32_hexdigest(socket.gethostname().encode())  # names this machine in temporary file names


def _remove_dead_temporaries(path: Path) -> None:
    """Delete ``path``'s temporary files whose writer, on this machine, is gone (killed before it could clean up)."""
    for tmp in path.parent.glob(f".{_glob_escape(path.name)}.{_HOST}-*.tmp"):
        pid = tmp.name[len(path.name) + len(_HOST) + 3:].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped (file names here may contain '[')."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as err:
        raise ValindError(f"{path}: not valid JSON ({err}); delete it or re-run the stage that writes it") from None


# ---------------------------------------------------------------- fingerprints


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's bytes, as ``blake2b:<hex>``."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"blake2b:{h.hexdigest()}"


def checksum_file(path: Path, chunk: int = 1 << 20) -> str:
    """XXH3-128 of a file's bytes, as ``xxh3:<hex>``: what a stage record keeps to tell a damaged output."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"xxh3:{h.hexdigest()}"


def hash_tree(path: Path) -> str:
    """Fingerprint of a folder: the relative names and content hashes of all its files."""
    h = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode() + b"\0" + hash_file(file).encode() + b"\0")
    return f"blake2b-tree:{h.hexdigest()}"


def hash_json(obj: Any) -> str:
    """Stable hash of plain data (dict keys sorted)."""
    return hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


# ---------------------------------------------------------------- provenance


def git_state(path: Path) -> dict[str, Any] | None:
    """The git commit (and whether the tree has changes) of the checkout holding ``path``, if any."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": bool(dirty)}


def package_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


# ---------------------------------------------------------------- the workspace


@dataclass(frozen=True)
class StageRecord:
    stage: str
    key: str
    outputs: dict[str, int]  # relative path -> size in bytes
    summary: dict[str, Any]
    finished_at: str
    checksums: dict[str, str] = field(default_factory=dict)  # relative path -> checksum_file(); empty in old records


class ManifestChanged(ValindError):
    """manifest.json is not the file valind wrote (edited by hand, damaged, or from before checksums)."""


class Workspace:
    """A run's folder. All paths come from here."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # layout
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    def ingest_file(self, source: str) -> Path:
        return self.ingest_dir / f"{source}.parquet"

    @property
    def ingest_report(self) -> Path:
        return self.ingest_dir / "ingest_report.json"

    def extract_dir(self, extractor_id: str) -> Path:
        return self.root / "extract" / extractor_id

    def values_file(self, extractor_id: str) -> Path:
        return self.extract_dir(extractor_id) / "values.parquet"

    @property
    def subsets_dir(self) -> Path:
        return self.root / "subsets"

    def subset_file(self, value: str) -> Path:
        return self.subsets_dir / f"{_slug(value)}.parquet"

    def heldout_file(self, value: str) -> Path:
        return self.subsets_dir / f"{_slug(value)}.heldout.parquet"

    @property
    def subsets_stats(self) -> Path:
        return self.subsets_dir / "stats.csv"

    @property
    def subsets_overlap(self) -> Path:
        return self.subsets_dir / "overlap.csv"

    @property
    def subsets_report(self) -> Path:
        return self.subsets_dir / "subsets_report.json"

    def train_dir(self, model: str, value: str) -> Path:
        return self.root / "train" / _slug(model) / _slug(value)

    def generate_file(self, model: str, suite: str) -> Path:
        return self.root / "generate" / _slug(model) / f"{_slug(suite)}.parquet"

    def evaluate_file(self, model: str, metric: str) -> Path:
        return self.root / "evaluate" / _slug(model) / f"{_slug(metric)}.json"

    @property
    def evaluate_summary(self) -> Path:
        """evaluate/summary.json: every metric of every cell, with how each is computed (valind.evaluate)."""
        return self.root / "evaluate" / "summary.json"

    @property
    def frontier_file(self) -> Path:
        """evaluate/frontier.parquet: one row per induced cell of the beta x steps sweep (valind.metrics.frontier)."""
        return self.root / "evaluate" / "frontier.parquet"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report_index(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def report_figures(self) -> Path:
        return self.report_dir / "figures"

    @property
    def report_tables(self) -> Path:
        return self.report_dir / "tables"

    @property
    def validate_dir(self) -> Path:
        """validate/: extractor validation tasks, answers per annotator, scores.json."""
        return self.root / "validate"

    @property
    def validate_tasks(self) -> Path:
        """validate/tasks.jsonl: the 1-of-4 annotation tasks, in presentation order (valind.validate.tasks)."""
        return self.validate_dir / "tasks.jsonl"

    @property
    def validate_tasks_report(self) -> Path:
        """validate/tasks_report.json: how the tasks were drawn (seed, rule, inputs, the task file's hash)."""
        return self.validate_dir / "tasks_report.json"

    @property
    def validate_answers_dir(self) -> Path:
        return self.validate_dir / "answers"

    def validate_answers(self, annotator: str) -> Path:
        """validate/answers/<annotator>.jsonl; ``annotator`` must be a plain name (see ``annotator_name``)."""
        return self.validate_answers_dir / f"{annotator_name(annotator)}.jsonl"

    @property
    def validate_scores(self) -> Path:
        """validate/scores.json: precision per annotator and value, agreement (valind.validate.score)."""
        return self.validate_dir / "scores.json"

    @property
    def validate_scores_csv(self) -> Path:
        return self.validate_dir / "scores.csv"

    @property
    def export_dir(self) -> Path:
        """export/: Hub-ready datasets (one per value subset) and adapters with model cards."""
        return self.root / "export"

    def export_dataset_dir(self, value: str) -> Path:
        return self.export_dir / "datasets" / _slug(value)

    def export_adapter_dir(self, cell_label: str) -> Path:
        return self.export_dir / "adapters" / _slug(cell_label)

    @property
    def export_index(self) -> Path:
        return self.export_dir / "export.json"

    @property
    def lock_path(self) -> Path:
        """Held (flock) by a pipeline run for its whole length; a second run on the workspace waits or refuses."""
        return self.root / ".valind" / "lock"

    def stage_record_path(self, stage: str) -> Path:
        return self.root / ".valind" / "stages" / f"{stage}.json"

    # stage records
    def stage_record(self, stage: str) -> StageRecord | None:
        """The stage's record, or None when there is none or it cannot be read (then the stage runs again)."""
        path = self.stage_record_path(stage)
        if not path.is_file():
            return None
        try:
            return StageRecord(**read_json(path))
        except (ValindError, TypeError) as err:
            log.warning("%s: unreadable stage record (%s); the %s stage runs again", path, err, stage)
            return None

    def output_problems(self, record: StageRecord) -> list[str]:
        """What is wrong now with the outputs a record lists: missing, another size, or other bytes than written."""
        problems = []
        for rel, size in record.outputs.items():
            out = self.root / rel
            if not out.is_file():
                problems.append(f"{rel} is missing")
            elif out.stat().st_size != size:
                problems.append(f"{rel} has {out.stat().st_size:,} bytes, the {record.stage} stage wrote {size:,}")
            elif rel in record.checksums and checksum_file(out) != record.checksums[rel]:
                problems.append(f"{rel} is not the file the {record.stage} stage wrote (checksum mismatch)")
        return problems

    def stage_done(self, stage: str, key: str) -> StageRecord | None:
        """The stage's record if it finished with this key and all its outputs are intact, else None
        (a damaged output is logged as a warning naming it)."""
        record = self.stage_record(stage)
        if record is None or record.key != key:
            return None
        problems = self.output_problems(record)
        if problems:
            log.warning("%s: %s; the %s stage runs again", self.root, "; ".join(problems), stage)
            return None
        return record

    def require_stage(self, stage: str, remedy: str) -> StageRecord:
        """The record of a finished stage whose outputs are intact, for a later stage that reads them;
        else ValindError saying what is missing or damaged, and ``remedy`` (e.g. "run `valind ingest`")."""
        record = self.stage_record(stage)
        if record is None:
            raise ValindError(f"{self.root}: the {stage} stage has not finished; {remedy}")
        problems = self.output_problems(record)
        if problems:
            raise ValindError(f"{self.root}: {'; '.join(problems)}; {remedy}")
        return record

    def record_stage(self, stage: str, key: str, outputs: list[Path], summary: Mapping[str, Any]) -> StageRecord:
        record = StageRecord(
            stage=stage,
            key=key,
            outputs={str(p.relative_to(self.root)): p.stat().st_size for p in outputs},
            summary=dict(summary),
            finished_at=_now(),
            checksums={str(p.relative_to(self.root)): checksum_file(p) for p in outputs},
        )
        atomic_write_json(self.stage_record_path(stage), record.__dict__)
        return record

    def clear_stage(self, stage: str, nested: bool = False) -> None:
        """Forget that ``stage`` finished (its outputs stay); ``nested``: also every record under it (``extract/<id>``,
        ``generate/<cell>/<suite>``), so a forced re-run recomputes all of the stage."""
        self.stage_record_path(stage).unlink(missing_ok=True)
        folder = self.stage_record_path(stage).with_suffix("")
        if nested and folder.is_dir():
            for record in folder.rglob("*.json"):
                record.unlink()

    @property
    def run_state(self) -> Path:
        """.valind/run.json: the last pipeline run, stage by stage (running, done, failed, with the error)."""
        return self.root / ".valind" / "run.json"

    # manifest
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest (None when there is none), checked against the checksum valind wrote into it;
        ManifestChanged when it was edited by hand or damaged since."""
        if not self.manifest.is_file():
            return None
        redo = "pass the config with -c (the next stage then writes a new manifest), or delete manifest.json"
        try:
            manifest = read_json(self.manifest)
        except ValindError as err:
            raise ManifestChanged(f"{err}; {redo}") from None
        if not isinstance(manifest, dict) or manifest.get("checksum") != _manifest_checksum(manifest):
            raise ManifestChanged(
                f"{self.manifest} was changed since valind wrote it (its checksum does not match its content; edited by "
                f"hand?), so its config is not used; {redo}"
            )
        return manifest

    def update_manifest(self, config: Mapping[str, Any], inputs: Mapping[str, str], stage: str) -> None:
        """Write the resolved config, versions, git state and input fingerprints (merged with earlier stages).

        A manifest changed by hand is not merged: it is moved to .valind/manifest.rejected.json, with a warning.
        """
        try:
            manifest: dict[str, Any] = self.read_manifest() or {}
        except ManifestChanged as err:
            aside = self.root / ".valind" / "manifest.rejected.json"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.manifest, aside)
            log.warning("%s; moved it to %s and wrote a new one", err, aside)
            manifest = {}
        manifest.update(
            manifest_version=MANIFEST_VERSION,
            config=dict(config),
            versions=package_versions(),
            git=git_state(Path(__file__).parent),
            updated_at=_now(),
        )
        manifest.setdefault("inputs", {}).update(inputs)
        manifest.setdefault("stages", {})[stage] = _now()
        manifest["checksum"] = _manifest_checksum(manifest)
        atomic_write_json(self.manifest, manifest)


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    """XXH3-128 of the manifest's content without its own checksum, as canonical JSON (layout changes do not count)."""
    content = {k: v for k, v in manifest.items() if k != "checksum"}
    return f"xxh3:{xxhash.xxh3_128_hexdigest(orjson.dumps(content, option=orjson.OPT_SORT_KEYS))}"


_ANNOTATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def annotator_name(name: str) -> str:
    """``name`` if it is a plain annotator name: 1-64 letters, digits, '_', '-', '.', starting with a
    letter or digit, no '..' (so never a path: no separators, no parent folder); else ValindError."""
    if not _ANNOTATOR_NAME.fullmatch(name) or ".." in name:
        raise ValindError(f"annotator name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter "
                          f"or digit, without '..' (e.g. 'alice' or 'smollm2-135m')")
    return name


def _slug(name: str) -> str:
    """A name made safe as one path component ('meta-llama/Llama-3-8B' -> 'meta-llama--Llama-3-8B')."""
    out = name.strip().replace("/", "--").replace("\\", "--").replace(" ", "_")
    if not out or out in {".", ".."} or out.startswith("."):
        raise ValindError(f"{name!r} cannot be used as a file name")
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
