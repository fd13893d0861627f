"""Both OpenAI-compatible clients (value extraction and generation) under a misbehaving server.

For every fault of tests/servers.py, once (transient) and for good (lasting): every item ends as a
result or as a counted failure, never lost or raised; retries are bounded by the documented
formula; memory stays flat over many items; and an interrupted stage (Ctrl-C) resumes without
asking the server again for anything it already answered.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from servers import Fault, FaultServer, fault_server_process
from valind.cache import Cache
from valind.config import ExtractConfig, validate_config
from valind.extract.base import Item, Status
from valind.extract.llm import CallFailed
from valind.extract.openai_backend import ChatClient, OpenAIExtractor
from valind.extract.stage import run_extract
from valind.generate.base import Completion, Decoding, GenerationRequest
from valind.generate.openai_backend import OpenAIGenerator
from valind.ingest import run_ingest
from valind.values import load_vocabulary
from valind.workspace import Workspace, read_json

VOCAB = load_vocabulary()
RETRIES = 2  # transport retries per request (request_retries)
REPAIRS = 1  # content retries per item (max_retries, extractor only)
TIMEOUT_S = 0.5
ALL_FAULTS = list(Fault)
RETRIED = {Fault.ERROR_500, Fault.RATE_LIMIT, Fault.HANG, Fault.DROP, Fault.ECHO_AUTH_500}  # the client sends again


def extractor(base_url: str, **kw: Any) -> OpenAIExtractor:
    cfg = ExtractConfig(extractor="openai", base_url=base_url, model="m", timeout_s=TIMEOUT_S, request_retries=RETRIES,
                        max_retries=REPAIRS, concurrency=4, api_key_env="VALIND_TEST_NO_KEY", **kw)
    return OpenAIExtractor.from_config(cfg, VOCAB, None, Path("unused"))


def generator(base_url: str, concurrency: int = 4) -> OpenAIGenerator:
    client = ChatClient(base_url=base_url, api_key="", concurrency=concurrency, timeout_s=TIMEOUT_S, request_retries=RETRIES)
    return OpenAIGenerator(client, "m", Decoding(max_new_tokens=16), {"model": "m"})


def items(n: int) -> list[Item]:
    return [Item([{"role": "user", "content": f"q{i}"}], f"answer {i}. VALUES=empathy") for i in range(n)]


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"prompt {i}. VALUES=humor"}]) for i in range(n)]


# --- every fault, transient and lasting, both clients


@pytest.mark.parametrize("fault", ALL_FAULTS, ids=[f.value for f in ALL_FAULTS])
@pytest.mark.parametrize("lasting", [False, True], ids=["once", "lasting"])
def test_extractor_accounts_for_every_item(fault: Fault, lasting: bool) -> None:
    n = 4
    with FaultServer(then=fault, hang_s=2) if lasting else FaultServer([fault], hang_s=2) as server:
        results = extractor(server.base_url).extract(items(n))
        sent = server.requests
    assert len(results) == n
    for r in results:
        assert r.status in (Status.OK, Status.ERROR, Status.PARSE_ERROR)
        if r.ok:
            assert r.values == ("empathy",)
        else:
            assert r.error and r.values == ()
    if not lasting:
        # a transient fault costs at most one item its result: one that cannot be retried (bad body, a 401)
        assert sum(not r.ok for r in results) <= (0 if fault in RETRIED or fault in (Fault.NOT_JSON, Fault.OK) else 1)
    assert sent <= n * (1 + RETRIES) * (1 + REPAIRS)  # the documented bound


@pytest.mark.parametrize("fault", ALL_FAULTS, ids=[f.value for f in ALL_FAULTS])
@pytest.mark.parametrize("lasting", [False, True], ids=["once", "lasting"])
def test_generator_accounts_for_every_request(fault: Fault, lasting: bool) -> None:
    n = 4
    with FaultServer(then=fault, hang_s=2) if lasting else FaultServer([fault], hang_s=2) as server:
        out = generator(server.base_url).generate(requests(n))
        sent = server.requests
    assert len(out) == n
    for answer in out:
        assert isinstance(answer, Completion | CallFailed)
        if isinstance(answer, CallFailed):
            assert str(answer).split(":")[0] in {"http 500", "http 429", "http 401", "timeout", "connection", "bad response", "no content"}
    failed = sum(isinstance(a, CallFailed) for a in out)
    if lasting and fault not in (Fault.OK, Fault.NOT_JSON):
        assert failed == n
    if not lasting:
        assert failed <= (0 if fault in RETRIED or fault in (Fault.NOT_JSON, Fault.OK) else 1)
    assert sent <= n * (1 + RETRIES)  # generation has no content retries


def test_a_rate_limit_asking_for_a_long_wait_fails_at_once() -> None:
    with FaultServer(then=Fault.RATE_LIMIT, retry_after="3600") as server:
        start = time.monotonic()
        out = generator(server.base_url).generate(requests(3))
        took = time.monotonic() - start
    assert all(isinstance(a, CallFailed) and str(a).startswith("http 429") for a in out)
    assert took < 10 and server.requests <= 3 * (1 + RETRIES)


def test_concurrency_is_bounded_under_slow_answers() -> None:
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow(body: dict[str, Any]) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return "ok"

    with FaultServer(answer=slow) as server:
        out = generator(server.base_url, concurrency=3).generate(requests(12))
    assert [a.text for a in out] == ["ok"] * 12  # type: ignore[union-attr]
    assert peak <= 3


# --- memory over many items


def small_blocks(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes held in blocks under 64 kB: what per-item objects are made of. A single big block (an event
    loop's or the interpreter's table being resized) comes and goes by the megabyte and is left out."""
    return sum(trace.size for trace in snapshot.traces if trace.size < 65_536)


