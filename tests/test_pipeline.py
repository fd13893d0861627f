"""`valind run` / `valind status`: stage order and selection, forced re-runs, the run record, the workspace lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from valind.cli import app
from valind.config import Config
from valind.errors import ConfigError, ValindError
from valind.pipeline import (
    STAGES, Stage, WorkspaceBusy, lock_holder, read_run_state, run_pipeline, stages_to_run, workspace_lock, workspace_status,
)
from valind.workspace import Workspace, atomic_write_json, read_json


def test_stage_selection() -> None:
    assert stages_to_run() == (list(STAGES), set())
    stages, force = stages_to_run(from_="generate")
    assert stages == [Stage.GENERATE, Stage.EVALUATE, Stage.REPORT] and force == set(stages)
    stages, force = stages_to_run(only=["report", "Train"])
    assert stages == [Stage.TRAIN, Stage.REPORT] and force == {Stage.TRAIN, Stage.REPORT}
    with pytest.raises(ConfigError, match="unknown stage 'trian'; stages: ingest, extract"):
        stages_to_run(only=["trian"])
    with pytest.raises(ConfigError, match="not both"):
        stages_to_run(from_="train", only=["report"])


class Recorder:
    """Fake stage functions: each writes one output with a stage record, skipping when the record is intact."""

    def __init__(self, fail_at: Stage | None = None, exc: type[BaseException] = ValindError) -> None:
        self.calls: list[str] = []
        self.computed: list[str] = []
        self.fail_at, self.exc = fail_at, exc

    def runners(self) -> dict[Stage, Any]:
        return {stage: self._runner(stage) for stage in STAGES}

    def _runner(self, stage: Stage) -> Any:
        def run(config: Config, ws: Workspace) -> str:
            self.calls.append(stage.value)
            if stage is self.fail_at:
                raise self.exc(f"{stage.value} broke")
            if ws.stage_done(stage.value, "k"):
                return "skipped"
            self.computed.append(stage.value)
            out = ws.root / f"{stage.value}.txt"
            out.write_text(stage.value)
            ws.record_stage(stage.value, "k", [out], {"rows": 1})
            return "computed"
        return run


def test_pipeline_runs_in_order_and_skips_done_work(tmp_path: Path) -> None:
    ws, rec = Workspace(tmp_path / "ws"), Recorder()
    run_pipeline(Config(), ws, runners=rec.runners())
    assert rec.calls == [s.value for s in STAGES] and rec.computed == rec.calls
    state = read_run_state(ws)
    assert state is not None and all(state.stages[s.value]["state"] == "done" for s in STAGES)
    again = Recorder()
    run_pipeline(Config(), ws, runners=again.runners())
    assert again.computed == []  # nothing redone
    forced = Recorder()
    stages, force = stages_to_run(from_="evaluate")
    run_pipeline(Config(), ws, stages, force=force, runners=forced.runners())
    assert forced.calls == ["evaluate", "report"] and forced.computed == ["evaluate", "report"]


def test_failure_and_interrupt_are_recorded_and_status_shows_them(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ValindError, match="train broke"):
        run_pipeline(Config(), ws, runners=Recorder(fail_at=Stage.TRAIN).runners())
    status = {s.stage: s for s in workspace_status(ws).stages}
    assert status[Stage.SUBSETS].state == "done"
    assert status[Stage.TRAIN].state == "failed" and "train broke" in status[Stage.TRAIN].detail
    assert status[Stage.GENERATE].state == "pending"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(Config(), ws, runners=Recorder(fail_at=Stage.GENERATE, exc=KeyboardInterrupt).runners())
    status = {s.stage: s for s in workspace_status(ws).stages}
    assert status[Stage.TRAIN].state == "done" and status[Stage.GENERATE].state == "interrupted"
    (ws.root / "train.txt").write_text("changed by hand")  # recorded output no longer matches
    assert {s.stage: s for s in workspace_status(ws).stages}[Stage.TRAIN].state == "damaged"


def test_status_marks_a_stage_outdated_when_an_earlier_one_finished_later(tmp_path: Path) -> None:
    ws, rec = Workspace(tmp_path / "ws"), Recorder()
    run_pipeline(Config(), ws, runners=rec.runners())
    train = ws.stage_record_path("train")
    record = read_json(train)
    atomic_write_json(train, {**record, "finished_at": "2000-01-01T00:00:00+00:00"})  # finished before subsets re-runs
    run_pipeline(Config(), ws, [Stage.SUBSETS], force={Stage.SUBSETS}, runners=Recorder().runners())
    status = {s.stage: s.state for s in workspace_status(ws).stages}
    assert status[Stage.SUBSETS] == "done" and status[Stage.TRAIN] == "outdated" and status[Stage.INGEST] == "done"


HOLD = textwrap.dedent("""
    import sys, time
    from valind.pipeline import workspace_lock
    from valind.workspace import Workspace
    with workspace_lock(Workspace(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
""")


def _holder(ws: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(ws)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_refuses_or_waits_and_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    proc = _holder(ws.root)
    try:
        holder = lock_holder(ws)
        assert holder is not None and holder.pid == proc.pid
        with pytest.raises(WorkspaceBusy, match=rf"in use by pid {proc.pid}.*--wait"):
            with workspace_lock(ws):
                pass
        started = time.monotonic()
        with pytest.raises(WorkspaceBusy):
            with workspace_lock(ws, wait_s=1.0, poll_s=0.1):
                pass
        assert time.monotonic() - started >= 1.0
        result = CliRunner().invoke(app, ["run", "-w", str(ws.root), "--only", "ingest"])
        assert result.exit_code == 2 and "is in use by pid" in result.output
        assert read_run_state(ws) is None  # the refused run wrote nothing
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lock_holder(ws) is None  # the kernel released the flock of the killed holder
    with workspace_lock(ws, wait_s=0):
        holder = lock_holder(ws)
        assert holder is not None and holder.pid == os.getpid()


def test_waiting_run_proceeds_when_the_holder_finishes(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    proc = _holder(ws.root)
    subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {proc.pid}"])
    started = time.monotonic()
    with workspace_lock(ws, wait_s=30, poll_s=0.1):
        waited = time.monotonic() - started
    proc.wait()
    assert 0.5 < waited < 30


def test_status_command_prints_stages_and_cells(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    run_pipeline(Config(), ws, [Stage.INGEST, Stage.EXTRACT], runners=Recorder().runners())
    (ws.stage_record_path("generate").with_suffix("") / "base--m").mkdir(parents=True)
    ws.record_stage("generate/base--m/unsafe", "k", [], {})
    result = CliRunner().invoke(app, ["status", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "ingest" in result.output and "done" in result.output and "pending" in result.output
    assert "base--m" in result.output and "unsafe" in result.output
    missing = CliRunner().invoke(app, ["status", "-w", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no workspace" in missing.output


def test_run_takes_the_config_as_argument_or_option_not_two(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("subsets: {min_pairs: 3}\n")
    b.write_text("subsets: {min_pairs: 4}\n")
    result = CliRunner().invoke(app, ["run", str(a), "-c", str(b), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 2 and "two configs given" in result.output
    bad = CliRunner().invoke(app, ["run", "-c", str(a), "-w", str(tmp_path / "ws"), "--only", "trian"])
    assert bad.exit_code == 2 and "unknown stage 'trian'" in bad.output
