"""Crash and resume: the pipeline killed with SIGKILL inside each stage, then run again, ends exactly
where an uninterrupted run ends.

Kill points come from ``valind.faults`` (``VALIND_FAULT_KILL_AT=TARGET:N``): after a batch of model
results is committed to the cache, after a Parquet row group is handed to the writer (the output is
half written), and after an output's temporary file is complete but before it is renamed. After
every kill the test checks that no file at a final path is partial and no stage record vouches for
a damaged file; after the resume, that outputs equal the uninterrupted run's (subset files byte for
byte; generations, metrics and judgements value for value, greedy decoding) and that no model call
whose result was already cached was made again (an entry's ``created_at`` only changes when its
call is repeated: failures are never cached and results are written once).

- quick (default): ingest, extract, subsets, generate, evaluate with the fake extractor and the fake
  generation backend, driven through ``run_pipeline`` (what ``valind run`` calls) in a subprocess;
  one kill per stage, each from a fresh workspace and cache.
- slow: ``valind run`` itself, the whole chain with training, killed once inside every stage in a
  row (each resume is killed in the next stage) and finally resumed to the end: on a tiny model, and
  on the demo config (``VALIND_CRASH_DEMO=1``; about two demo runs of time).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import yaml

from valind.workspace import Workspace, read_json

ROOT = Path(__file__).resolve().parents[1]
DEMO_PAIRS = ROOT / "src" / "valind" / "data" / "demo" / "pairs.jsonl"
QUICK_STAGES = ["ingest", "extract", "subsets", "generate", "evaluate"]
DRIVER = """
import sys
from valind.config import load_config
from valind.pipeline import Stage, run_pipeline
from valind.workspace import Workspace
run_pipeline(load_config(sys.argv[1]), Workspace(sys.argv[2]), [Stage(s) for s in sys.argv[3:]])
"""
# one kill point inside each quick stage (what the fault point passes through, the n-th time)
QUICK_KILLS = {
    "ingest": "ingest@demo:2",  # 240 pairs in row groups of 50: the output is half written
    "extract": "cache@extract:3",  # 3 of 12 batches of 40 responses cached
    "subsets": "write@/subsets/:3",  # the third subset file complete, not yet renamed
    "generate": "cache@generate:2",  # 2 of 6 batches of answers cached
    "evaluate": "write@/evaluate/:1",  # the first metrics file complete, not yet renamed
}


def quick_config(tmp: Path, tiny: str, cache_dir: bool = True) -> Path:
    """The demo pairs with the fake extractor and generation backend; ``cache_dir`` False: $VALIND_CACHE decides."""
    cfg: dict[str, Any] = {
        "ingest": {"sources": [{"name": "demo", "path": str(DEMO_PAIRS), "adapter": "generic",
                                "options": {"meta": ["value", "side"]}}], "strict": True, "row_group_size": 50},
        "extract": {"extractor": "fake", "batch_size": 40},
        "subsets": {"min_pairs": 3},
        "train": {"models": [tiny], "values": ["empathy", "humor"], "methods": ["dpo+system"], "max_steps": 2,
                  "per_device_batch_size": 2, "max_length": 128},
        "generate": {"backend": "fake", "max_prompts_per_suite": 8, "max_new_tokens": 16, "batch_size": 4},
        "evaluate": {"qa_tasks": [], "n_boot": 100},
    }
    if cache_dir:
        cfg["cache_dir"] = str(tmp / "cache")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- running and killing


@dataclass
class Scenario:
    """One workspace and cache, run until a run ends normally; what every run did."""

    root: Path
    command: list[str]  # without the kill; run in ROOT
    kills: list[str] = field(default_factory=list)  # the kill targets that fired
    repeated: int = 0  # cached model calls made again
    checks: int = 0  # post-kill consistency checks passed

    @property
    def ws(self) -> Workspace:
        return Workspace(self.root / "ws")

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def run(self, kill_at: str | None = None, timeout: float = 3600) -> None:
        env = {**os.environ, "VALIND_CACHE": str(self.cache_dir)}
        env.pop("VALIND_FAULT_KILL_AT", None)
        if kill_at:
            env["VALIND_FAULT_KILL_AT"] = kill_at
        before = cache_entries(self.cache_dir)
        done = subprocess.run(self.command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        self.repeated += sum(1 for k, t in cache_entries(self.cache_dir).items() if k in before and before[k] != t)
        if kill_at:
            assert done.returncode == -signal.SIGKILL, f"kill point {kill_at} not reached (rc {done.returncode}):\n{done.stderr[-3000:]}"
            self.kills.append(kill_at)
            self.checks += check_nothing_partial(self.ws)
        else:
            assert done.returncode == 0, done.stderr[-3000:]


def cache_entries(cache_dir: Path) -> dict[tuple[str, str], float]:
    """(namespace, key) -> created_at of every entry in the cache folder's SQLite files."""
    found: dict[tuple[str, str], float] = {}
    for path in cache_dir.glob("*.sqlite") if cache_dir.is_dir() else []:
        conn = sqlite3.connect(path)
        try:
            found.update(((ns, key), t) for ns, key, t in conn.execute("SELECT namespace, key, created_at FROM entries"))
        except sqlite3.OperationalError:  # killed before the table existed
            pass
        finally:
            conn.close()
    return found


