from __future__ import annotations

import os
import tempfile

# Tests never reach the network: set before any Hugging Face library reads its settings.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One model cache per test session (converted models, encoder export, fitted classifier, model
# calls), so tests neither read nor write the user's cache. Set VALIND_CACHE to reuse one.
os.environ.setdefault("VALIND_CACHE", tempfile.mkdtemp(prefix="valind-test-cache-"))

import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The session's cache folder ($VALIND_CACHE): each model is converted or built once per test session."""
    path = Path(os.environ["VALIND_CACHE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny(model_cache: Path) -> str:
    """A tiny random Llama with the SmolLM2 tokenizer (built once per session), for fast model tests."""
    from valind.models import tiny_model

    return str(tiny_model(model_cache))


@pytest.fixture
def shared_data() -> Path:
    """The shared real data sets; tests that need them skip when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA} (they sit beside the project checkout)")
    return SHARED_DATA


def write_jsonl(path: Path, records: Iterable[Any], *, gz: bool = False) -> Path:
    """Write records (dicts, or raw bytes lines for malformed input) one per line."""
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def hh(prompt: str, reply: str, history: str = "") -> str:
    """An HH-RLHF transcript."""
    return f"{history}\n\nHuman: {prompt}\n\nAssistant: {reply}"
