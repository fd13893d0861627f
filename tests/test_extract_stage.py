"""The extract stage and the runner with the fake extractor: outputs, dedupe, cache reuse, resume, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from valind.cache import Cache
from valind.cli import app
from valind.config import validate_config
from valind.errors import StageFailed
from valind.extract import Item
from valind.extract.fake import FakeExtractor
from valind.extract.runner import run_extraction
from valind.extract.stage import extractor_id, run_extract
from valind.ingest import run_ingest
from valind.values import load_vocabulary
from valind.workspace import Workspace, read_json

VOCAB = load_vocabulary()
PAIRS = [
    {"prompt": "My cat died.", "chosen": "I'm sorry, that shows real empathy from me.", "rejected": "Cats die."},
    {"prompt": "Tell a joke", "chosen": "Here is some humor for you.", "rejected": "No."},
    {"prompt": "Again?", "chosen": "Here is some humor for you.", "rejected": "Still no."},  # repeated chosen text
]


def config(tmp_path: Path, **extract: Any) -> Any:
    return validate_config({"cache_dir": str(tmp_path / "cache"), "ingest": {"sources": [
        {"path": str(tmp_path / "pairs.jsonl"), "adapter": "generic", "name": "p"}]}, "extract": {"extractor": "fake", **extract}})


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    ws = Workspace(tmp_path / "ws")
    run_ingest(config(tmp_path), ws)
    return ws


def test_outputs_map_pairs_to_unique_responses(tmp_path: Path, ws: Workspace) -> None:
    cfg = config(tmp_path)
    result = run_extract(cfg, ws)
    rep = result.report
    assert (rep["responses"], rep["unique_responses"], rep["model_calls"]) == (6, 5, 5)  # the repeated text once
    out = ws.extract_dir(extractor_id(cfg.extract))
    values = {r["response_id"]: r for r in pq.read_table(out / "values.parquet").to_pylist()}
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert len(pairs) == 3
    by_prompt_order = [values[p["chosen_id"]]["values"] for p in pairs]
    assert sorted(map(tuple, by_prompt_order)) == sorted([("empathy",), ("humor",), ("humor",)])
    assert pairs[1]["chosen_id"] == pairs[2]["chosen_id"]
    assert all(values[p["rejected_id"]]["values"] == [] for p in pairs)
    assert all(v["status"] == "ok" for v in values.values())


def test_rerun_is_skipped_and_a_fresh_stage_reuses_the_cache(tmp_path: Path, ws: Workspace) -> None:
    cfg = config(tmp_path)
    run_extract(cfg, ws)
    assert run_extract(cfg, ws).skipped
    ws.clear_stage(f"extract/{extractor_id(cfg.extract)}")
    again = run_extract(cfg, ws)
    assert not again.skipped and again.report["model_calls"] == 0 and again.report["reused_from_cache"] == 5


def test_extractor_id_changes_only_with_output_settings(tmp_path: Path) -> None:
    base = config(tmp_path).extract
    assert extractor_id(base) == extractor_id(config(tmp_path, batch_size=7, concurrency=3).extract)
    assert extractor_id(base) != extractor_id(config(tmp_path, mode="open").extract)
    assert extractor_id(base).startswith("fake-")


class Interrupting(FakeExtractor):
    """Dies (like a killed process) after ``after`` batches."""

    def __init__(self, after: int) -> None:
        super().__init__(VOCAB)
        self.after = after
        self.batches = 0

    def extract(self, items):  # type: ignore[no-untyped-def]
        if self.batches == self.after:
            raise KeyboardInterrupt
        self.batches += 1
        return super().extract(items)


def test_interrupted_run_resumes_without_repeating_calls(tmp_path: Path) -> None:
    items = [Item([], f"response {i} with humor" if i % 3 == 0 else f"response {i}") for i in range(50)]
    with Cache(tmp_path / "c.sqlite") as cache:
        dying = Interrupting(after=3)
        with pytest.raises(KeyboardInterrupt):
            run_extraction(dying, items, cache, batch_size=10)
        assert dying.calls == 30
        fresh = FakeExtractor(VOCAB)
        results, ids, stats = run_extraction(fresh, items, cache, batch_size=10)
    assert (stats.reused, stats.computed, fresh.calls) == (30, 20, 20)  # nothing repeated
    assert [results[i].values for i in ids] == [("humor",) if i % 3 == 0 else () for i in range(50)]  # nothing lost


def test_failures_are_kept_counted_never_cached(tmp_path: Path) -> None:
    items = [Item([], "fine"), Item([], "this will BREAK"), Item([], "also fine")]
    with Cache(tmp_path / "c.sqlite") as cache:
        results, ids, stats = run_extraction(FakeExtractor(VOCAB, fail_on="BREAK"), items, cache, batch_size=2)
        assert stats.failed == {"error": 1} and not results[ids[1]].ok and results[ids[1]].error == "fake failure"
        healed = FakeExtractor(VOCAB)
        _, _, again = run_extraction(healed, items, cache, batch_size=2)
    assert (again.reused, again.computed) == (2, 1)  # only the failure is retried


def test_failure_threshold_stops_the_stage(tmp_path: Path, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import valind.extract.stage as stage

    monkeypatch.setattr(stage, "make_extractor", lambda cfg, vocab, cache_dir: FakeExtractor(vocab, fail_on="humor"))
    with pytest.raises(StageFailed, match="failed"):
        run_extract(config(tmp_path, max_failure_fraction=0.1), ws)
    out = ws.extract_dir(extractor_id(config(tmp_path).extract))
    statuses = pq.read_table(out / "values.parquet")["status"].to_pylist()
    assert statuses.count("error") == 1  # the failure is written with its status, for inspection
    run_extract(config(tmp_path, max_failure_fraction=0.5), ws)  # within the threshold it completes


def test_extract_needs_ingest_first(tmp_path: Path) -> None:
    from valind.errors import ValindError

    with pytest.raises(ValindError, match="valind ingest"):
        run_extract(config(tmp_path), Workspace(tmp_path / "empty"))


def test_extract_cli_reuses_workspace_config(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    runner = CliRunner()
    env = {"VALIND_CACHE": str(tmp_path / "cache")}
    assert runner.invoke(app, ["ingest", str(tmp_path / "pairs.jsonl"), "-w", str(tmp_path / "ws"), "-a", "generic"], env=env).exit_code == 0
    result = runner.invoke(app, ["extract", "-w", str(tmp_path / "ws"), "-e", "fake"], env=env)
    assert result.exit_code == 0, result.output
    assert "responses per value: empathy 1, humor 1" in result.output  # counted over unique responses
    manifest = read_json(tmp_path / "ws" / "manifest.json")
    assert manifest["config"]["ingest"]["sources"][0]["adapter"] == "generic"  # the ingest config is kept
    assert manifest["config"]["extract"]["extractor"] == "fake"


def test_score_values_keeps_order_and_reports_bad_lines(tmp_path: Path) -> None:
    env = {"VALIND_CACHE": str(tmp_path / "cache")}
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 1, "response": "pure humor here"},
        {"id": 2, "response": "plain", "prompt": [{"role": "user", "content": "hi"}]},
        {"id": 3, "prompt": "no response field"},
        {"id": 4, "response": "privacy matters", "prompt": "q"},
    ])
    runner = CliRunner()
    strict = runner.invoke(app, ["score", "values", str(src), "-o", str(tmp_path / "out.jsonl"), "-e", "fake"], env=env)
    assert strict.exit_code == 2 and "line 3" in strict.output and "'response'" in strict.output
    assert not (tmp_path / "out.jsonl").exists()
    ok = runner.invoke(app, ["score", "values", str(src), "-o", str(tmp_path / "out.jsonl"), "-e", "fake", "--lenient"], env=env)
    assert ok.exit_code == 0, ok.output
    rows = [orjson.loads(l) for l in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [r.get("id") for r in rows] == [1, 2, None, 4]
    assert rows[0]["values"] == ["humor"] and rows[0]["value_scores"] == {"humor": 1.0}
    assert rows[1]["values"] == [] and rows[3]["values"] == ["privacy"]
    assert "line 3" in rows[2]["error"]


_KILLED_WORKER = """
import sys, time
from pathlib import Path
from valind.cache import Cache
from valind.extract import Item
from valind.extract.fake import FakeExtractor
from valind.extract.runner import run_extraction
from valind.values import load_vocabulary