def test_memory_stays_flat_over_many_items() -> None:
    """320 requests in 8 batches through one client, a fault every few requests. Over the last 160
    requests the Python heap grows by less than 50 kB, i.e. under 320 bytes a request: nothing that
    scales with the items is kept (a leaked reply or traceback would be kilobytes each). What grows at
    all is bounded caches filling (re, reprlib: measured to level off over 900 batches). Allocations
    made inside the test server's request handlers, which share this process, are left out."""
    faults = [Fault.ERROR_500, Fault.OK, Fault.OK, Fault.DROP, Fault.OK, Fault.BAD_BODY, Fault.OK, Fault.RATE_LIMIT]
    server_side = [tracemalloc.Filter(False, pattern) for pattern in ("*/http/server.py", "*/socketserver.py", "*/email/*",
                                                                       "*/tests/servers.py", tracemalloc.__file__)]
    gen = generator("http://placeholder", concurrency=8)
    sizes = []
    with FaultServer() as server:
        gen.client.base_url = server.base_url
        tracemalloc.start(1)
        try:
            for batch in range(8):
                server._script = list(faults) * 2
                out = gen.generate(requests(40))
                assert len(out) == 40 and sum(isinstance(a, CallFailed) for a in out) <= 4  # only the bad bodies
                server.received.clear()  # the test server's own record, not the client's memory
                del out
                if batch in (3, 7):
                    gc.collect()
                    sizes.append(small_blocks(tracemalloc.take_snapshot().filter_traces(server_side)))
        finally:
            tracemalloc.stop()
    print(f"client heap after 160 and 320 requests (bytes): {sizes}")
    assert sizes[1] - sizes[0] < 50_000, sizes


@pytest.mark.slow
def test_memory_levels_off_over_thousands_of_requests() -> None:
    """2,000 requests in 400 batches (each a new event loop and HTTP client) against a server in another
    process, so every traced byte is the client's: the heap in small blocks grows by less than 20 kB over
    the second half (about 5 kB measured)."""
    gen = generator("http://placeholder", concurrency=8)
    sizes = []
    with fault_server_process() as server:
        gen.client.base_url = server.base_url
        tracemalloc.start(1)
        try:
            for batch in range(400):
                assert len(gen.generate(requests(5))) == 5
                if batch in (199, 399):
                    gc.collect()
                    sizes.append(small_blocks(tracemalloc.take_snapshot()))
        finally:
            tracemalloc.stop()
    print(f"client heap in small blocks after 1,000 and 2,000 requests (bytes): {sizes}")
    assert sizes[1] - sizes[0] < 20_000, sizes


