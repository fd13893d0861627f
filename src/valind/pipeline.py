"""``valind run``: the stages in order, under one workspace lock, with a record of how far the run got.

    ingest -> extract -> subsets -> train -> generate -> evaluate -> report

Each stage skips the work whose inputs and settings are unchanged (its own stage record, training
cells' DONE markers, generation files' records, the model-call cache), so running the pipeline again
after a crash or a config change does only what is missing. ``stages_to_run(from_, only)`` picks a
slice; stages picked with ``--from`` / ``--only`` are *forced*: their records are forgotten, so they
recompute their outputs, still reusing cached model calls and finished training cells (a cell is
trained again only when its settings or data change, or its folder is deleted).

A run holds an exclusive ``flock`` on ``.valind/lock`` for its whole length; a second run on the same
workspace waits for it (``wait_s``) or stops with a message naming the holder. The lock is released by
the kernel when the holder dies, so a killed run never leaves a stale lock. ``.valind/run.json`` says,
per stage, whether it is running, done or failed (with the error), which ``valind status`` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from valind.errors import ConfigError, ValindError
from valind.workspace import Workspace, atomic_write_json, read_json

if TYPE_CHECKING:
    from valind.config import Config

Progress = Callable[[str, int | None], Callable[[int], None]]


class Stage(StrEnum):
    INGEST = "ingest"
    EXTRACT = "extract"
    SUBSETS = "subsets"
    TRAIN = "train"
    GENERATE = "generate"
    EVALUATE = "evaluate"
    REPORT = "report"


STAGES: tuple[Stage, ...] = tuple(Stage)


class WorkspaceBusy(ValindError):
    """Another process holds the workspace lock."""


def parse_stage(name: str) -> Stage:
    try:
        return Stage(name.strip().lower())
    except ValueError:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def stages_to_run(from_: str | None = None, only: Sequence[str] = ()) -> tuple[list[Stage], set[Stage]]:
    """(stages to run in order, stages to force). Default: every stage, none forced."""
    if from_ and only:
        raise ConfigError("give --from or --only, not both")
    if only:
        picked = {parse_stage(s) for s in only}
        return [s for s in STAGES if s in picked], picked
    if from_:
        start = STAGES.index(parse_stage(from_))
        return list(STAGES[start:]), set(STAGES[start:])
    return list(STAGES), set()


# ---------------------------------------------------------------- the lock


@dataclass(frozen=True)
class LockHolder:
    pid: int
    command: str
    started_at: str

    def describe(self) -> str:
        return f"pid {self.pid}, `{self.command}`, since {self.started_at}"


def _holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder(**orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


@contextlib.contextmanager
def workspace_lock(ws: Workspace, wait_s: float = 0.0, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the workspace's exclusive lock for the block. Raises WorkspaceBusy if another process holds it
    after ``wait_s`` seconds (0: do not wait)."""
    path = ws.lock_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(path)
                    who = holder.describe() if holder else "another process"
                    raise WorkspaceBusy(
                        f"workspace {ws.root} is in use by {who}; wait for it to finish, or pass --wait SECONDS"
                    ) from None
                time.sleep(poll_s)
        me = LockHolder(os.getpid(), " ".join(["valind", *sys.argv[1:]])[:300], _now())
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(me.__dict__), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def lock_holder(ws: Workspace) -> LockHolder | None:
    """Who holds the workspace lock now, or None when nobody does."""
    if not ws.lock_path.is_file():
        return None
    fd = os.open(ws.lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(ws.lock_path) or LockHolder(-1, "unknown", "unknown")
    finally:
        os.close(fd)
    return None


# ---------------------------------------------------------------- running


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunState:
    """``.valind/run.json``: one pipeline run, per stage: state (running, done, failed), times, error."""

    started_at: str
    pid: int
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def mark(self, ws: Workspace, stage: Stage, state: str, **extra: Any) -> None:
        entry = self.stages.setdefault(stage.value, {})
        entry.update(state=state, **extra)
        atomic_write_json(ws.run_state, self.__dict__)


def read_run_state(ws: Workspace) -> RunState | None:
    if not ws.run_state.is_file():
        return None
    return RunState(**read_json(ws.run_state))


Runner = Callable[["Config", Workspace], Any]


def default_runners(progress: Progress | None = None) -> dict[Stage, Runner]:
    """The stage functions themselves (``run_<stage>(config, ws, progress)``), for use from Python."""

    def ingest(c: Config, w: Workspace) -> Any:
        from valind.ingest import run_ingest
        return run_ingest(c, w, progress)

    def extract(c: Config, w: Workspace) -> Any:
        from valind.extract.stage import run_extract
        return run_extract(c, w, progress)

    def subsets(c: Config, w: Workspace) -> Any:
        from valind.subsets import run_subsets
        return run_subsets(c, w, progress)

    def train(c: Config, w: Workspace) -> Any:
        from valind.train import run_train
        return run_train(c, w, progress=progress)  # raises StageFailed when a cell failed

    def generate(c: Config, w: Workspace) -> Any:
        from valind.generate import run_generate
        return run_generate(c, w, progress)

    def evaluate(c: Config, w: Workspace) -> Any:
        from valind.evaluate import run_evaluate
        return run_evaluate(c, w, progress)

    def report(c: Config, w: Workspace) -> Any:
        from valind.report import build_report
        return build_report(c, w, progress)

    return {Stage.INGEST: ingest, Stage.EXTRACT: extract, Stage.SUBSETS: subsets, Stage.TRAIN: train,
            Stage.GENERATE: generate, Stage.EVALUATE: evaluate, Stage.REPORT: report}


@dataclass
class PipelineResult:
    stages: list[Stage]
    results: dict[Stage, Any]
    seconds: dict[Stage, float]


def run_pipeline(
    config: Config, ws: Workspace, stages: Sequence[Stage] = STAGES, *, force: set[Stage] | frozenset[Stage] = frozenset(),
    runners: dict[Stage, Runner] | None = None, wait_s: float = 0.0,
    on_stage: Callable[[Stage, int, int], None] | None = None,
) -> PipelineResult:
    """Run ``stages`` in order under the workspace lock (see the module doc). ``force``: stages whose records are
    forgotten first. ``on_stage(stage, index, total)`` is called as each stage starts (for progress output)."""
    runners = {**default_runners(), **(runners or {})}
    ws.root.mkdir(parents=True, exist_ok=True)
    result = PipelineResult(list(stages), {}, {})
    with workspace_lock(ws, wait_s):
        state = RunState(_now(), os.getpid())
        for index, stage in enumerate(stages, 1):
            if stage in force:
                ws.clear_stage(stage.value, nested=True)
            if on_stage is not None:
                on_stage(stage, index, len(stages))
            state.mark(ws, stage, "running", started_at=_now())
            started = time.monotonic()
            try:
                result.results[stage] = runners[stage](config, ws)
            except BaseException as e:  # recorded, then re-raised unchanged: KeyboardInterrupt included
                reason = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                state.mark(ws, stage, reason, finished_at=_now(), error=f"{type(e).__name__}: {e}"[:2000])
                raise
            result.seconds[stage] = round(time.monotonic() - started, 2)
            state.mark(ws, stage, "done", finished_at=_now(), seconds=result.seconds[stage],
                       skipped=bool(getattr(result.results[stage], "skipped", False)))
    return result


# ---------------------------------------------------------------- status


@dataclass
class StageStatus:
    """``state``: done, running, interrupted, failed, damaged (recorded outputs missing or changed), outdated
    (an earlier stage finished after it) or pending (never finished)."""

    stage: Stage
    state: str
    finished_at: str | None = None
    detail: str = ""


@dataclass
class CellStatus:
    """A model cell: the suites generated for it and whether it is evaluated."""

    label: str
    generated: list[str]
    evaluated: bool


@dataclass
class Status:
    workspace: Path
    lock: LockHolder | None
    stages: list[StageStatus]
    train_cells: list[tuple[str, str]]  # (cell id, state)
    model_cells: list[CellStatus]


def _records(ws: Workspace, stage: Stage) -> list[Any]:
    """The stage's top-level records: one for most stages, one per extractor for extract."""
    if stage is Stage.EXTRACT:
        folder = ws.stage_record_path("extract").with_suffix("")
        names = [f"extract/{p.stem}" for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    else:
        names = [stage.value]
    return [r for r in (ws.stage_record(n) for n in names) if r is not None]


def workspace_status(ws: Workspace) -> Status:
    """What is done, running, failed and pending in ``ws``, read from its records only (nothing is loaded)."""
    from valind.train.plan import Cell, cell_paths, cell_state, plan_path

    holder = lock_holder(ws)
    run = read_run_state(ws)
    stages: list[StageStatus] = []
    upstream_finished = ""
    for stage in STAGES:
        records = _records(ws, stage)
        latest = max(records, key=lambda r: r.finished_at) if records else None
        entry = (run.stages.get(stage.value) if run else None) or {}
        if entry.get("state") == "running":
            status = StageStatus(stage, "running" if holder else "interrupted", detail=f"started {entry.get('started_at')}")
        elif entry.get("state") in ("failed", "interrupted") and (latest is None or latest.finished_at < entry.get("finished_at", "")):
            status = StageStatus(stage, entry["state"], entry.get("finished_at"), entry.get("error", ""))
        elif latest is None:
            status = StageStatus(stage, "pending")
        elif ws.stage_done(latest.stage, latest.key) is None:
            status = StageStatus(stage, "damaged", latest.finished_at, "recorded outputs are missing or changed; it will be redone")
        elif latest.finished_at < upstream_finished:
            status = StageStatus(stage, "outdated", latest.finished_at, "an earlier stage finished after it")
        else:
            summary = ", ".join(f"{k} {v}" for k, v in latest.summary.items() if isinstance(v, (int, float, str)))[:120]
            status = StageStatus(stage, "done", latest.finished_at, summary)
        if latest is not None:
            upstream_finished = max(upstream_finished, latest.finished_at)
        stages.append(status)

    train_cells: list[tuple[str, str]] = []
    if plan_path(ws).is_file():
        for data in read_json(plan_path(ws)).get("cells", []):
            key = data.pop("key", None)
            cell = Cell.from_dict(data)
            train_cells.append((cell.id, cell_state(cell_paths(ws, cell), key).value))
    generated = ws.stage_record_path("generate").with_suffix("")
    labels = sorted({p.name for p in generated.iterdir() if p.is_dir()}) if generated.is_dir() else []
    model_cells = [
        CellStatus(label, sorted(p.stem for p in (generated / label).glob("*.json")),
                   ws.evaluate_file(label, "metrics").is_file())
        for label in labels
    ]
    return Status(ws.root, holder, stages, train_cells, model_cells)