def check_nothing_partial(ws: Workspace) -> int:
    """After a kill: every Parquet file at a final path reads completely, and every stage record's outputs
    are intact (a record never vouches for a file that is not the one written). Returns the checks made."""
    checks = 0
    for path in ws.root.rglob("*.parquet"):
        if not any(part.startswith(".") for part in path.relative_to(ws.root).parts):
            pq.read_table(path)
            checks += 1
    records = ws.root / ".valind" / "stages"
    for path in records.rglob("*.json") if records.is_dir() else []:
        stage = str(path.relative_to(records).with_suffix(""))
        record = ws.stage_record(stage)
        assert record is not None and ws.output_problems(record) == [], (stage, record)
        checks += 1
    return checks


# ---------------------------------------------------------------- comparing with the uninterrupted run


def table_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def outputs(ws: Workspace) -> dict[str, Any]:
    """What a run produced, in comparable form: subset files as bytes, the rest as values (no times, no paths)."""
    root = ws.root
    out: dict[str, Any] = {}
    for path in sorted((root / "subsets").glob("*")):
        out[f"subsets/{path.name}"] = path.read_bytes()
    for path in sorted((root / "extract").rglob("*.parquet")):
        out[str(path.relative_to(root))] = table_rows(path)
    for path in sorted((root / "generate").rglob("*.parquet")):
        out[str(path.relative_to(root))] = [{k: v for k, v in r.items()} for r in table_rows(path)]
    for path in sorted((root / "evaluate").rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".json":
            out[rel] = _strip(read_json(path), root.parent)  # the scenario folder: workspace and cache
        elif path.suffix == ".parquet":
            out[rel] = table_rows(path)
    for path in sorted((root / "train").rglob("adapter_model.safetensors")):
        out[str(path.relative_to(root))] = path.read_bytes()
    return out


def _strip(obj: Any, root: Path) -> Any:
    """JSON without timings and with the scenario's folder (workspace, cache) replaced, so two runs compare by content."""
    if isinstance(obj, dict):
        return {k: _strip(v, root) for k, v in obj.items() if k not in ("seconds", "finished_at", "started_at", "updated_at")}
    if isinstance(obj, list):
        return [_strip(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(root), "<root>")
    return obj


def assert_same_outputs(got: Workspace, want: Workspace) -> None:
    a, b = outputs(got), outputs(want)
    assert sorted(a) == sorted(b)
    for name in b:
        assert a[name] == b[name], f"{name} differs from the uninterrupted run"


def lost_items(ws: Workspace) -> int:
    """Responses or answers that did not end as a result: extraction failures and generation rows not ok."""
    lost = 0
    for path in (ws.root / "extract").rglob("values.parquet"):
        lost += sum(1 for r in table_rows(path) if r["status"] != "ok")
    for path in (ws.root / "generate").rglob("*.parquet"):
        lost += sum(1 for r in table_rows(path) if r["status"] != "ok")
    return lost


def leftover_temporaries(ws: Workspace) -> list[str]:
    return sorted(str(p.relative_to(ws.root)) for p in ws.root.rglob(".*.tmp"))


# ---------------------------------------------------------------- quick: the fast stages


@pytest.fixture(scope="module")
def quick_reference(tmp_path_factory: pytest.TempPathFactory, tiny: str) -> Scenario:
    root = tmp_path_factory.mktemp("reference")
    scenario = Scenario(root, [sys.executable, "-c", DRIVER, str(quick_config(root, tiny)), str(root / "ws"), *QUICK_STAGES])
    scenario.run()
    return scenario


@pytest.mark.parametrize("stage", list(QUICK_KILLS))
def test_killed_inside_a_stage_resumes_to_the_same_outputs(stage: str, tmp_path: Path, tiny: str, quick_reference: Scenario) -> None:
    scenario = Scenario(tmp_path, [sys.executable, "-c", DRIVER, str(quick_config(tmp_path, tiny)), str(tmp_path / "ws"), *QUICK_STAGES])
    scenario.run(kill_at=QUICK_KILLS[stage])
    state = read_json(scenario.ws.run_state)
    assert state["stages"][stage]["state"] == "running"  # it died inside this stage
    scenario.run()
    assert_same_outputs(scenario.ws, quick_reference.ws)
    assert scenario.repeated == 0
    assert lost_items(scenario.ws) == 0


def test_partial_output_is_never_at_its_final_path(tmp_path: Path, tiny: str) -> None:
    scenario = Scenario(tmp_path, [sys.executable, "-c", DRIVER, str(quick_config(tmp_path, tiny)), str(tmp_path / "ws"), "ingest"])
    scenario.run(kill_at="ingest@demo:3")
    assert not scenario.ws.ingest_file("demo").exists()
    partial = [p for p in (scenario.ws.root / "ingest").iterdir() if p.name.startswith(".demo.parquet.")]
    assert len(partial) == 1  # the half-written temporary file, which nothing reads
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's type varies: it is not a complete Parquet file
        pq.read_table(partial[0])
    assert scenario.ws.stage_record("ingest") is None
    scenario.run()  # the next write of the file removes what the killed process left
    assert pq.read_table(scenario.ws.ingest_file("demo")).num_rows == 240
    assert leftover_temporaries(scenario.ws) == []


# ---------------------------------------------------------------- slow: `valind run`, every stage in a row


# Kill targets, in order: each run is killed inside the next stage, so the chain passes through all of them.
FULL_KILLS = [
    "ingest@demo:2",  # half-written ingest output (row groups of 50)
    "cache@extract:2",  # after two batches of extractions are cached
    "write@/subsets/:2",  # the second subset file complete, not renamed
    "write@/DONE:2",  # the second training cell finished, its DONE marker not renamed
    "cache@generate:2",  # after two batches of answers are cached
    "write@/evaluate/:2",  # an evaluation file complete, not renamed
    "write@/report/:1",  # the first report file complete, not renamed
]


def run_chain(root: Path, config: Path, sets: list[str]) -> tuple[Scenario, Scenario]:
    """(the uninterrupted run, the run killed once inside every stage and resumed)."""
    def command(where: Path) -> list[str]:
        return [sys.executable, "-m", "valind", "run", str(config), "-w", str(where / "ws"),
                *(a for s in sets for a in ("--set", s))]

    reference = Scenario(root / "reference", command(root / "reference"))
    reference.cache_dir.mkdir(parents=True)
    reference.run()
    chain = Scenario(root / "chain", command(root / "chain"))
    chain.cache_dir.mkdir(parents=True)
    for target in FULL_KILLS:
        chain.run(kill_at=target)
    chain.run()
    return reference, chain


def check_chain(reference: Scenario, chain: Scenario) -> None:
    assert len(chain.kills) == len(FULL_KILLS) and chain.checks > 0
    assert_same_outputs(chain.ws, reference.ws)
    assert chain.repeated == 0
    assert lost_items(chain.ws) == 0


@pytest.mark.slow
def test_valind_run_killed_in_every_stage_on_a_tiny_model(tmp_path: Path, tiny: str) -> None:
    reference, chain = run_chain(tmp_path, quick_config(tmp_path, tiny, cache_dir=False), [])  # caches: $VALIND_CACHE
    check_chain(reference, chain)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VALIND_CRASH_DEMO"), reason="about two demo runs long; set VALIND_CRASH_DEMO=1")
def test_valind_run_killed_in_every_stage_on_the_demo_config(tmp_path: Path) -> None:
    from valind.config import demo_config_path

    # the demo config, with ingest row groups small enough that the kill lands mid-file
    reference, chain = run_chain(tmp_path, demo_config_path(), ["ingest.row_group_size=50"])
    check_chain(reference, chain)
    print(orjson.dumps({"kills": chain.kills, "checks": chain.checks, "repeated": chain.repeated}).decode())