# --- Ctrl-C mid-stage leaves a resumable state


def _interrupt_after(n: int) -> Any:
    main = threading.main_thread().ident
    sent = threading.Event()

    def on_served(count: int) -> None:
        if count == n and not sent.is_set():
            sent.set()
            signal.pthread_kill(main, signal.SIGINT)  # what Ctrl-C does

    return on_served


def test_ctrl_c_in_the_extract_stage_resumes_without_repeating_calls(tmp_path: Path) -> None:
    pairs = [{"prompt": f"q{i}", "chosen": f"yes {i}. VALUES=empathy", "rejected": f"no {i}."} for i in range(30)]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    with FaultServer(delay_s=0.01) as server:
        cfg = validate_config({
            "cache_dir": str(tmp_path / "cache"),
            "ingest": {"sources": [{"path": str(tmp_path / "pairs.jsonl"), "adapter": "generic", "name": "p"}]},
            "extract": {"extractor": "openai", "base_url": server.base_url, "model": "m", "batch_size": 8,
                        "concurrency": 2, "timeout_s": 5, "request_retries": 1, "json_schema": False},
        })
        ws = Workspace(tmp_path / "ws")
        run_ingest(cfg, ws)
        server.on_served = _interrupt_after(20)
        with pytest.raises(KeyboardInterrupt):
            run_extract(cfg, ws)
        first = [r.user_text for r in server.received if r.user_text]  # a request cut before its body (Ctrl-C mid-send) asks nothing
        with Cache(tmp_path / "cache" / "calls.sqlite") as cache:
            cached = cache.count("extract")
        assert 0 < cached < 60 and not list((ws.root / ".valind" / "stages" / "extract").glob("*.json"))  # not finished
        server.on_served = None
        server.received.clear()
        result = run_extract(cfg, ws)
        second = [r.user_text for r in server.received if r.user_text]
    assert result.report["model_calls"] == 60 - cached == len(second)  # only what was not cached
    assert result.report["reused_from_cache"] == cached
    # asked twice: only what was in flight when Ctrl-C came (asked, not yet cached); nothing cached was asked again
    assert len(set(first) & set(second)) == len(set(first)) - cached
    values = pq.read_table(next((ws.root / "extract").rglob("values.parquet"))).to_pylist()
    assert len(values) == 60 and all(v["status"] == "ok" for v in values)
    assert sum(v["values"] == ["empathy"] for v in values) == 30


def test_ctrl_c_in_the_generate_stage_resumes_without_repeating_calls(tmp_path: Path) -> None:
    from valind.generate import run_generate

    with FaultServer(delay_s=0.01) as server:
        cfg = validate_config({
            "cache_dir": str(tmp_path / "cache"),
            "generate": {"backend": "openai", "base_url": server.base_url, "max_prompts_per_suite": 10, "batch_size": 4,
                         "concurrency": 2, "timeout_s": 5, "request_retries": 1, "suites": ["value_elicitation", "unsafe"]},
        })
        ws = Workspace(tmp_path / "ws")
        server.on_served = _interrupt_after(9)
        with pytest.raises(KeyboardInterrupt):
            run_generate(cfg, ws)
        with Cache(tmp_path / "cache" / "calls.sqlite") as cache:
            cached = cache.count("generate")
        first = [r.user_text for r in server.received if r.user_text]  # a request cut before its body (Ctrl-C mid-send) asks nothing
        server.on_served = None
        server.received.clear()
        result = run_generate(cfg, ws)
        second = [r.user_text for r in server.received if r.user_text]
    summary = result.summary()
    assert 0 < cached < 20
    assert summary["model_calls"] == 20 - cached == len(second) and summary["reused_from_cache"] == cached
    assert summary["failed"] == 0 and summary["rows"] == 20
    assert len(set(first) & set(second)) == len(set(first)) - cached  # only in-flight requests were asked again
    assert len(set(first) | set(second)) == 20
    for path in (ws.root / "generate").rglob("*.parquet"):
        assert all(r["status"] == "ok" for r in pq.read_table(path).to_pylist())
    assert "generate" in orjson.loads(ws.manifest.read_bytes())["stages"] and read_json(ws.manifest)
