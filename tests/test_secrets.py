"""API keys come only from environment variables and are written nowhere.

A sentinel key in the variable that ``api_key_env`` names goes to a local OpenAI-compatible server
(tests/servers.py, which sees it and, on purpose, echoes it back in error bodies) through the
extractor and the generation backend. Afterwards the key is in no file of the workspace or the cache
folder, in no output or log line, in no error message: after a normal run, after the server refuses
the key (HTTP 401 echoing it), and when a config puts the key where it does not belong.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from conftest import write_jsonl
from servers import Fault, FaultServer
from valind.cli import app
from valind.workspace import Workspace

SENTINEL = "sk-valind-SENTINEL-123"
KEY_ENV = "VALIND_TEST_SENTINEL_KEY"
PAIRS = [{"prompt": f"question {i}", "chosen": f"kind answer {i}. VALUES=empathy", "rejected": f"rude answer {i}."}
         for i in range(12)]


def leaks(*roots: Path) -> list[str]:
    """Files under ``roots`` holding the key (or its distinctive part), in any of the encodings a file could use."""
    needles = [SENTINEL.encode(), b"SENTINEL-123", SENTINEL.encode("utf-16-le")]
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            if path.is_file() and any(n in path.read_bytes() for n in needles):
                found.append(str(path))
    return found


def write_config(tmp_path: Path, base_url: str, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "cache_dir": str(tmp_path / "cache"),
        "ingest": {"sources": [{"path": str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS)), "adapter": "generic", "name": "p"}]},
        "extract": {"extractor": "openai", "base_url": base_url, "model": "smollm2", "api_key_env": KEY_ENV,
                    "timeout_s": 5, "request_retries": 1, "json_schema": False, "max_failure_fraction": 0.0},
        "generate": {"backend": "openai", "base_url": base_url, "api_key_env": KEY_ENV, "max_prompts_per_suite": 3,
                     "timeout_s": 5, "request_retries": 1, "suites": ["value_elicitation", "unsafe", "safe_sensitive"]},
        "evaluate": {"qa_tasks": [], "n_boot": 100},
    }
    for dotted, value in extra.items():
        section, _, field = dotted.partition("__")
        cfg[section][field] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    yield SENTINEL


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_full_run_writes_the_key_nowhere(tmp_path: Path, key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every library's debug log too (openai, httpx)
    ws = str(tmp_path / "ws")
    with FaultServer() as server:
        config = str(write_config(tmp_path, server.base_url))
        outputs = [invoke(command, "-w", ws, "-c", config) for command in ("ingest", "extract", "generate", "evaluate", "report")]
        auths = {r.authorization for r in server.received}
    assert [r.exit_code for r in outputs] == [0] * 5, [r.output[-2000:] for r in outputs]
    assert auths == {f"Bearer {key}"}  # the server did get the key, from the environment
    assert (tmp_path / "ws" / "report" / "index.html").is_file()
    assert leaks(tmp_path / "ws", tmp_path / "cache") == []
    for r in outputs:
        assert key not in r.output and "SENTINEL" not in r.output
    assert key not in caplog.text


def test_a_refused_key_echoed_by_the_server_is_in_no_error(tmp_path: Path, key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ws = str(tmp_path / "ws")
    with FaultServer(then=Fault.ECHO_AUTH_401) as server:
        config = str(write_config(tmp_path, server.base_url))
        assert invoke("ingest", "-w", ws, "-c", config).exit_code == 0
        result = invoke("extract", "-w", ws, "-c", config)
        echoed = [r for r in server.received if key in r.authorization]
    assert echoed and result.exit_code == 2
    message = " ".join(result.output.split())
    assert "responses failed" in message and "Traceback" not in result.output
    assert key not in result.output and "SENTINEL" not in result.output
    assert key not in caplog.text
    assert leaks(tmp_path / "ws", tmp_path / "cache") == []
    values = next((tmp_path / "ws" / "extract").rglob("values.parquet"))
    import pyarrow.parquet as pq

    errors = pq.read_table(values).column("error").to_pylist()
    assert all(e.startswith("http 401") and "***" in e for e in errors)  # the echo is kept, scrubbed


@pytest.mark.parametrize(
    ("where", "extra", "args"),
    [
        ("api_key in a section", {"extract__api_key": SENTINEL}, []),
        ("api_key in generate", {"generate__api_key": SENTINEL}, []),
        ("token in a section", {"extract__token": SENTINEL}, []),
        ("the key as the variable name", {"extract__api_key_env": SENTINEL}, []),
        ("the key as the generate variable name", {"generate__api_key_env": SENTINEL}, []),
        ("the key in the URL", {"extract__base_url": f"http://user:{SENTINEL}@127.0.0.1:9/v1"}, []),
        ("the key in a URL query", {"generate__base_url": f"http://127.0.0.1:9/v1?api_key={SENTINEL}"}, []),
        ("the key in an override", {}, ["--set", f"extract.api_key={SENTINEL}"]),
        ("the key as an override", {}, ["--set", SENTINEL]),
        ("the key as the variable name in an override", {}, ["--set", f"extract.api_key_env={SENTINEL}"]),
    ],
)
def test_a_key_in_the_wrong_place_is_refused_without_echoing_it(tmp_path: Path, where: str, extra: dict[str, Any], args: list[str]) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1", **extra)
    result = invoke("extract", "-w", str(tmp_path / "ws"), "-c", str(config), *args)
    assert result.exit_code == 2, (where, result.output)
    assert "SENTINEL" not in result.output and "Traceback" not in result.output, where
    assert "error:" in result.output
    assert not (tmp_path / "ws" / "manifest.json").exists()
    assert leaks(tmp_path / "ws", tmp_path / "cache") == []


def test_the_refusal_says_where_the_key_belongs(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1", extract__api_key=SENTINEL, extract__api_key_env=SENTINEL)
    message = " ".join(invoke("extract", "-w", str(tmp_path / "ws"), "-c", str(config)).output.split())
    assert "extract.api_key: Extra inputs are not permitted; API keys never go in a config" in message
    assert "extract.api_key_env: must be the name of the environment variable that holds the API key" in message


def test_the_key_is_read_only_from_the_named_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)  # a well-known variable the config does not name
    ws = str(tmp_path / "ws")
    with FaultServer() as server:
        config = str(write_config(tmp_path, server.base_url))
        assert invoke("ingest", "-w", ws, "-c", config).exit_code == 0
        assert invoke("extract", "-w", ws, "-c", config).exit_code == 0
        auths = {r.authorization for r in server.received}
    assert auths == {"Bearer not-needed"}


@pytest.mark.slow
def test_cli_processes_with_library_debug_logs_print_no_key(tmp_path: Path) -> None:
    """The real command in a subprocess, with the openai client's own debug logging on."""
    env = {**os.environ, KEY_ENV: SENTINEL, "OPENAI_LOG": "debug", "HTTPX_LOG_LEVEL": "trace"}
    ws = str(tmp_path / "ws")
    with FaultServer([Fault.ERROR_500, Fault.ECHO_AUTH_500]) as server:
        config = str(write_config(tmp_path, server.base_url, extract__max_failure_fraction=1.0))
        runs = [subprocess.run([sys.executable, "-m", "valind", command, "-w", ws, "-c", config], env=env,
                               capture_output=True, text=True, timeout=300) for command in ("ingest", "extract", "generate")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert "SENTINEL" not in run.stdout + run.stderr
    assert "Request" in runs[1].stderr or "HTTP" in runs[1].stderr  # the debug log did run
    assert leaks(tmp_path / "ws", tmp_path / "cache") == []
    assert Workspace(ws).read_manifest() is not None