class Slow(FakeExtractor):
    def extract(self, items):
        out = super().extract(items)
        print("batch", flush=True)  # the parent kills us after a few of these
        time.sleep(0.2)
        return out

items = [Item([], f"response {i} with humor" if i % 3 == 0 else f"response {i}") for i in range(60)]
with Cache(Path(sys.argv[1])) as cache:
    run_extraction(Slow(load_vocabulary()), items, cache, batch_size=5)
print("finished", flush=True)
"""


def test_process_killed_mid_run_resumes_with_nothing_lost_or_repeated(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    db = tmp_path / "calls.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WORKER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(4):
        assert proc.stdout.readline().strip() == "batch"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Cache(db) as cache:
        done = cache.count("extract")
        assert 15 <= done < 60 and done % 5 == 0  # whole batches only
        items = [Item([], f"response {i} with humor" if i % 3 == 0 else f"response {i}") for i in range(60)]
        resumed = FakeExtractor(VOCAB)
        results, ids, stats = run_extraction(resumed, items, cache, batch_size=5)
        assert (stats.reused, stats.computed, resumed.calls) == (done, 60 - done, 60 - done)
        assert cache.count("extract") == 60
    assert [results[i].values for i in ids] == [("humor",) if i % 3 == 0 else () for i in range(60)]
