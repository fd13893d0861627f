"""The human annotation page: the server's security, its API, and a real headless Chromium round trip."""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from browser import chromium_page
from test_validate import make_workspace

from valind.config import Config
from valind.errors import ValindError
from valind.validate import FakeAnnotator, build_tasks, read_tasks, run_annotator
from valind.validate.answers import read_answers
from valind.validate.server import AnnotationServer
from valind.workspace import Workspace

HOSTILE = "<b>bold</b> & <img src=x onerror=\"document.title='pwned'\"> <script>document.title='pwned'</script> reply {v} #{i}"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = make_workspace(tmp_path / "ws", response=HOSTILE)
    build_tasks(Config(), ws, per_value=2, seed=0)
    return ws


@pytest.fixture
def server(ws: Workspace) -> Iterator[AnnotationServer]:
    srv = AnnotationServer(ws, "alice", port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def request(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    data = orjson.dumps(body) if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def base(server: AnnotationServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_every_request_without_the_token_is_refused(server: AnnotationServer) -> None:
    root = base(server)
    for method, path in [("GET", "/"), ("GET", "/api/state"), ("GET", "/api/export"), ("GET", "/favicon.ico"),
                         ("POST", "/api/answer"), ("PUT", "/"), ("DELETE", "/api/answer"), ("HEAD", "/"), ("OPTIONS", "/")]:
        body = {"task_id": "x", "choice": "y"} if method == "POST" else None
        assert request(root + path, method, body)[0] == 403, (method, path)
        assert request(root + path + "?token=wrong", method, body)[0] == 403, (method, path)
    assert not server.path.exists()  # nothing was written
    status, page, headers = request(server.url)
    assert status == 200 and b"Which value does this response express?" in page
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert request(root + "/api/state", headers={"X-Valind-Token": server.token})[0] == 200


def test_binds_to_loopback_by_default_and_serves_nothing_else(server: AnnotationServer, ws: Workspace) -> None:
    assert server.httpd.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    token = f"?token={server.token}"
    for path in ("/tasks.jsonl", "/validate/tasks.jsonl", "/../tasks_report.json", "/%2e%2e/%2e%2e/etc/passwd",
                 "/api/../../manifest.json", "/page.html", "/api/answers/alice.jsonl"):
        status, body, _ = request(base(server) + path + token)
        assert status == 404 and b"task_id" not in body, path
    assert request(base(server) + "/api/state" + token, "POST", {"x": 1})[0] == 405


def test_api_hides_targets_checks_answers_and_appends(server: AnnotationServer, ws: Workspace) -> None:
    token = f"?token={server.token}"
    status, body, _ = request(base(server) + "/api/state" + token)
    state = orjson.loads(body)
    tasks = read_tasks(ws).tasks
    assert status == 200 and state["n"] == len(tasks) and state["answers"] == {} and state["annotator"] == "alice"
    assert set(state["tasks"][0]) == {"task_id", "prompt", "response", "options"}  # no target, no extractor values
    assert b"target" not in body and b"found" not in body
    first = tasks[0]
    for bad in ({"task_id": first.task_id, "choice": "not an option"}, {"task_id": "nope", "choice": first.options[0]}, [1, 2]):
        assert request(base(server) + "/api/answer" + token, "POST", bad)[0] == 400
    assert request(base(server) + "/api/answer" + token, "POST", b"{not json")[0] == 400
    assert request(base(server) + "/api/answer" + token, "POST", {"task_id": first.task_id, "choice": first.options[0]},
                   headers={"Content-Type": "text/plain"})[0] == 400
    assert not server.path.exists()
    for choice in (first.options[0], first.options[2]):
        status, body, _ = request(base(server) + "/api/answer" + token, "POST",
                                  {"task_id": first.task_id, "choice": choice, "key": "1", "seconds": 3.25})
        assert status == 200 and orjson.loads(body) == {"saved": True, "answered": 1, "n": len(tasks)}
    saved = read_answers(server.path)
    assert saved.lines == 2 and saved.kind == "human"
    latest = saved.latest[first.task_id]
    assert (latest.choice, latest.letter, latest.seconds) == (first.options[2], "C", 3.25)  # the later answer wins
    status, body, headers = request(base(server) + "/api/export" + token)
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    assert [orjson.loads(l)["choice"] for l in body.splitlines()] == [first.options[2]]


def test_refuses_path_like_names_and_machine_answer_files(ws: Workspace) -> None:
    for bad in ("../evil", "a/b", "..", "/tmp/x"):
        with pytest.raises(ValindError, match="annotator name"):
            AnnotationServer(ws, bad, port=0)
    assert not (ws.root / "evil.jsonl").exists() and not (ws.validate_dir / "evil.jsonl").exists()
    run_annotator(ws, FakeAnnotator(), "robot")
    with pytest.raises(ValindError, match="llm annotator"):
        AnnotationServer(ws, "robot", port=0)


def _progress(page: Any) -> str:
    return page.locator("#progress").inner_text()


def _wait_progress(page: Any, pattern: str) -> None:
    page.wait_for_function("p => new RegExp(p).test(document.getElementById('progress').textContent)", arg=pattern, timeout=10_000)


def test_browser_round_trip(server: AnnotationServer, ws: Workspace, tmp_path: Path) -> None:
    tasks = read_tasks(ws).tasks
    n = len(tasks)
    with chromium_page(tmp_path / "profile") as (page, log):
        page.goto(server.url)
        _wait_progress(page, f"^Task 1 of {n} · 0 of {n} answered$")
        # model text is shown as text: the markup in it is neither parsed nor run
        assert "<b>bold</b>" in page.locator("#response").inner_text()
        assert page.locator("#response b, #response img, #response script").count() == 0
        assert page.title() != "pwned"
        for k, key in enumerate(["1", "b", "3"]):
            assert page.locator("#options button").count() == 4
            page.keyboard.press(key)
            _wait_progress(page, f"^Task {k + 2} of {n} · {k + 1} of {n} answered$")
        page.keyboard.press("ArrowLeft")  # back to task 3, answered with "3"
        _wait_progress(page, f"^Task 3 of {n} · 3 of {n} answered$")
        assert page.locator("#options button.picked").get_attribute("data-index") == "2"
        page.keyboard.press("4")  # change it
        _wait_progress(page, f"^Task 4 of {n} · 3 of {n} answered$")
        page.keyboard.press("Control+a")  # a shortcut with a modifier is not an answer
        time.sleep(0.3)
        assert _progress(page) == f"Task 4 of {n} · 3 of {n} answered"
        page.reload()  # resumes at the first unanswered task
        _wait_progress(page, f"^Task 4 of {n} · 3 of {n} answered$")
        page.keyboard.press("ArrowLeft")
        _wait_progress(page, f"^Task 3 of {n}")
        assert page.locator("#options button.picked").get_attribute("data-index") == "3"
        page.keyboard.press("ArrowRight")
        page.locator("#options button").nth(1).click()  # answering by mouse works too
        _wait_progress(page, f"^Task 5 of {n} · 4 of {n} answered$")
        href = page.locator("#export").get_attribute("href")
        assert href == f"/api/export?token={server.token}"
        shot = tmp_path / "validate-page.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("VALIND_TEST_ARTEFACTS"):
            target = Path(os.environ["VALIND_TEST_ARTEFACTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, target / shot.name)
        assert log.problems == []
    saved = read_answers(server.path)
    assert saved.lines == 5 and len(saved.latest) == 4
    letters = [saved.latest[t.task_id].letter for t in tasks[:4]]
    assert letters == ["A", "B", "D", "B"]
    assert [a.raw for a in saved.latest.values()] == ["1", "b", "4", "click"]
    assert all(a.seconds is not None and a.seconds >= 0 for a in saved.latest.values())
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", server.token)
