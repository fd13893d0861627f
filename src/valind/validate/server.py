"""The human annotation page: a small local web server for one annotator.

``AnnotationServer(ws, annotator)`` serves, on 127.0.0.1 by default, a self-contained page
(``valind/data/validate/page.html``: no network, no external files) and a JSON API:

=========================  ==================================================================
``GET /``                  the page
``GET /api/state``         the tasks as the annotator sees them (id, conversation, response,
                           options with definitions; never the target or the extractor's
                           values) and this annotator's latest answers
``POST /api/answer``       ``{"task_id", "choice", "key", "seconds"}``: one answer, appended to
                           ``validate/answers/<annotator>.jsonl`` and fsynced before the reply
``GET /api/export``        the latest answer per task, as a JSONL download
=========================  ==================================================================

Security: every request must carry the session token (``?token=`` or the ``X-Valind-Token``
header), a random 192-bit string printed once in the URL; without it the answer is 403, whatever
the path or method. The server reads the task file and writes this annotator's answers file, both
under ``validate/``, and nothing else (the page is read from the package once at start); the
annotator name is checked to be a plain name (``valind.workspace.annotator_name``). Responses
carry a Content-Security-Policy that allows only the page's own inline script and style (by
nonce) and requests to itself. Request lines are not logged (they hold the token).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from valind.errors import ValindError
from valind.validate.answers import (
    Answer,
    AnswerStatus,
    Kind,
    append_answer,
    now,
    read_answers,
)
from valind.validate.tasks import read_tasks
from valind.workspace import Workspace, annotator_name

DEFAULT_HOST = "127.0.0.1"
MAX_BODY = 16_384  # bytes; an answer is about 100
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def page_template() -> str:
    return files("valind").joinpath("data/validate/page.html").read_text(encoding="utf-8")


class AnnotationServer:
    """One annotator's page and API over a workspace's tasks (see the module docstring)."""

    def __init__(self, ws: Workspace, annotator: str, host: str = DEFAULT_HOST, port: int = 0, token: str | None = None) -> None:
        self.annotator = annotator_name(annotator)
        self.path = ws.validate_answers(self.annotator)
        self.tasks = read_tasks(ws)
        self.by_id = self.tasks.by_id
        self.latest: dict[str, Answer] = {}
        if self.path.is_file():
            earlier = read_answers(self.path)
            if earlier.kind != Kind.HUMAN:
                raise ValindError(f"{self.path} holds an {earlier.kind} annotator's answers; choose another name")
            self.latest = dict(earlier.latest)
        self.token = token or secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._page = page_template()
        self.httpd = _Server((host, port), _Handler, self)
        self.host = host

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> threading.Thread:
        """Serve from a daemon thread (tests, notebooks); ``stop()`` ends it."""
        thread = threading.Thread(target=self.serve_forever, name="valind-annotation", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- what the API does
    def state(self) -> dict[str, Any]:
        defs = self.tasks.definitions
        public = [{"task_id": t.task_id, "prompt": t.prompt, "response": t.response,
                   "options": [{"value": o, "definition": defs.get(o, "")} for o in t.options]} for t in self.tasks.tasks]
        with self._lock:
            answers = {tid: {"choice": a.choice, "letter": a.letter} for tid, a in self.latest.items() if tid in self.by_id and a.ok}
        return {"annotator": self.annotator, "n": len(public), "tasks": public, "answers": answers}

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self.by_id.get(body.get("task_id"))  # type: ignore[arg-type]
        choice = body.get("choice")
        if task is None or not isinstance(choice, str) or choice not in task.options:
            raise _BadRequest("task_id must name a task and choice one of its options")
        seconds = body.get("seconds")
        seconds = round(float(seconds), 2) if isinstance(seconds, (int, float)) and 0 <= seconds < 86_400 else None
        key = body.get("key")
        answer = Answer(task_id=task.task_id, annotator=self.annotator, kind=Kind.HUMAN.value, status=AnswerStatus.OK.value,
                        choice=choice, letter=task.letter(choice), raw=str(key)[:16] if key is not None else None,
                        error=None, at=now(), seconds=seconds, tasks_hash=self.tasks.tasks_hash)
        with self._lock:
            append_answer(self.path, answer)
            self.latest[task.task_id] = answer
            answered = sum(1 for tid, a in self.latest.items() if tid in self.by_id and a.ok)
        return {"saved": True, "answered": answered, "n": len(self.by_id)}

    def export(self) -> bytes:
        with self._lock:
            rows = [a.to_json() for a in self.latest.values() if a.task_id in self.by_id]
        return b"".join(orjson.dumps(r) + b"\n" for r in rows)

    def page(self, nonce: str) -> bytes:
        return self._page.replace("{{NONCE}}", nonce).encode("utf-8")


class _BadRequest(ValueError):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: AnnotationServer) -> None:
        self.app = app
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "valind"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return None  # request lines hold the token

    # every method goes through the token check first
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def _handle(self, method: str) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        given = parse_qs(url.query).get("token", [""])[0] or self.headers.get("X-Valind-Token", "")
        if not hmac.compare_digest(given.encode(), app.token.encode()):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: this page needs the token printed with its URL\n", "text/plain")
            return
        route = (method, url.path)
        try:
            if route == ("GET", "/"):
                nonce = secrets.token_urlsafe(16)
                self._send(HTTPStatus.OK, app.page(nonce), "text/html; charset=utf-8", nonce=nonce)
            elif route == ("GET", "/api/state"):
                self._json(HTTPStatus.OK, app.state())
            elif route == ("POST", "/api/answer"):
                self._json(HTTPStatus.OK, app.answer(self._body()))
            elif route == ("GET", "/api/export"):
                disposition = f'attachment; filename="{app.annotator}-answers.jsonl"'
                self._send(HTTPStatus.OK, app.export(), "application/x-ndjson", extra={"Content-Disposition": disposition})
            elif url.path in ("/", "/api/state", "/api/answer", "/api/export"):
                self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n", "text/plain")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        except _BadRequest as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

    def _body(self) -> dict[str, Any]:
        if self.headers.get_content_type() != "application/json":
            raise _BadRequest("send application/json")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadRequest("bad Content-Length") from None
        if not 0 < length <= MAX_BODY:
            raise _BadRequest(f"body must be 1-{MAX_BODY} bytes")
        try:
            body = orjson.loads(self.rfile.read(length))
        except orjson.JSONDecodeError:
            raise _BadRequest("body is not JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest("body must be a JSON object")
        return body

    def _json(self, status: HTTPStatus, obj: Any) -> None:
        self._send(status, orjson.dumps(obj), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, nonce: str | None = None,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        scripts = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header("Content-Security-Policy", f"default-src 'none'; script-src {scripts}; style-src {scripts}; "
                         "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
